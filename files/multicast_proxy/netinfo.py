"""Interface facts from the kernel, without external commands.

``/proc/net/route`` picks the interface the kernel would route a group to,
``/proc/net/igmp`` tells on which interfaces local sockets joined a group, and
the SIOCGIFADDR ioctl gives an interface's IPv4 address.  The parsers are pure
functions of the file text so they can be tested with canned input.
"""

import fcntl
import socket
import struct

from . import multicast_diag as diag

ROUTE_FILE = "/proc/net/route"
IGMP_FILE = "/proc/net/igmp"

_SIOCGIFADDR = 0x8915


class InterfaceError(Exception):
    """No usable interface for a group; the message says what to configure."""


def parse_routes(text):
    """The usable routes of ``/proc/net/route`` (the doctor's parser: one set of rules)."""
    return diag.parse_proc_route(text)


def route_interface(routes, address):
    """Interface of the longest-prefix match for ``address`` (lowest metric on a tie)."""
    route = diag.route_lookup(routes, address)
    return route["interface"] if route else None


def parse_igmp(text):
    """Return {group address: [interface, ...]} of joined groups per interface.

    The doctor's parser reads the file (one set of rules).  Text it cannot read
    gives no memberships: the client then delivers on the route to each group,
    as it does before any local receiver joined.
    """
    try:
        memberships = diag.parse_proc_igmp(text)
    except (diag.FactsError, ValueError):
        return {}
    joined = {}
    for membership in memberships:
        interfaces = joined.setdefault(membership["group"], [])
        if membership["interface"] not in interfaces:
            interfaces.append(membership["interface"])
    return joined


def read_text(path):
    with open(path) as handle:
        return handle.read()


def interface_for_group(group_ip, configured=None, route_text=None):
    """The interface to join ``group_ip`` on: the configured one, else the route to it."""
    if configured:
        return configured
    routes = parse_routes(route_text if route_text is not None else read_text(ROUTE_FILE))
    iface = route_interface(routes, group_ip)
    if iface is None:
        raise InterfaceError("no route to group %s; add a route (ip route add 224.0.0.0/4 dev IFACE) "
                             "or set \"interface\" in the config" % group_ip)
    return iface


def interface_index(name):
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise InterfaceError("interface %s does not exist; fix \"interface\" in the config or the route" % name)


def interface_address(name):
    """IPv4 address of ``name``, or None when it has none."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        request = struct.pack("256s", name.encode("utf-8")[:15])
        reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
        return socket.inet_ntoa(reply[20:24])
    except OSError:
        return None
    finally:
        probe.close()


def local_addresses():
    """The primary IPv4 address of every interface that has one."""
    addresses = set()
    for _index, name in socket.if_nameindex():
        address = interface_address(name)
        if address and address != "0.0.0.0":
            addresses.add(address)
    return addresses


def route_source(address):
    """The local address the kernel sends from to unicast ``address``, or None without a route.

    ``connect`` on a UDP socket only looks the route up: nothing is sent.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((address, 9))
        return sock.getsockname()[0]
    except OSError:
        return None
    finally:
        sock.close()
