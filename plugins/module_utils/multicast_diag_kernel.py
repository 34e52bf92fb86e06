# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's facts: what the kernel's network tables say, read without running a command.

What ``netstat -gn``, ``netstat -anu``, ``ifconfig`` and ``route -n`` show, read
from ``/proc``, ``/sys`` and one rtnetlink dump for the addresses, plus the
sysctls the rules look at, the route lookup the kernel would do, and the IPv4
address arithmetic the firewall evaluation shares.  Every reader takes a
``root`` so tests can point it at a fake tree; the parsers are pure functions
of the file text.

Standard library only, Python 3.6 to 3.13.  The relay package uses this file
through the symlink ``files/multicast_proxy/multicast_diag_kernel.py``; the
rules in ``multicast_diag`` import it relatively, so the same import works in
the relay package and in the collection's module_utils.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import struct

MULTICAST_NET = 0xE0000000
MULTICAST_MASK = 0xF0000000
LINK_LOCAL_NET = 0xE0000000
LINK_LOCAL_MASK = 0xFFFFFF00

# net/if.h
_IFF_NAMES = (
    (0x1, "UP"), (0x2, "BROADCAST"), (0x4, "DEBUG"), (0x8, "LOOPBACK"),
    (0x10, "POINTOPOINT"), (0x20, "NOTRAILERS"), (0x40, "RUNNING"), (0x80, "NOARP"),
    (0x100, "PROMISC"), (0x200, "ALLMULTI"), (0x1000, "MULTICAST"),
)
_RTF_UP = 0x1
_RTF_REJECT = 0x200
_RTF_GATEWAY = 0x2


class FactsError(Exception):
    """A kernel table (or the firewall ruleset) could not be read or parsed."""


# ---------------------------------------------------------------- addresses

def _kernel_hex_to_ip(text):
    """/proc prints a __be32 as a native-endian integer in hex."""
    return socket.inet_ntoa(struct.pack("=I", int(text, 16)))


def ip_to_kernel_hex(address):
    """The inverse of how /proc prints an address (used to build fake trees)."""
    return "%08X" % struct.unpack("=I", socket.inet_aton(address))[0]


def ip_to_int(address):
    """The address as a host-order integer, for prefix and range comparisons."""
    return struct.unpack("!I", socket.inet_aton(address))[0]


def _prefix_mask(length):
    return (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF if length else 0


def in_prefix(address, network, length):
    """Is ``address`` inside ``network``/``length``?"""
    mask = _prefix_mask(length)
    return (ip_to_int(address) & mask) == (ip_to_int(network) & mask)


def is_multicast(address):
    return (ip_to_int(address) & MULTICAST_MASK) == MULTICAST_NET


def is_link_local_group(address):
    return (ip_to_int(address) & LINK_LOCAL_MASK) == LINK_LOCAL_NET


# ---------------------------------------------------------------- facts layer

def _read(root, relative):
    with open(os.path.join(root, relative.lstrip("/")), "r") as handle:
        return handle.read()


def _read_optional(root, relative):
    try:
        return _read(root, relative)
    except (IOError, OSError):
        return None


def flag_names(flags):
    return [name for bit, name in _IFF_NAMES if flags & bit]


def parse_proc_net_dev(text):
    """Receive-side multicast counter per interface, as ``ifconfig`` shows it."""
    counters = {}
    for line in text.splitlines()[2:]:
        if ":" not in line:
            continue
        name, values = line.split(":", 1)
        fields = values.split()
        if len(fields) >= 8:
            counters[name.strip()] = int(fields[7])
    return counters


def parse_proc_igmp(text):
    """Group memberships per interface, what ``netstat -gn`` prints."""
    memberships = []
    device = None
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        if not line[0].isspace():
            # "2\teth0      :     1      V3"
            head = line.split(":", 1)[0].split()
            if len(head) < 2:
                raise FactsError("unexpected /proc/net/igmp interface line: %r" % line)
            device = {"index": int(head[0]), "interface": head[1]}
            continue
        fields = line.split()
        if device is None or len(fields) < 2:
            raise FactsError("unexpected /proc/net/igmp group line: %r" % line)
        memberships.append({
            "interface": device["interface"],
            "index": device["index"],
            "group": _kernel_hex_to_ip(fields[0]),
            "users": int(fields[1]),
        })
    return memberships


def parse_proc_mcfilter(text):
    """Source filters of the memberships, what ``ip maddr`` does not show: one row per (interface, group,
    source) with the number of sockets that include the source (joined for it, IP_ADD_SOURCE_MEMBERSHIP)
    and that exclude it (IP_BLOCK_SOURCE).

    Unlike /proc/net/igmp the addresses are printed in network order, and the device name is cut to 6
    characters: the index names the interface.
    """
    filters = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise FactsError("unexpected /proc/net/mcfilter line: %r" % line)
        try:
            group, source = (socket.inet_ntoa(struct.pack("!I", int(value, 16))) for value in fields[2:4])
            filters.append({"index": int(fields[0]), "interface": fields[1], "group": group, "source": source,
                            "include": int(fields[4]), "exclude": int(fields[5])})
        except (ValueError, struct.error):
            raise FactsError("unexpected /proc/net/mcfilter line: %r" % line)
    return filters


def _split_endpoint(text):
    address, port = text.split(":")
    return _kernel_hex_to_ip(address), int(port, 16)


def parse_proc_udp(text):
    """UDP sockets, what ``netstat -anu`` prints (plus inode and drops)."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local_address, local_port = _split_endpoint(fields[1])
        remote_address, remote_port = _split_endpoint(fields[2])
        sockets.append({
            "local_address": local_address,
            "local_port": local_port,
            "remote_address": remote_address,
            "remote_port": remote_port,
            "uid": int(fields[7]),
            "inode": int(fields[9]),
            "drops": int(fields[12]) if len(fields) > 12 else 0,
        })
    return sockets


def _mask_length(mask_address):
    value = ip_to_int(mask_address)
    length = bin(value).count("1")
    if value != _prefix_mask(length):
        raise FactsError("non-contiguous route mask %s" % mask_address)
    return length


def parse_proc_route(text):
    """The main routing table, what ``route -n`` prints."""
    routes = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = int(fields[3], 16)
        # A reject route (unreachable, prohibit, blackhole) delivers nothing.
        if not flags & _RTF_UP or flags & _RTF_REJECT:
            continue
        destination = _kernel_hex_to_ip(fields[1])
        gateway = _kernel_hex_to_ip(fields[2])
        routes.append({
            "interface": fields[0],
            "destination": destination,
            "prefixlen": _mask_length(_kernel_hex_to_ip(fields[7])),
            "gateway": gateway if flags & _RTF_GATEWAY else None,
            "metric": int(fields[6]),
        })
    return routes


def parse_proc_netstat(text):
    """The IpExt counters (InMcastPkts, OutMcastPkts, ...) of /proc/net/netstat."""
    lines = text.splitlines()
    for names, values in zip(lines[0::2], lines[1::2]):
        if names.startswith("IpExt:") and values.startswith("IpExt:"):
            return dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
    return {}


def route_lookup(routes, address):
    """The route the kernel picks for ``address`` in the main table, or None.

    Longest prefix first, then the lowest metric, like the FIB does.  Policy
    routing rules are not visible in /proc/net/route and are not considered.
    """
    best = None
    for route in routes:
        if not in_prefix(address, route["destination"], route["prefixlen"]):
            continue
        key = (route["prefixlen"], -route["metric"])
        if best is None or key > best[0]:
            best = (key, route)
    return best[1] if best else None


def multicast_routes(routes):
    """Routes whose destination lies inside 224.0.0.0/4 (the default route is not one)."""
    return [r for r in routes
            if r["prefixlen"] >= 4 and is_multicast(r["destination"])]


def group_routes(facts, groups):
    """{group: {"interface", "route"}}: the route the kernel would pick for each group."""
    routes = {}
    for group in sorted(set(groups)):
        route = route_lookup(facts["routes"], group)
        routes[group] = {
            "interface": route["interface"] if route else None,
            "route": ("%s/%d" % (route["destination"], route["prefixlen"])) if route else None,
        }
    return routes


def _read_int(root, relative):
    text = _read_optional(root, relative)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise FactsError("%s does not hold an integer: %r" % (relative, text))


def _read_conf_values(root, interfaces, name):
    values = {}
    for interface in ["all", "default"] + interfaces:
        value = _read_int(root, "proc/sys/net/ipv4/conf/%s/%s" % (interface, name))
        if value is not None:
            values[interface] = value
    return values


def netlink_ipv4_addresses():
    """IPv4 addresses per interface index, from one RTM_GETADDR dump.

    Reads the current network namespace, like ``ip -4 addr`` does, without
    running it.
    """
    rtm_newaddr, rtm_getaddr = 20, 22
    nlmsg_error, nlmsg_done = 2, 3
    ifa_address, ifa_local = 1, 2
    request = struct.pack("=IHHII", 24, rtm_getaddr, 0x1 | 0x300, 1, 0)
    request += struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)
    by_index = {}
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    try:
        sock.sendto(request, (0, 0))
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if length < 16:
                    raise FactsError("malformed rtnetlink message of length %d" % length)
                if kind == nlmsg_done:
                    return by_index
                if kind == nlmsg_error:
                    code = struct.unpack_from("=i", data, offset + 16)[0]
                    raise FactsError("rtnetlink address dump failed: %s" % os.strerror(-code))
                if kind == rtm_newaddr:
                    prefixlen, index = struct.unpack_from("=xBxxI", data, offset + 16)
                    attributes = {}
                    position = offset + 24
                    while position + 4 <= offset + length:
                        attr_length, attr_type = struct.unpack_from("=HH", data, position)
                        if attr_length < 4:
                            break
                        attributes[attr_type] = data[position + 4:position + attr_length]
                        position += (attr_length + 3) & ~3
                    raw = attributes.get(ifa_local) or attributes.get(ifa_address)
                    if raw and len(raw) == 4:
                        by_index.setdefault(index, []).append(
                            "%s/%d" % (socket.inet_ntoa(raw), prefixlen))
                offset += (length + 3) & ~3
    finally:
        sock.close()


def read_interfaces(root="/", ipv4_by_index=None):
    """Interfaces with flags, state, IPv4 addresses and the multicast receive counter."""
    names = sorted(os.listdir(os.path.join(root, "sys/class/net")))
    rx_multicast = parse_proc_net_dev(_read_optional(root, "proc/net/dev") or "")
    if ipv4_by_index is None:
        ipv4_by_index = netlink_ipv4_addresses()
    interfaces = []
    for name in names:
        base = "sys/class/net/%s/" % name
        flags_text = _read_optional(root, base + "flags")
        if flags_text is None:
            continue
        flags = int(flags_text.strip(), 16)
        index = _read_int(root, base + "ifindex")
        interfaces.append({
            "name": name,
            "index": index,
            "flags": flag_names(flags),
            "up": bool(flags & 0x1),
            "multicast": bool(flags & 0x1000),
            "loopback": bool(flags & 0x8),
            "operstate": (_read_optional(root, base + "operstate") or "unknown").strip(),
            "ipv4": list(ipv4_by_index.get(index, [])),
            "rx_multicast": rx_multicast.get(name),
        })
    return interfaces


def collect_facts(root="/", ipv4_by_index=None):
    """Everything the rules look at, read from the kernel under ``root``.

    ``ipv4_by_index`` ({ifindex: ["a.b.c.d/len", ...]}) replaces the rtnetlink
    dump, which always describes the live namespace; tests with a fake tree
    pass it explicitly.
    """
    if ipv4_by_index is None and os.path.abspath(root) != "/":
        raise FactsError("a fake root needs ipv4_by_index: rtnetlink always reads the live namespace")
    try:
        interfaces = read_interfaces(root, ipv4_by_index)
        routes = parse_proc_route(_read(root, "proc/net/route"))
        memberships = parse_proc_igmp(_read(root, "proc/net/igmp"))
        udp = parse_proc_udp(_read(root, "proc/net/udp"))
    except (IOError, OSError) as exc:
        raise FactsError("cannot read the kernel's network tables: %s" % exc)
    names = [i["name"] for i in interfaces]
    netstat = _read_optional(root, "proc/net/netstat")
    mcfilter = _read_optional(root, "proc/net/mcfilter")
    return {
        "interfaces": interfaces,
        "memberships": memberships,
        "source_filters": parse_proc_mcfilter(mcfilter) if mcfilter else [],
        "udp_sockets": udp,
        "routes": routes,
        "multicast_routes": multicast_routes(routes),
        "igmp_max_memberships": _read_int(root, "proc/sys/net/ipv4/igmp_max_memberships"),
        "rp_filter": _read_conf_values(root, names, "rp_filter"),
        "mc_forwarding": _read_conf_values(root, names, "mc_forwarding"),
        "ip_counters": parse_proc_netstat(netstat) if netstat else {},
    }


def probe_port_shareable(group_ip, port):
    """Can one more receiver bind ``group_ip:port`` the way the relay and mcrecv do?

    The kernel lets two UDP sockets share a port only when both set
    SO_REUSEADDR; /proc/net/udp does not show the option, so the one honest
    test is to try: bind with SO_REUSEADDR and close at once (no datagram is
    sent or received).  Returns {"shareable": bool, "error": text or None}.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((group_ip, port))
    except (IOError, OSError) as exc:
        if exc.errno == errno.EADDRINUSE:
            return {"shareable": False, "error": os.strerror(exc.errno)}
        return {"shareable": None, "error": str(exc)}
    finally:
        sock.close()
    return {"shareable": True, "error": None}
