"""Interface facts from the kernel, without external commands.

``/proc/net/route`` picks the interface the kernel would route a group to,
``/proc/net/igmp`` tells on which interfaces local sockets joined a group, and
the SIOCGIFADDR and SIOCGIFFLAGS ioctls give an interface's IPv4 address and
flags.  The parsers and ``join_targets`` are pure functions of their input so
they can be tested with canned input.
"""

import collections
import fcntl
import socket
import struct

from . import multicast_diag as diag

ROUTE_FILE = "/proc/net/route"
IGMP_FILE = "/proc/net/igmp"
IGMP_MAX_MEMBERSHIPS_FILE = "/proc/sys/net/ipv4/igmp_max_memberships"
# The kernel's default, when the sysctl cannot be read.
DEFAULT_IGMP_MAX_MEMBERSHIPS = 20

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_MULTICAST = 0x1000

# One interface as scan_interfaces sees it.
Interface = collections.namedtuple("Interface", "name index address up loopback multicast")


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


def _interface_flags(probe, name):
    """The IFF_* flags of ``name``, or None when it vanished."""
    try:
        reply = fcntl.ioctl(probe.fileno(), _SIOCGIFFLAGS, struct.pack("256s", name.encode("utf-8")[:15]))
    except OSError:
        return None
    return struct.unpack_from("=H", reply, 16)[0]


def scan_interfaces():
    """Every interface now (Interface tuples, by index): what ``join_targets`` chooses from."""
    result = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for index, name in socket.if_nameindex():
            flags = _interface_flags(probe, name)
            if flags is None:
                continue
            address = interface_address(name)
            result.append(Interface(name, index, address if address != "0.0.0.0" else None,
                                    bool(flags & _IFF_UP), bool(flags & _IFF_LOOPBACK), bool(flags & _IFF_MULTICAST)))
    finally:
        probe.close()
    return tuple(sorted(result, key=lambda interface: interface.index))


def igmp_max_memberships():
    """net.ipv4.igmp_max_memberships: how many groups one socket may join (one per interface of a group)."""
    try:
        return int(read_text(IGMP_MAX_MEMBERSHIPS_FILE).strip())
    except (OSError, ValueError):
        return DEFAULT_IGMP_MAX_MEMBERSHIPS


def join_targets(spec, interfaces, route_interface=None, limit=None):
    """Where a group is joined under join_interfaces ``spec``: (interfaces, problem).

    ``spec`` is "all" (every up, multicast, non-loopback interface with an
    IPv4 address, and the route's interface) or a list of interface names and addresses (each that is up,
    in the listed order); the route's interface comes first, so it is the one
    kept when ``limit`` (igmp_max_memberships) leaves room for fewer.
    ``problem`` is "" or a sentence on what could not be joined and why.
    """
    problems = []
    if spec == "all":
        # The route's interface too, whatever its flags: what "route" would join (lo, say) is never lost.
        chosen = [i for i in interfaces if i.up and (i.multicast and not i.loopback and i.address
                                                     or i.name == route_interface)]
        if not chosen:
            problems.append("no interface is up with MULTICAST and an IPv4 address")
    else:
        by_name = dict((i.name, i) for i in interfaces)
        by_address = dict((i.address, i) for i in interfaces if i.address)
        chosen = []
        for item in spec:
            found = by_name.get(item) or by_address.get(item)
            if found is None:
                problems.append("%s: no interface has this name or address" % item)
            elif not found.up:
                problems.append("%s is down" % found.name)
            elif found not in chosen:
                chosen.append(found)
    chosen.sort(key=lambda i: i.name != route_interface)
    if limit is not None and len(chosen) > limit:
        left = chosen[max(limit, 0):]
        chosen = chosen[:max(limit, 0)]
        problems.append("not joined on %s: net.ipv4.igmp_max_memberships is %d, one membership per interface; "
                        "raise it (sysctl -w net.ipv4.igmp_max_memberships=%d) or list the interfaces in "
                        "join_interfaces" % (", ".join(i.name for i in left), limit, len(chosen) + len(left)))
    return tuple(chosen), "; ".join(problems)


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
