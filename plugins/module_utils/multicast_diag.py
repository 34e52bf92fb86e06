# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Multicast facts and the doctor's rules.

Two layers, standard library only, Python 3.8+:

* facts: what ``netstat -gn``, ``netstat -anu``, ``ifconfig`` and ``route -n``
  show, read from the kernel (``/proc``, ``/sys`` and one rtnetlink dump for the
  addresses).  Every reader takes a ``root`` so tests can point it at a fake tree.
* rules: ``diagnose()`` is a pure function over those facts, the relay configs,
  the relay counters and the firewall ruleset text.  Each finding says what is
  wrong, why it breaks delivery and how to fix it.

The relay package uses this file through the symlink
``files/multicast_proxy/multicast_diag.py``; the Ansible module ``multicast_diagnose``
imports it by its collection path.  Both therefore apply the same rules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import json
import os
import shlex
import socket
import struct

SEVERITIES = ("error", "warning", "info")

MULTICAST_NET = 0xE0000000
MULTICAST_MASK = 0xF0000000
LINK_LOCAL_NET = 0xE0000000
LINK_LOCAL_MASK = 0xFFFFFF00

# Groups in 224.0.0.0/24 that local protocols already use.
WELL_KNOWN_LINK_LOCAL = {
    "224.0.0.1": "all hosts",
    "224.0.0.2": "all routers",
    "224.0.0.5": "OSPF routers",
    "224.0.0.6": "OSPF designated routers",
    "224.0.0.9": "RIPv2",
    "224.0.0.13": "PIM",
    "224.0.0.18": "VRRP",
    "224.0.0.22": "IGMPv3 reports",
    "224.0.0.251": "mDNS",
    "224.0.0.252": "LLMNR",
}

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
    """The kernel's tables could not be read or parsed."""


# ---------------------------------------------------------------- addresses

def _kernel_hex_to_ip(text):
    """/proc prints a __be32 as a native-endian integer in hex."""
    return socket.inet_ntoa(struct.pack("=I", int(text, 16)))


def ip_to_kernel_hex(address):
    """The inverse of how /proc prints an address (used to build fake trees)."""
    return "%08X" % struct.unpack("=I", socket.inet_aton(address))[0]


def _ip_int(address):
    return struct.unpack("!I", socket.inet_aton(address))[0]


def _prefix_mask(length):
    return (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF if length else 0


def _in_prefix(address, network, length):
    mask = _prefix_mask(length)
    return (_ip_int(address) & mask) == (_ip_int(network) & mask)


def is_multicast(address):
    return (_ip_int(address) & MULTICAST_MASK) == MULTICAST_NET


def is_link_local_group(address):
    return (_ip_int(address) & LINK_LOCAL_MASK) == LINK_LOCAL_NET


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
    value = _ip_int(mask_address)
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
        if not _in_prefix(address, route["destination"], route["prefixlen"]):
            continue
        key = (route["prefixlen"], -route["metric"])
        if best is None or key > best[0]:
            best = (key, route)
    return best[1] if best else None


def multicast_routes(routes):
    """Routes whose destination lies inside 224.0.0.0/4 (the default route is not one)."""
    return [r for r in routes
            if r["prefixlen"] >= 4 and is_multicast(r["destination"])]


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
    return {
        "interfaces": interfaces,
        "memberships": memberships,
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


def probe_relay_ports(server_config=None, client_config=None):
    """probe_port_shareable for every group port this host's relay configs use."""
    wanted = [("server", g.group_ip, g.group_port) for g in server_groups(server_config)]
    wanted += [("client", e.group_ip, e.group_port) for e in client_entries(client_config)]
    probes = []
    for side, group_ip, port in sorted(set(wanted)):
        result = probe_port_shareable(group_ip, port)
        result.update({"side": side, "group": group_ip, "port": port})
        probes.append(result)
    return probes


# ---------------------------------------------------------------- relay inputs

ServerGroup = collections.namedtuple("ServerGroup", "group_ip group_port server_port interface members")
ClientEntry = collections.namedtuple("ClientEntry", "server_ip server_port group_ip group_port")


def server_groups(server_config):
    """The server config's groups; ``interface`` is the pinned one or None."""
    if not server_config:
        return []
    default_interface = server_config.get("interface")
    return [ServerGroup(g["group_ip"], g["group_port"], g["server_port"],
                        g.get("interface", default_interface), list(g["member_array"]))
            for g in server_config.get("multi_group_array", [])]


def client_entries(client_config):
    """The client config's entries."""
    if not client_config:
        return []
    return [ClientEntry(e["server_ip"], e["server_port"], e["group_ip"], e["group_port"])
            for e in client_config.get("multi_server_info_array", [])]


def _number(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def server_group_counters(server_stats):
    """{group_ip: {"rx_packets": n, "loop_drops": n}} from ``multis_admin -P --json``."""
    counters = {}
    for group in (server_stats or {}).get("groups", []):
        drops = group.get("drops") or {}
        counters[group.get("group_ip")] = {
            "rx_packets": _number(group.get("rx_packets")),
            "loop_drops": _number(drops.get("loop")) or 0,
            "error": group.get("error") or None,
        }
    return counters


def client_entry_counters(client_stats):
    """{(server_ip, group_ip, group_port): {...}} from ``multic_admin -P --json``."""
    counters = {}
    for entry in (client_stats or {}).get("entries", []):
        key = (entry.get("server_ip"), entry.get("group_ip"), entry.get("group_port"))
        counters[key] = {
            "rx_packets": _number(entry.get("rx_packets")),
            "delivered_packets": _number(entry.get("delivered_packets")),
            "interfaces": list(entry.get("interfaces") or []),
        }
    return counters


# ---------------------------------------------------------------- firewall

def _ip_matches(address, right):
    if isinstance(right, dict) and "prefix" in right:
        return _in_prefix(address, right["prefix"]["addr"], right["prefix"]["len"])
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return _ip_int(low) <= _ip_int(address) <= _ip_int(high)
    if isinstance(right, str):
        if "/" in right:
            network, length = right.split("/")
            return _in_prefix(address, network, int(length))
        return right == address
    return None


def _value_matches(kind, value, right):
    """Does one packet field match one nft right-hand side?  None = cannot tell."""
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    if isinstance(right, list):
        results = [_value_matches(kind, value, item) for item in right]
        if True in results:
            return True
        return None if None in results else False
    if value is None:
        return None
    if kind == "ip":
        return _ip_matches(value, right)
    if kind == "port":
        if isinstance(right, dict) and "range" in right:
            return right["range"][0] <= value <= right["range"][1]
        return value == right if isinstance(right, int) else None
    if kind == "name":
        if not isinstance(right, str):
            return None
        if right.endswith("*"):
            return value.startswith(right[:-1])
        return value == right
    if kind == "ct_state":
        return value == right if isinstance(right, str) else None
    if kind == "l4proto":
        return right in (value, 17) if value == "udp" else None
    return None


def _nft_left_field(left):
    """Which packet field an nft match reads: (packet key, kind) or None."""
    if not isinstance(left, dict):
        return None
    payload = left.get("payload")
    if payload is not None:
        protocol, field = payload.get("protocol"), payload.get("field")
        if protocol in ("udp", "th") and field == "dport":
            return "dport", "port"
        if protocol == "ip" and field in ("saddr", "daddr"):
            return field, "ip"
        if protocol == "ip" and field == "protocol":
            return "l4proto", "l4proto"
        return None
    meta = left.get("meta")
    if meta is not None:
        key = meta.get("key")
        if key == "l4proto":
            return "l4proto", "l4proto"
        if key == "iifname":
            return "iifname", "name"
        if key == "nfproto":
            return "nfproto", "name"
        return None
    ct = left.get("ct")
    if ct is not None and ct.get("key") == "state":
        return "ct_state", "ct_state"
    return None


def _nft_match(expression, packet):
    field = _nft_left_field(expression.get("left"))
    if field is None:
        return None
    key, kind = field
    result = _value_matches(kind, packet.get(key), expression.get("right"))
    if result is None:
        return None
    operator = expression.get("op", "==")
    if operator in ("==", "in"):
        return result
    if operator == "!=":
        return not result
    return None


_NFT_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return")


def _nft_rule_outcome(rule, packet):
    """(verdict, argument) when the rule certainly applies to the packet, else None."""
    for statement in rule.get("expr", []):
        if "match" in statement:
            if _nft_match(statement["match"], packet) is not True:
                return None
            continue
        for verdict in _NFT_VERDICTS:
            if verdict in statement:
                argument = statement[verdict]
                return verdict, argument.get("target") if isinstance(argument, dict) else None
        if set(statement) - {"counter", "log", "comment"}:
            # A statement this evaluator does not model (limit, xt, meter...):
            # do not claim the rule applies.
            return None
    return None


def _nft_describe(rule):
    return "table %s %s chain %s handle %s" % (rule.get("family"), rule.get("table"),
                                               rule.get("chain"), rule.get("handle"))


def _nft_walk(rules_by_chain, table, chain, packet, depth):
    """None when the chain falls through (or returns); ("end", None) when a goto
    chain fell through, which ends the base chain; else (verdict, where)."""
    if depth > 16:
        return None
    for rule in rules_by_chain.get((table, chain), []):
        outcome = _nft_rule_outcome(rule, packet)
        if outcome is None:
            continue
        verdict, target = outcome
        if verdict in ("jump", "goto"):
            result = _nft_walk(rules_by_chain, table, target, packet, depth + 1)
            if result is not None:
                return result
            if verdict == "goto":
                return "end", None
            continue
        if verdict == "return":
            return None
        return verdict, _nft_describe(rule)
    return None


def nft_input_verdict(ruleset_json, packet):
    """("drop"|"reject", where) when the input hook certainly refuses the packet, else None."""
    try:
        items = json.loads(ruleset_json).get("nftables", [])
    except (ValueError, AttributeError):
        raise FactsError("the nftables ruleset is not `nft -j list ruleset` JSON")
    base_chains = []
    rules_by_chain = {}
    for item in items:
        chain = item.get("chain")
        if chain and chain.get("hook") == "input" and chain.get("family") in ("ip", "inet") \
                and chain.get("type", "filter") == "filter":
            base_chains.append(chain)
        rule = item.get("rule")
        if rule:
            table = (rule.get("family"), rule.get("table"))
            rules_by_chain.setdefault((table, rule.get("chain")), []).append(rule)
    for chain in sorted(base_chains, key=lambda c: c.get("prio", 0)):
        table = (chain.get("family"), chain.get("table"))
        result = _nft_walk(rules_by_chain, table, chain["name"], packet, 0)
        if result is not None and result[0] in ("drop", "reject"):
            return result
        if (result is None or result[0] == "end") and chain.get("policy") == "drop":
            return "drop", "policy drop of table %s %s chain %s" % (table[0], table[1], chain["name"])
    return None


def _iptables_rule(tokens, packet):
    """(target, matched) of one iptables-save rule; matched None = cannot tell."""
    matched = True
    target = None
    negate = False
    position = 0
    while position < len(tokens):
        token = tokens[position]
        value = tokens[position + 1] if position + 1 < len(tokens) else None
        position += 2
        result = None
        if token == "!":
            negate = True
            position -= 1
            continue
        if token in ("-j", "--jump", "-g", "--goto"):
            target = value
            continue
        if token in ("-m", "--match", "--comment"):
            continue
        if token in ("-p", "--protocol"):
            result = value in ("udp", "17", "all")
        elif token in ("-s", "--source", "-d", "--destination"):
            address = packet["saddr"] if token in ("-s", "--source") else packet["daddr"]
            if address is not None:
                result = any(_ip_matches(address, part) for part in value.split(","))
            else:
                matched = None
        elif token in ("-i", "--in-interface"):
            result = _value_matches("name", packet["iifname"], value.replace("+", "*"))
            if result is None:
                matched = None
        elif token in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            result = False
            for part in value.split(","):
                bounds = part.split(":")
                if int(bounds[0]) <= packet["dport"] <= int(bounds[-1]):
                    result = True
        elif token in ("--ctstate", "--state"):
            result = packet["ct_state"].upper() in value.split(",")
        else:
            matched = None
        if result is not None and matched is not None:
            if result == negate:
                matched = False
        negate = False
    return target, matched


def iptables_input_verdict(save_text, packet):
    """The same question as nft_input_verdict, for ``iptables-save`` output."""
    policies = {}
    rules = {}
    in_filter = False
    for line in save_text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            in_filter = line == "*filter"
        elif in_filter and line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[name] = policy
        elif in_filter and line.startswith("-A "):
            tokens = shlex.split(line)
            rules.setdefault(tokens[1], []).append((tokens[2:], line))

    def walk(chain, depth):
        if depth > 16:
            return None
        for tokens, text in rules.get(chain, []):
            target, matched = _iptables_rule(tokens, packet)
            if matched is not True or target is None:
                continue
            if target in ("DROP", "REJECT"):
                return target.lower(), text
            if target == "ACCEPT":
                return "accept", text
            if target == "RETURN":
                return None
            if target in rules:
                result = walk(target, depth + 1)
                if result is not None:
                    return result
        return None

    result = walk("INPUT", 0)
    if result is None and policies.get("INPUT") == "DROP":
        return "drop", "iptables filter INPUT policy DROP"
    return result if result and result[0] != "accept" else None


def firewall_verdict(firewall, packet):
    """Dispatch on the firewall text the shell layer collected."""
    if not firewall or not firewall.get("text"):
        return None
    if firewall.get("format") == "nft-json":
        return nft_input_verdict(firewall["text"], packet)
    if firewall.get("format") == "iptables-save":
        return iptables_input_verdict(firewall["text"], packet)
    raise FactsError("unknown firewall format %r (use nft-json or iptables-save)" % firewall.get("format"))


# ---------------------------------------------------------------- rules

def _finding(finding_id, severity, subject, what, why, fix, affects=()):
    return {
        "id": finding_id,
        "severity": severity,
        "subject": subject,
        "what": what,
        "why": why,
        "fix": fix,
        "affects": sorted(affects),
        "evidence": [],
    }


class _Host:
    """Derived views of the facts that several rules need."""

    def __init__(self, facts):
        self.facts = facts
        self.by_name = dict((i["name"], i) for i in facts["interfaces"])
        self.routes = facts["routes"]
        self.multicast_routes = facts.get("multicast_routes") or multicast_routes(self.routes)
        self.memberships = facts["memberships"]
        # An interface without carrier (operstate down) carries nothing yet.
        self.data_interfaces = [i for i in facts["interfaces"]
                                if i["up"] and not i["loopback"] and i["ipv4"]
                                and i.get("operstate") != "down"]

    def route_interface(self, address):
        route = route_lookup(self.routes, address)
        return route["interface"] if route else None

    def joined_on(self, group):
        return sorted(set(m["interface"] for m in self.memberships if m["group"] == group))

    def rp_filter(self, interface):
        values = self.facts.get("rp_filter") or {}
        return max(values.get("all", 0), values.get(interface, 0))


def relay_interfaces(facts, server_config=None, client_config=None):
    """Which interface each relay group uses on this host, and why.

    Server: the pinned interface, else the route to the group.  Client: the
    pinned interface, else every interface where a local socket joined the
    group, else the route (the order in docs/architecture.md).  Each value is
    {"interfaces": [...], "source": "config"|"membership"|"route"}.
    """
    host = _Host(facts)
    result = {"server": {}, "client": {}}

    def by_route(group_ip):
        interface = host.route_interface(group_ip)
        return {"interfaces": [interface] if interface else [], "source": "route"}

    for group in server_groups(server_config):
        result["server"][group.group_ip] = ({"interfaces": [group.interface], "source": "config"}
                                            if group.interface else by_route(group.group_ip))
    pinned = (client_config or {}).get("interface")
    for group_ip in sorted(set(e.group_ip for e in client_entries(client_config))):
        joined = host.joined_on(group_ip)
        if pinned:
            result["client"][group_ip] = {"interfaces": [pinned], "source": "config"}
        elif joined:
            result["client"][group_ip] = {"interfaces": joined, "source": "membership"}
        else:
            result["client"][group_ip] = by_route(group_ip)
    return result


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


# Measured on Linux 6.x with veth: joins, sends and the relay's host-local
# re-delivery all still work without IFF_MULTICAST, so this is not an error.
_NO_MULTICAST_WHY = (
    "the Linux kernel still joins and loops multicast on it, but applications that check the flag "
    "before using an interface (Java's NetworkInterface.supportsMulticast(), avahi, scripts that "
    "test `ifconfig -a` for MULTICAST) skip or refuse it, so such a receiver or source never "
    "joins or sends there")


def _rules_interfaces(host, used, findings):
    for interface, sides in sorted(used.items()):
        groups = ", ".join(sorted(pair[1] for pair in sides))
        affects = set(sides)
        info = host.by_name.get(interface)
        if info is None:
            findings.append(_finding(
                "interface-missing", "error", interface,
                "interface %s, used by the relay for %s, does not exist" % (interface, groups),
                "the relay cannot join or re-deliver on an interface the kernel does not have",
                "correct the \"interface\" key in the relay config (or the role variable that sets it) "
                "to one of: %s" % ", ".join(sorted(n for n in host.by_name if n != "lo")),
                affects))
            continue
        if not info["up"]:
            findings.append(_finding(
                "interface-down", "error", interface,
                "interface %s is down; the relay uses it for %s" % (interface, groups),
                "nothing is sent or received on a down interface",
                "ip link set dev %s up (and fix why it went down)" % interface, affects))
        if not info["multicast"] and not info["loopback"]:
            findings.append(_finding(
                "interface-no-multicast", "warning", interface,
                "interface %s has no MULTICAST flag (ifconfig shows no MULTICAST); the relay uses it "
                "for %s" % (interface, groups), _NO_MULTICAST_WHY,
                "ip link set dev %s multicast on" % interface, affects))
    for info in host.data_interfaces:
        if info["name"] not in used and not info["multicast"]:
            findings.append(_finding(
                "interface-no-multicast", "info", info["name"],
                "interface %s is up with IPv4 but has no MULTICAST flag" % info["name"],
                _NO_MULTICAST_WHY, "ip link set dev %s multicast on" % info["name"]))


def _rules_routes(host, interfaces, findings):
    relying = []
    for group_ip, choice in sorted(interfaces["server"].items()):
        if choice["source"] == "route":
            relying.append(("server", group_ip))
    for group_ip, choice in sorted(interfaces["client"].items()):
        if choice["source"] == "route":
            relying.append(("client", group_ip))
    for side, group_ip in relying:
        if route_lookup(host.routes, group_ip) is None:
            findings.append(_finding(
                "no-route-for-group", "error", group_ip,
                "no route covers %s (no 224.0.0.0/4 route and no default route) and the relay %s "
                "has no pinned interface for it" % (group_ip, side),
                "joining with INADDR_ANY and sending without IP_MULTICAST_IF need a route: the kernel "
                "answers ENODEV / ENETUNREACH",
                "ip route add 224.0.0.0/4 dev IFACE (role variables multicast_proxy_route_device / "
                "multicast_proxy_route_gateway), or pin \"interface\" in the relay config",
                [(side, group_ip)]))
    if len(host.data_interfaces) < 2 or host.multicast_routes:
        return
    names = ", ".join(i["name"] for i in host.data_interfaces)
    default = route_lookup(host.routes, "224.0.0.0")
    chosen = default["interface"] if default else None
    routed = [(side, g) for side, g in relying if route_lookup(host.routes, g) is not None]
    fix = ("ip route add 224.0.0.0/4 dev IFACE on the interface the multicast traffic belongs to "
           "(role variables multicast_proxy_route_device / multicast_proxy_route_gateway)")
    why = ("without a multicast route the kernel joins and sends every group on the interface of "
           "the default route (%s); traffic that arrives on another interface is dropped in "
           "ip_rcv_finish because the group is not joined there" % chosen)
    if routed:
        findings.append(_finding(
            "no-multicast-route", "warning", "224.0.0.0/4",
            "host has %d interfaces with IPv4 (%s) and no 224.0.0.0/4 route; the relay picks %s "
            "for %s by the default route" % (len(host.data_interfaces), names, chosen,
                                             ", ".join(sorted(set(pair[1] for pair in routed)))),
            why, fix, routed))
    else:
        relay = "the relay's interfaces are pinned, " if interfaces["server"] or interfaces["client"] else ""
        findings.append(_finding(
            "no-multicast-route", "info", "224.0.0.0/4",
            "host has %d interfaces with IPv4 (%s) and no 224.0.0.0/4 route; %sapplications default "
            "to %s" % (len(host.data_interfaces), names, relay, chosen),
            why, fix))


def _rules_join_interface(host, interfaces, counters, findings):
    for group_ip, choice in sorted(interfaces["client"].items()):
        joined = host.joined_on(group_ip)
        delivery = choice["interfaces"]
        missed = [i for i in joined if i not in delivery]
        if joined and missed:
            findings.append(_finding(
                "join-interface-mismatch", "error", group_ip,
                "local sockets joined %s on %s, but the relay client re-delivers it on %s"
                % (group_ip, ", ".join(missed), ", ".join(delivery) or "no interface"),
                "a membership belongs to one interface: datagrams arriving on %s find no membership "
                "there and are dropped (ip_rcv_finish), so the application that joined on %s "
                "receives nothing" % (", ".join(delivery), ", ".join(missed)),
                "join the group on %s in the application (imr_interface = the address of that "
                "interface), or set \"interface\": \"%s\" in client_cfg.json.txt (or remove the key "
                "so the client follows the joins)" % (", ".join(delivery), missed[0]),
                [("client", group_ip)]))
    for group_ip, choice in sorted(interfaces["server"].items()):
        # A pinned interface that does not exist is reported as interface-missing.
        if choice["source"] != "config" or choice["interfaces"][0] not in host.by_name:
            continue
        route_interface = host.route_interface(group_ip)
        received = (counters.get(group_ip) or {}).get("rx_packets")
        joined_interface = choice["interfaces"][0]
        if route_interface and joined_interface != route_interface and not received:
            findings.append(_finding(
                "join-interface-mismatch", "error", group_ip,
                "the relay server joined %s on %s, but the kernel sends %s out of %s (route)"
                % (group_ip, joined_interface, group_ip, route_interface),
                "a local source that does not set IP_MULTICAST_IF sends on %s; the looped-back copy "
                "arrives on %s where the group is not joined and is dropped, so the server relays "
                "nothing" % (route_interface, route_interface),
                "set \"interface\": \"%s\" for the group in server_cfg.json.txt, or add "
                "ip route add %s/32 dev %s, or make the source set IP_MULTICAST_IF to %s"
                % (route_interface, group_ip, joined_interface, joined_interface),
                [("server", group_ip)]))


def _rules_memberships(host, server_config, client_config, findings):
    limit = host.facts.get("igmp_max_memberships")
    if limit is None:
        return
    server = [g.group_ip for g in server_groups(server_config)]
    client = sorted(set(e.group_ip for e in client_entries(client_config)))
    # The relay holds one membership per group socket, so each socket needs one.
    if server and limit < 1:
        findings.append(_finding(
            "igmp-max-memberships", "error", "net.ipv4.igmp_max_memberships",
            "net.ipv4.igmp_max_memberships is %d; the relay server needs 1 membership on each of "
            "its %d group sockets" % (limit, len(server)),
            "IP_ADD_MEMBERSHIP fails with ENOBUFS once a socket holds igmp_max_memberships "
            "groups, so the server cannot join and relays nothing",
            "sysctl -w net.ipv4.igmp_max_memberships=%d and persist it in /etc/sysctl.d/ (the "
            "common role sets it)" % max(256, len(server)),
            [("server", g) for g in server]))
    wanted = max(len(server), len(client))
    if wanted > limit >= 1:
        findings.append(_finding(
            "igmp-max-memberships", "warning", "net.ipv4.igmp_max_memberships",
            "net.ipv4.igmp_max_memberships is %d but this host relays %d groups" % (limit, wanted),
            "an application that joins every group on one socket fails with ENOBUFS after %d joins"
            % limit,
            "sysctl -w net.ipv4.igmp_max_memberships=%d and persist it in /etc/sysctl.d/"
            % max(256, wanted)))


def _rules_rp_filter(host, client_config, findings):
    if len(host.data_interfaces) < 2:
        return
    entries = client_entries(client_config)
    for server_ip in sorted(set(e.server_ip for e in entries)):
        interface = host.route_interface(server_ip)
        if interface and host.rp_filter(interface) == 1:
            findings.append(_finding(
                "rp-filter-strict", "warning", interface,
                "strict reverse-path filtering (rp_filter=1) on %s, where frames from relay server %s "
                "are expected" % (interface, server_ip),
                "on a multi-NIC host, frames from %s that arrive on any interface other than %s (the "
                "route back to the server) are dropped silently; it only matters when routing is "
                "asymmetric" % (server_ip, interface),
                "sysctl -w net.ipv4.conf.%s.rp_filter=2 (loose) and net.ipv4.conf.all.rp_filter=2"
                % interface,
                [("client", e.group_ip) for e in entries if e.server_ip == server_ip]))


def _rules_ports(probes, findings):
    for probe in probes or []:
        if probe.get("shareable") is False:
            findings.append(_finding(
                "port-not-shareable", "error", "%s:%d" % (probe["group"], probe["port"]),
                "UDP port %d is held by a socket without SO_REUSEADDR (a bind with SO_REUSEADDR to "
                "%s:%d fails: %s)" % (probe["port"], probe["group"], probe["port"], probe.get("error")),
                "two sockets share a UDP port only when both set SO_REUSEADDR; the relay server or a "
                "second receiver of the group cannot bind, so one of them gets nothing",
                "set SO_REUSEADDR before bind() in the application holding the port (find it with "
                "ss -ulpn sport = :%d)" % probe["port"],
                [(probe.get("side", "server"), probe["group"])]))


def _rules_groups(server_config, client_config, findings):
    groups = sorted(set([g.group_ip for g in server_groups(server_config)]
                        + [e.group_ip for e in client_entries(client_config)]))
    for group_ip in groups:
        if not is_link_local_group(group_ip):
            continue
        protocol = WELL_KNOWN_LINK_LOCAL.get(group_ip)
        findings.append(_finding(
            "link-local-group", "warning", group_ip,
            "%s is in 224.0.0.0/24%s" % (group_ip, " (used by %s)" % protocol if protocol else ""),
            "routers never forward 224.0.0.0/24 whatever the TTL; the relay carries it, but every "
            "host on the segment also sees local protocol traffic there and the group cannot be "
            "routed natively later",
            "use a group in 239.0.0.0/8 (administratively scoped) or 224.0.1.0 and above"))


_SIDE_COMMANDS = {"server": ("server_cfg.json.txt", "multis_admin", "server_reload_list"),
                  "client": ("client_cfg.json.txt", "multic_admin", "client_reload_list")}


def _rules_config_errors(config_errors, findings):
    for side, message in sorted((config_errors or {}).items()):
        file_name, admin, reload_command = _SIDE_COMMANDS[side]
        findings.append(_finding(
            "config-invalid", "error", file_name, message,
            "the relay refuses an invalid file: the daemon keeps its previous config, or does not start",
            "correct the file as the message says, check it with %s --check-config FILE, then run %s reload"
            % (admin, reload_command),
            [(side, "*")]))


def _rules_services(services, server_config, client_config, findings):
    wanted = {"server": bool(server_groups(server_config)), "client": bool(client_entries(client_config))}
    unit = {"server": "multis_monitord", "client": "multic_monitord"}
    for side in ("server", "client"):
        state = (services or {}).get(side)
        if state is None or not wanted[side]:
            continue
        if not state.get("installed", True):
            findings.append(_finding(
                "relay-not-installed", "error", unit[side],
                "a %s config with entries exists but the relay %s command is not installed" % (side, side),
                "nothing relays the configured groups",
                "run the multicast.proxy.site playbook (role multicast.proxy.%s)" % side,
                [(side, "*")]))
        elif not state.get("running"):
            findings.append(_finding(
                "relay-not-running", "error", unit[side],
                "the relay %s is not running%s" % (side, ": %s" % state["error"] if state.get("error") else ""),
                "a configured %s relays nothing while its daemon is down" % side,
                "systemctl start %s.service; journalctl -u %s.service shows why it stopped"
                % (unit[side], unit[side]),
                [(side, "*")]))


def _host_address(host, interface):
    info = host.by_name.get(interface) if interface else None
    if info and info["ipv4"]:
        return info["ipv4"][0].split("/")[0]
    return None


def _rules_firewall(host, interfaces, server_config, client_config, firewall, findings):
    if not firewall:
        return
    for server_ip, server_port, group_ip, group_port in client_entries(client_config):
        interface = host.route_interface(server_ip)
        packet = {"l4proto": "udp", "saddr": server_ip, "daddr": _host_address(host, interface),
                  "dport": server_port, "iifname": interface, "ct_state": "new", "nfproto": "ipv4"}
        verdict = firewall_verdict(firewall, packet)
        if verdict:
            findings.append(_finding(
                "firewall-blocks-server-port", "error", "udp/%d" % server_port,
                "the local firewall %ss UDP from relay server %s to port %d (%s)"
                % (verdict[0], server_ip, server_port, verdict[1]),
                "the relay's frames for %s:%d never reach the client socket" % (group_ip, group_port),
                "allow it: nft add rule inet filter input ip saddr %s udp dport %d accept (or the "
                "equivalent iptables -I INPUT -p udp -s %s --dport %d -j ACCEPT)"
                % (server_ip, server_port, server_ip, server_port),
                [("client", group_ip)]))
    for group in server_groups(server_config):
        group_ip, group_port = group.group_ip, group.group_port
        interface = (interfaces["server"].get(group_ip, {}).get("interfaces") or [None])[0]
        packet = {"l4proto": "udp", "saddr": _host_address(host, interface), "daddr": group_ip,
                  "dport": group_port, "iifname": interface, "ct_state": "new", "nfproto": "ipv4"}
        verdict = firewall_verdict(firewall, packet)
        if verdict:
            findings.append(_finding(
                "firewall-blocks-group-port", "error", "%s:%d" % (group_ip, group_port),
                "the local firewall %ss UDP to %s:%d (%s)" % (verdict[0], group_ip, group_port, verdict[1]),
                "the local source's looped-back datagrams pass the input hook too; the relay server "
                "receives none of them",
                "allow it: nft add rule inet filter input ip daddr %s udp dport %d accept"
                % (group_ip, group_port),
                [("server", group_ip)]))


def _rules_ttl(server_config, client_config, counters, findings):
    client_groups = set(e.group_ip for e in client_entries(client_config))
    for group_ip in [g.group_ip for g in server_groups(server_config)]:
        loops = (counters.get(group_ip) or {}).get("loop_drops") or 0
        if loops and group_ip not in client_groups:
            findings.append(_finding(
                "source-ttl-zero", "warning", group_ip,
                "the relay server dropped %d datagrams of %s as loops (TTL 0) and this host runs no "
                "relay client for the group" % (loops, group_ip),
                "TTL 0 marks the relay client's own re-deliveries; a local source that sends with "
                "IP_MULTICAST_TTL 0 looks the same and is never relayed",
                "make the source send with IP_MULTICAST_TTL 1 or more", [("server", group_ip)]))
    if client_groups:
        findings.append(_finding(
            "ttl-scope", "info", ", ".join(sorted(client_groups)),
            "the relay client re-delivers with TTL 0",
            "TTL 0 keeps datagrams on this host: receivers must run here; other hosts of this subnet "
            "get nothing from this member (TTL 1 = subnet, 32 = site, 255 = unrestricted, and "
            "224.0.0.0/24 is never routed)",
            "run the receiving application on each member, or make every receiving host a member"))


def _rules_counters(host, interfaces, server_config, client_config, server_counters, client_counters,
                    services, findings):
    running = dict((side, bool(((services or {}).get(side) or {}).get("running")))
                   for side in ("server", "client"))
    outgoing = host.facts.get("ip_counters", {}).get("OutMcastPkts")
    for group in server_groups(server_config):
        group_ip, group_port = group.group_ip, group.group_port
        counters = server_counters.get(group_ip)
        if not running["server"] or counters is None or counters["rx_packets"] != 0:
            continue
        if outgoing:
            seen = ("this host did send %d multicast datagrams, so the source runs but they do not "
                    "reach the relay's socket" % outgoing)
        else:
            seen = "this host has sent no multicast at all: the source may not be running"
        findings.append(_finding(
            "server-no-input", "warning", "%s:%d" % (group_ip, group_port),
            "the relay server has received nothing for %s:%d from its local source; %s"
            % (group_ip, group_port, seen),
            "the relay only sees the looped-back copy of what the source sends: a source with "
            "IP_MULTICAST_LOOP 0, sending to another port, or out of another interface than %s "
            "delivers nothing to it" % ", ".join(interfaces["server"].get(group_ip, {}).get("interfaces", [])),
            "in the source set IP_MULTICAST_LOOP 1, send to %s:%d, and set IP_MULTICAST_IF to the "
            "interface the relay joined on" % (group_ip, group_port),
            [("server", group_ip)]))
    for server_ip, server_port, group_ip, group_port in client_entries(client_config):
        counters = client_counters.get((server_ip, group_ip, group_port))
        if not running["client"] or counters is None or counters["rx_packets"] != 0:
            continue
        findings.append(_finding(
            "client-no-input", "warning", "%s %s:%d" % (server_ip, group_ip, group_port),
            "the relay client has received nothing from server %s for %s:%d"
            % (server_ip, group_ip, group_port),
            "either the server sends nothing (its source is idle or not relayed), this host's "
            "address is not in the server's member list for the group, or the frames to UDP port "
            "%d are dropped on the way" % server_port,
            "on %s run multis_admin -L -m %s and check this host's address is a member and the "
            "server port is %d; check security groups allow UDP %d from %s"
            % (server_ip, group_ip, server_port, server_port, server_ip),
            [("client", group_ip)]))


def _rules_local_receivers(host, client_config, findings):
    for group_ip in sorted(set(e.group_ip for e in client_entries(client_config))):
        if not host.joined_on(group_ip):
            findings.append(_finding(
                "no-local-receiver", "info", group_ip,
                "no local socket has joined %s" % group_ip,
                "the relay client re-delivers on this host only; until an application joins the "
                "group the re-delivered datagrams reach nobody",
                "start the receiving application (it must join %s)" % group_ip))


def _rules_relay_errors(server_counters, client_stats, findings):
    for group_ip, counters in sorted(server_counters.items()):
        if counters["error"]:
            findings.append(_finding(
                "server-group-error", "error", group_ip,
                "the relay server reports for %s: %s" % (group_ip, counters["error"]),
                "a group the server could not join is not relayed at all",
                "fix the cause named in the message, then run server_reload_list reload",
                [("server", group_ip)]))
    for error in (client_stats or {}).get("listen_errors", []):
        findings.append(_finding(
            "client-listen-error", "error", "multic_monitord",
            "the relay client reports: %s" % error,
            "a server port the client cannot bind receives no frames",
            "free the port (ss -ulpn) or change server_port on both sides, then client_reload_list reload",
            [("client", "*")]))


# Which causes can explain each symptom.  A client that got nothing from its
# server is not explained by a wrong join on the client (that loses datagrams
# after they arrived), so the pairs are explicit rather than "same group".
_EXPLAINED_BY = {
    "server-no-input": ("join-interface-mismatch", "no-multicast-route", "firewall-blocks-group-port",
                        "igmp-max-memberships", "server-group-error", "interface-down", "interface-missing",
                        "port-not-shareable", "source-ttl-zero", "no-route-for-group", "config-invalid"),
    "server-group-error": ("igmp-max-memberships", "interface-down", "interface-missing", "no-route-for-group",
                           "port-not-shareable"),
    "client-no-input": ("firewall-blocks-server-port", "rp-filter-strict", "client-listen-error", "config-invalid"),
    "relay-not-running": ("config-invalid",),
}
_SYMPTOMS = tuple(_EXPLAINED_BY)


def _explains(cause, symptom):
    if cause["id"] not in _EXPLAINED_BY[symptom["id"]]:
        return False
    for side, group in cause["affects"]:
        for symptom_side, symptom_group in symptom["affects"]:
            if side == symptom_side and (group == symptom_group or "*" in (group, symptom_group)):
                return True
    return False


def _fold_symptoms(findings):
    """Attach a symptom to the finding that explains it instead of reporting it twice.

    An operator fixes causes; "the server received nothing" next to "the
    server joined on the wrong interface" is one problem, not two.
    """
    causes = [f for f in findings if f["severity"] != "info" and f["id"] not in _SYMPTOMS]
    # Errors first: when an error and a warning both explain a symptom, the error owns it.
    causes.sort(key=lambda f: SEVERITIES.index(f["severity"]))
    # A group the server could not join is a symptom of, say, igmp_max_memberships,
    # and itself explains the server's silence: fold it first, follow the chain after.
    causes += [f for f in findings if f["id"] == "server-group-error"]
    carriers = {}
    for finding in sorted(findings, key=lambda f: f["id"] != "server-group-error"):
        if finding["id"] not in _SYMPTOMS:
            continue
        explained = [cause for cause in causes if cause is not finding and _explains(cause, finding)]
        if explained:
            carrier = carriers.get(id(explained[0]), explained[0])
            carrier["evidence"].append(finding["what"])
            carriers[id(finding)] = carrier
    return [f for f in findings if id(f) not in carriers]


def diagnose(facts, server_config=None, client_config=None, server_stats=None, client_stats=None,
             services=None, firewall=None, port_probes=None, config_errors=None):
    """Apply every rule; return the findings, errors first.

    ``server_config``/``client_config``: validated relay configs (or None).
    ``server_stats``/``client_stats``: the ``-P --json`` replies (None when the
    daemon is down).  ``services``: {"server"|"client": {"installed", "running",
    "error"}}.  ``firewall``: {"format": "nft-json"|"iptables-save", "text"}.
    ``port_probes``: results of probe_port_shareable with "group", "port", "side".
    ``config_errors``: {"server"|"client": ConfigError text} for a config file
    that does not validate (its config is then None).
    """
    host = _Host(facts)
    interfaces = relay_interfaces(facts, server_config, client_config)
    server_counters = server_group_counters(server_stats)
    client_counters = client_entry_counters(client_stats)
    # What the running client says it delivers on beats what we infer.
    for key, counters in client_counters.items():
        group_ip = key[1]
        if counters["interfaces"] and group_ip in interfaces["client"]:
            interfaces["client"][group_ip] = {"interfaces": counters["interfaces"], "source": "relay"}
    used = {}
    for side in ("server", "client"):
        for group_ip, choice in interfaces[side].items():
            for interface in choice["interfaces"]:
                used.setdefault(interface, set()).add((side, group_ip))
    findings = []
    _rules_config_errors(config_errors, findings)
    _rules_services(services, server_config, client_config, findings)
    _rules_relay_errors(server_counters, client_stats, findings)
    _rules_interfaces(host, used, findings)
    _rules_routes(host, interfaces, findings)
    _rules_join_interface(host, interfaces, server_counters, findings)
    _rules_memberships(host, server_config, client_config, findings)
    _rules_rp_filter(host, client_config, findings)
    _rules_ports(port_probes, findings)
    _rules_firewall(host, interfaces, server_config, client_config, firewall, findings)
    _rules_groups(server_config, client_config, findings)
    _rules_ttl(server_config, client_config, server_counters, findings)
    _rules_counters(host, interfaces, server_config, client_config, server_counters, client_counters,
                    services, findings)
    _rules_local_receivers(host, client_config, findings)
    findings = _fold_symptoms(findings)
    findings.sort(key=lambda f: SEVERITIES.index(f["severity"]))
    for finding in findings:
        finding["affects"] = ["%s %s" % pair for pair in finding["affects"]]
    return findings


def format_report(findings, title="multicast doctor"):
    """A readable multi-line report of the findings."""
    counts = dict((s, sum(1 for f in findings if f["severity"] == s)) for s in SEVERITIES)
    lines = ["%s: %d error(s), %d warning(s), %d note(s)"
             % (title, counts["error"], counts["warning"], counts["info"])]
    if not findings:
        lines.append("  no problem found")
    for finding in findings:
        lines.append("")
        lines.append("[%s] %s (%s)" % (finding["severity"].upper(), finding["id"], finding["subject"]))
        lines.append("  what: %s" % finding["what"])
        lines.append("  why:  %s" % finding["why"])
        lines.append("  fix:  %s" % finding["fix"])
        for evidence in finding.get("evidence", []):
            lines.append("  also: %s" % evidence)
    return "\n".join(lines)
