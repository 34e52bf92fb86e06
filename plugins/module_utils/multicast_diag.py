# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's rules and its report.

``diagnose()`` is a pure function over the kernel facts, the relay configs,
the relay counters and the firewall ruleset text; each finding says what is
wrong, why it breaks delivery and how to fix it.  ``format_report()`` turns the
findings into the text ``--doctor`` prints.  The inputs come from two
neighbours, each owning one concern:

* ``multicast_diag_kernel``: the facts (``/proc``, ``/sys``, rtnetlink, the
  port probe) and ``collect_facts()``;
* ``multicast_diag_firewall``: whether the nftables or iptables input hook
  drops a packet.

Which client entries keep the original source comes from ``relay_config``
(``client_entry_keeps_source``), the function the client daemon uses.

Standard library only, Python 3.6 to 3.13.  The relay package uses these files
through the symlinks ``files/multicast_proxy/multicast_diag*.py`` and the
Ansible module ``multicast_diagnose_info`` imports them by their collection
path; the imports between them are relative, so both apply the same rules.
Callers that import the facts or the firewall verdict from here keep working:
those names are imported from their owners (see ``__all__``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections

from .multicast_diag_firewall import firewall_verdict, firewalls_verdict
from .multicast_diag_kernel import (
    FactsError,
    collect_facts,
    group_routes,
    is_link_local_group,
    multicast_routes,
    parse_proc_igmp,
    parse_proc_route,
    probe_port_shareable,
    route_lookup,
)
from .relay_config import CLIENT_TOP_KEY, client_entry_keeps_source

# The public names, with those of multicast_diag_kernel and multicast_diag_firewall
# that callers used to import from here before the split.
__all__ = [
    "SEVERITIES", "WELL_KNOWN_LINK_LOCAL", "ServerGroup", "ClientEntry", "server_groups", "client_entries",
    "server_group_counters", "client_entry_counters", "probe_relay_ports", "relay_interfaces", "diagnose",
    "format_report",
    "FactsError", "collect_facts", "group_routes", "parse_proc_igmp", "parse_proc_route", "route_lookup",
    "firewall_verdict",
]

SEVERITIES = ("error", "warning", "info")

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


# ---------------------------------------------------------------- relay inputs

# interface: the pinned one or None; join: where a group without one is joined ("all", "route" or a list of
# interface names and addresses, the server's join_interfaces; None when pinned or captured).
ServerGroup = collections.namedtuple("ServerGroup", "group_ip group_port server_port interface members join")
ClientEntry = collections.namedtuple("ClientEntry", "server_ip server_port group_ip group_port")


def server_groups(server_config):
    """The server config's groups; ``interface`` is the pinned one or None, ``join`` the join setting.

    The most specific level wins: the group's interface, its join_interfaces,
    the server's interface, the server's join_interfaces (default "all").
    Capture and VRRP groups read one interface: the pinned one or the route's.
    """
    if not server_config:
        return []
    result = []
    for g in server_config.get("multi_group_array", []):
        interface, join = None, "all"
        for level in (g, server_config):
            if level.get("interface"):
                interface, join = level["interface"], None
                break
            if "join_interfaces" in level:
                join = level["join_interfaces"]
                break
        if g.get("capture") or g.get("protocol") == "vrrp":
            join = None
        result.append(ServerGroup(g["group_ip"], g["group_port"], g["server_port"], interface,
                                  list(g["member_array"]), join))
    return result


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
            # Where the daemon joined the group (None: a relay from before join_interfaces), and what it could not.
            "interfaces": list(group["interfaces"]) if isinstance(group.get("interfaces"), list) else None,
            "join_problem": group.get("join_problem") or None,
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
            # A dynamic entry's subscription state (subscription.Subscriber.as_dict), else None.
            "dynamic": entry["dynamic"] if isinstance(entry.get("dynamic"), dict) else None,
        }
    return counters


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

    Server: the pinned interface, else per join setting every up multicast
    interface with IPv4 and the route's ("all"), the listed ones, or the
    route's (and the route's for capture groups).  Client: the
    pinned interface, else every interface where a local socket joined the
    group, else the route (the order in docs/architecture.md).  Each value is
    {"interfaces": [...], "source": "config"|"membership"|"route"|"all"}.
    """
    host = _Host(facts)
    result = {"server": {}, "client": {}}

    def by_route(group_ip):
        interface = host.route_interface(group_ip)
        return {"interfaces": [interface] if interface else [], "source": "route"}

    for group in server_groups(server_config):
        if group.interface:
            result["server"][group.group_ip] = {"interfaces": [group.interface], "source": "config"}
        elif group.join in (None, "route"):
            result["server"][group.group_ip] = by_route(group.group_ip)
        elif group.join == "all":
            route_interface = host.route_interface(group.group_ip)
            result["server"][group.group_ip] = {"interfaces": sorted(
                set([i["name"] for i in host.data_interfaces if i["multicast"]]
                    + ([route_interface] if route_interface else []))), "source": "all"}
        else:
            by_address = dict((address.split("/")[0], i["name"]) for i in host.facts["interfaces"]
                              for address in i["ipv4"])
            result["server"][group.group_ip] = {"interfaces": [by_address.get(item, item) for item in group.join],
                                                "source": "config"}
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


def _rules_source_interface(interfaces, source_interfaces, server_counters, findings):
    """A local source sends a group out of an interface the relay server did not join (or capture on)."""
    for group_ip, seen in sorted((source_interfaces or {}).items()):
        choice = interfaces["server"].get(group_ip)
        if choice is None or not seen:
            continue
        joined = choice["interfaces"]
        missed = sorted(name for name in seen if name not in joined)
        if not missed:
            continue
        sent = ", ".join("%s (%d datagrams)" % (name, seen[name]) for name in missed)
        findings.append(_finding(
            "source-interface-not-joined", "error", group_ip,
            "a local source sends %s out of %s, but the relay server picks the group up on %s only"
            % (group_ip, sent, ", ".join(joined) or "no interface"),
            "the looped-back copy of a datagram reaches only sockets that joined the group on the interface "
            "it left from (and capture mode reads one interface), so what leaves by %s is never relayed"
            % ", ".join(missed),
            "let the server join every interface: remove \"interface\" and \"join_interfaces\" from "
            "server_cfg.json.txt (the default is all) or add %s to join_interfaces (multis_admin --set "
            "join_interfaces=%s; role variable multicast_proxy_join_interfaces), then reload; or make the "
            "source set IP_MULTICAST_IF to %s" % (", ".join(missed), ",".join(joined + missed),
                                                  joined[0] if joined else "the joined interface"),
            [("server", group_ip)]))
    for group_ip, counters in sorted(server_counters.items()):
        if counters.get("join_problem") and not counters["error"]:
            findings.append(_finding(
                "server-join-incomplete", "warning", group_ip,
                "the relay server joined %s on %s but not everywhere its join_interfaces asks: %s"
                % (group_ip, ", ".join(counters["interfaces"] or []) or "no interface", counters["join_problem"]),
                "a local source that sends out of an interface the group is not joined on is not relayed",
                "fix the cause named (bring the interface up, correct join_interfaces, raise "
                "net.ipv4.igmp_max_memberships); the server rescans the interfaces every second",
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


def _open_server_port(name, server_ip, server_port):
    """How to let a relay server's frames reach the client port, in the firewall that refuses them."""
    if name == "firewalld":
        return ("multicast_proxy_firewall_open: true for the client role, or firewall-cmd --permanent "
                "--add-rich-rule='rule family=\"ipv4\" source address=\"%s\" port port=\"%d\" protocol=\"udp\" "
                "accept' and firewall-cmd --reload" % (server_ip, server_port))
    if name == "ufw":
        return ("multicast_proxy_firewall_open: true for the client role, or ufw allow from %s to any port %d "
                "proto udp" % (server_ip, server_port))
    if name.startswith("nftables (the relay's own table)"):
        return ("%s is not among the servers of table inet multicast_proxy: run the client role again so that "
                "the table follows the inventory, or turn multicast_proxy_firewall_open off" % server_ip)
    if name == "iptables":
        return "allow it: iptables -I INPUT -p udp -s %s --dport %d -j ACCEPT" % (server_ip, server_port)
    return "allow it: nft add rule inet filter input ip saddr %s udp dport %d accept" % (server_ip, server_port)


def _rules_firewall(host, interfaces, server_config, client_config, firewall, findings):
    if not firewall:
        return
    for server_ip, server_port, group_ip, group_port in client_entries(client_config):
        interface = host.route_interface(server_ip)
        packet = {"l4proto": "udp", "saddr": server_ip, "daddr": _host_address(host, interface),
                  "dport": server_port, "iifname": interface, "ct_state": "new", "nfproto": "ipv4"}
        verdict = firewalls_verdict(firewall, packet)
        if verdict:
            findings.append(_finding(
                "firewall-blocks-server-port", "error", "udp/%d" % server_port,
                "the host firewall (%s) %ss UDP from relay server %s to port %d (%s)"
                % (verdict[2], verdict[0], server_ip, server_port, verdict[1]),
                "the relay's frames for %s:%d never reach the client socket" % (group_ip, group_port),
                _open_server_port(verdict[2], server_ip, server_port),
                [("client", group_ip)]))
    for group in server_groups(server_config):
        group_ip, group_port = group.group_ip, group.group_port
        interface = (interfaces["server"].get(group_ip, {}).get("interfaces") or [None])[0]
        packet = {"l4proto": "udp", "saddr": _host_address(host, interface), "daddr": group_ip,
                  "dport": group_port, "iifname": interface, "ct_state": "new", "nfproto": "ipv4"}
        verdict = firewalls_verdict(firewall, packet)
        if verdict:
            findings.append(_finding(
                "firewall-blocks-group-port", "error", "%s:%d" % (group_ip, group_port),
                "the host firewall (%s) %ss UDP to %s:%d (%s)"
                % (verdict[2], verdict[0], group_ip, group_port, verdict[1]),
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
        dynamic = counters.get("dynamic")
        if dynamic is not None and (not dynamic.get("wanted") or (
                dynamic.get("state") == "joining" and (_age(dynamic.get("state_age")) or 0) < DYNAMIC_PATIENCE)):
            continue    # a dynamic entry without a local application (or just subscribing) is sent nothing, rightly
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


def _rules_source_specific(host, client_config, findings):
    """A local socket joined a group for one source while the client re-sends the group from this host's address."""
    entries = {}
    for entry in (client_config or {}).get(CLIENT_TOP_KEY, []):
        entries.setdefault(entry["group_ip"], []).append(
            (entry["server_ip"], client_entry_keeps_source(client_config, entry)))
    names = dict((i["index"], i["name"]) for i in host.facts["interfaces"])
    joins = {}
    for row in host.facts.get("source_filters") or []:
        if row["include"] and row["group"] in entries:
            joins.setdefault((row["group"], row["source"]), set()).add(names.get(row["index"], row["interface"]))
    for (group_ip, source), interfaces in sorted(joins.items()):
        plain = sorted(set(server for server, keeps in entries[group_ip] if not keeps))
        if not plain or (source, True) in entries[group_ip]:
            continue    # the entry of the source's own server keeps the source
        findings.append(_finding(
            "source-specific-receiver",
            "error" if len(plain) == len(entries[group_ip]) else "warning", "%s from %s" % (group_ip, source),
            "a local socket joined %s for source %s only (a source-specific join on %s), but the relay client "
            "re-delivers %s from %s without preserve_source"
            % (group_ip, source, ", ".join(sorted(interfaces)), group_ip, ", ".join(plain)),
            "without preserve_source a re-delivered datagram comes from this host's own address, and the kernel "
            "gives a source-specific socket only datagrams from the sources it joined for: the application "
            "waiting for %s receives nothing from the relay" % source,
            "enable preserve_source for %s: preserve_source: true on the group in multicast_proxy_groups (or "
            "multicast_proxy_preserve_source: true for this host), or by hand multic_admin -A -i SERVER_IP "
            "-g GROUP_PORT -s SERVER_PORT -m %s --preserve-source" % (group_ip, group_ip),
            [("client", group_ip)]))


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


_DAEMONS = {"server": "multis_monitord", "client": "multic_monitord"}
_ADMINS = {"server": "multis_admin", "client": "multic_admin"}


def _rules_auth(server_stats, client_stats, findings):
    """Keys the marker auth_required asks for but that cannot be loaded; tags a keyless client cannot check."""
    for side, stats in (("server", server_stats), ("client", client_stats)):
        status = (stats or {}).get("auth_status") or {}
        if status.get("refusing"):
            findings.append(_finding(
                "auth-required-no-keys", "error", _DAEMONS[side],
                "the relay %s relays nothing: authentication is required (auth_required in its config "
                "directory) but the keys cannot be loaded: %s" % (side, status.get("error")),
                "with the marker a missing or invalid key file stops the relay instead of turning "
                "authentication off",
                "install a valid auth_keys.json (multicast_proxy_auth_keys; check it with %s --check-auth FILE) "
                "and run %s_reload_list reload, or remove auth_required to relay without keys"
                % (_ADMINS[side], side), [(side, "*")]))
    unverified = ((client_stats or {}).get("auth_status") or {}).get("unverified")
    if unverified:
        findings.append(_finding(
            "auth-tags-unchecked", "warning", _DAEMONS["client"],
            "the relay client delivered %d frames that carry authentication tags without checking them: "
            "it has no key file" % unverified,
            "its servers use keys, so anyone who can send to this host's server port can forge frames that "
            "this client delivers",
            "install the fleet's keys on this host (multicast_proxy_auth_keys) and run client_reload_list "
            "reload; create auth_required to refuse frames without valid keys", [("client", "*")]))


def _rules_legacy_tags(server_stats, client_stats, findings):
    """An upgrade from tags that do not name their server (before 1.0.0) that is not finished, or a downgrade."""
    server_status = ((server_stats or {}).get("auth_status") or {}) if isinstance(server_stats, dict) else {}
    client_status = ((client_stats or {}).get("auth_status") or {}) if isinstance(client_stats, dict) else {}
    if server_status.get("legacy_tags"):
        findings.append(_finding(
            "legacy-tags-sent", "warning", _DAEMONS["server"],
            "the relay server tags its frames in the legacy form that does not name it (legacy_tags)",
            "a frame it sent can be re-sent under another server's address to members that have not yet seen "
            "a tag naming that server; clients with auth_required refuse every such frame",
            "once every member runs release 1.0.0 or later, turn it off (multicast_proxy_legacy_tags: false, "
            "or multis_admin --set legacy_tags=false) and run server_reload_list reload", [("server", "*")]))
    accepted = client_status.get("accepted_unbound")
    if accepted:
        findings.append(_finding(
            "legacy-tags-accepted", "warning", _DAEMONS["client"],
            "the relay client accepted %d frames with legacy tags that do not name their server" % accepted,
            "a server runs a release before 1.0.0 or has legacy_tags on; until it sends a tag naming it, a "
            "frame of another server can be re-sent under its address",
            "upgrade the servers and turn legacy_tags off (the second step in docs/collection.md, upgrading "
            "from a release before 1.0.0)", [("client", "*")]))
    refused = client_status.get("refused_unbound")
    if refused:
        findings.append(_finding(
            "legacy-tags-refused", "error", _DAEMONS["client"],
            "the relay client refused %d frames with legacy tags (auth_unbound)" % refused,
            "their server had already sent tags that name it, or keys are required (auth_required): either "
            "someone replays or downgrades frames, or a server was put back on legacy_tags or an old release",
            "check multis_admin -P on the servers of this host's entries: none may say legacy_tags; if none "
            "does, treat it as an attack and look for the sender of the frames", [("client", "*")]))


def _rules_source_port(server_stats, client_stats, findings):
    """A server that cannot send from its source_port; a client refusing frames from the wrong source port."""
    sender = (server_stats or {}).get("sender") if isinstance(server_stats, dict) else None
    if isinstance(sender, dict) and sender.get("error"):
        findings.append(_finding(
            "source-port-not-bound", "error", _DAEMONS["server"],
            "the relay server does not send from its source_port: %s" % sender["error"],
            "members whose entries name the source port drop every copy from this server as source_port",
            "free the port (ss -uapn 'sport = :%s' names the holder) or choose another source_port "
            "(multicast_proxy_source_port in the inventory, then the client role on the members too), and run "
            "server_reload_list reload" % sender.get("source_port"), [("server", "*")]))
    drops = (client_stats or {}).get("drops") if isinstance(client_stats, dict) else None
    refused = drops.get("source_port") if isinstance(drops, dict) else None
    if isinstance(refused, int) and refused > 0:
        findings.append(_finding(
            "client-source-port-refused", "warning", _DAEMONS["client"],
            "the relay client dropped %d frames that came from a server's address but not from the source port "
            "its entry names" % refused,
            "either the server sends from another port (its source_port differs, or it could not bind it) or "
            "someone on the server host sends forged frames from its address",
            "compare source_port of the entries (multic_admin -L) with the server's (multis_admin -P there); "
            "after a deliberate change of the server's port, deploy the members again", [("client", "*")]))


def _rules_metrics(server_stats, client_stats, findings):
    """A metrics endpoint or textfile that is configured but not produced; an endpoint open to every address."""
    for side, stats in (("server", server_stats), ("client", client_stats)):
        status = (stats or {}).get("metrics") if isinstance(stats, dict) else None
        if not isinstance(status, dict):
            continue    # metrics off, or a daemon too old to report them
        # Each field as the daemon reports it, or absent: null (metrics off) is not an address.
        listen = status.get("listen") if isinstance(status.get("listen"), str) else None
        if listen and not status.get("serving"):
            findings.append(_finding(
                "metrics-not-serving", "warning", _DAEMONS[side],
                "the relay %s is configured to serve metrics on %s but does not: %s"
                % (side, listen, status.get("error")),
                "Prometheus sees the target as down (up == 0) although the relay runs; the daemon retries every "
                "30 s", "free the port or choose another one (metrics_listen in the config, "
                "multicast_proxy_metrics_%s_port in the inventory) and run %s_reload_list reload"
                % (side, side), [(side, "*")]))
        elif listen and listen.startswith("0.0.0.0:"):
            findings.append(_finding(
                "metrics-open", "info", _DAEMONS[side],
                "the relay %s serves metrics on every address (%s)" % (side, listen),
                "anyone who can reach the port reads the group addresses and members",
                "allow the port only from the Prometheus servers in the host or cloud firewall, or listen on "
                "the one address Prometheus scrapes", [(side, "*")]))
        if status.get("textfile") and status.get("textfile_error"):
            findings.append(_finding(
                "metrics-textfile-failing", "warning", _DAEMONS[side],
                "the relay %s cannot write its metrics textfile: %s" % (side, status["textfile_error"]),
                "node_exporter keeps exporting the last complete file, or nothing, so the figures go stale",
                "create the directory and let the daemon write it (the roles add it to the unit's ReadWritePaths "
                "with multicast_proxy_metrics_textfile_dir)", [(side, "*")]))


# ---------------------------------------------------------------- dynamic members (docs/dynamic-membership.md)

# A dynamic entry may be "joining" for a round trip and a half after its application joined; longer than
# this (four JOINs at the default retry) means no subscription is coming.
DYNAMIC_PATIENCE = 2.0

# Why the server refused subscriptions, by the reason it counts (subscription.REFUSAL_REASONS), and what to do.
_REFUSALS = {
    "not_allowed": ("warning", "the source addresses are not in the allow list of the group they asked for: those "
                    "hosts never become members and get nothing (the server does not answer them)",
                    "add the members' network to the group's allow list (may_join in multicast_proxy_groups, or "
                    "multis_admin -A -m GROUP -p PORT --allow CIDR,...), or remove --dynamic from the entries of "
                    "hosts that should not subscribe; the log line subscription_not_allowed names each source"),
    "bad_cookie": ("info", "a JOIN or LEAVE echoed a cookie this server did not make or that is older than two "
                   "minutes: once per member after a server restart or a rejoin after a pause is normal (it is "
                   "challenged again); many more mean forged JOINs, or a NAT that changes a member's source port",
                   "nothing if it grows only with restarts and rejoins; else compare with the group's challenges "
                   "and acks and look for the sources in the log (subscription_bad_cookie)"),
    "rate_limited": ("warning", "more subscription messages than the limits (10 a second per member and group, 5000 "
                     "in all, 500 challenges a second): a flood, or more members than the server's limit of "
                     "messages carries at this lease",
                     "find the sources in the log (subscription_rate_limited); with many large groups, a longer "
                     "lease (fewer refreshes, multis_admin -A ... --lease SECONDS)"),
    "full": ("warning", "the group already had max_members dynamic members: the hosts turned away get nothing "
             "(they are told: their multic_admin -P says refused (full))",
             "raise max_members for the group (multis_admin -A -m GROUP -p PORT --max-members N, up to 1024; "
             "max_members in multicast_proxy_groups), or let fewer hosts subscribe"),
    "wrong_port": ("warning", "a subscription came from or to another port than the group's server port: the "
                   "member's entry names another server port (-s), or a NAT rewrote its source port",
                   "make the entry's server port (multic_admin -A ... -s PORT) the group's server_port; a member "
                   "behind a NAT that changes ports cannot subscribe"),
    "unknown_group": ("warning", "a host subscribed to a group (or a group port) this server does not take "
                      "subscriptions for: its entry is dynamic but the group here has no allow list, or another "
                      "group port",
                      "give the group an allow list here (--allow), or correct the entry's group port, or remove "
                      "--dynamic from that host's entry"),
    "auth_missing": ("warning", "subscriptions without an authentication tag while this server has keys: the host "
                     "has no auth_keys.json and never becomes a member",
                     "install the fleet's keys on the member (multicast_proxy_auth_keys) and reload its client"),
    "auth_unknown_key": ("warning", "subscriptions tagged with a key id this server does not have: the member "
                         "has another or a newer key file",
                         "deploy the same auth_keys.json on the server and its members, then reload both"),
    "auth_bad": ("warning", "subscriptions whose tag does not verify: a different key under the same id, a NAT "
                 "that changes the member's address, or forged messages",
                 "deploy the same auth_keys.json on the server and its members; members behind a NAT cannot "
                 "subscribe with keys"),
    "malformed": ("info", "datagrams on a subscription port that are not subscription messages",
                  "nothing unless it grows: then find what sends to the server port (the log names the source)"),
    "bad_version": ("warning", "subscription messages of another protocol version: a member runs another release "
                    "of the relay", "run the same release on the server and its members"),
    "unexpected_kind": ("info", "a challenge, acknowledgement or refusal sent to the server: another server, "
                        "or a test tool", "nothing unless it grows: the log names the source"),
}


def _dynamic_entries(client_stats):
    """(entry, its "dynamic" dict) for each dynamic entry of ``multic_admin -P --json``."""
    entries = (client_stats or {}).get("entries") if isinstance(client_stats, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("dynamic"), dict):
            yield entry, entry["dynamic"]


def _age(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rules_dynamic_client(client_stats, findings):
    """A dynamic entry whose application joined but that the server does not (or no longer) acknowledge."""
    drops = (client_stats or {}).get("drops") if isinstance(client_stats, dict) else None
    drops = drops if isinstance(drops, dict) else {}
    dropped = ", ".join("%s=%d" % (reason, drops[reason]) for reason in sorted(drops)
                        if (reason == "unknown_server" or reason.startswith("auth_"))
                        and isinstance(drops[reason], int) and drops[reason] > 0)
    for entry, state in _dynamic_entries(client_stats):
        if not state.get("wanted"):
            continue    # no local application joined: not subscribing is right (no-local-receiver says so)
        server = "%s:%s" % (entry.get("server_ip"), entry.get("server_port"))
        group = "%s:%s" % (entry.get("group_ip"), entry.get("group_port"))
        subject = "%s %s" % (entry.get("server_ip"), group)
        affects = [("client", entry.get("group_ip"))]
        counters = state.get("counters") if isinstance(state.get("counters"), dict) else {}
        state_age = _age(state.get("state_age"))
        reply_age = _age(state.get("last_reply_age"))
        check_server = ("on %s run multis_admin -P -m %s: the group must have an allow list that contains this "
                        "host's address (may_join in multicast_proxy_groups) and its server port must be %s; "
                        "'subscriptions: ... refused:' there names the reason"
                        % (entry.get("server_ip"), entry.get("group_ip"), entry.get("server_port")))
        if state.get("state") == "joining":
            if state_age is None:
                # A daemon that does not say since when: no answer at all after several JOINs.
                if counters.get("acks") or (counters.get("joins_sent") or 0) < 4:
                    continue
                challenged = bool(counters.get("challenges"))
            elif state_age < DYNAMIC_PATIENCE:
                continue
            else:
                challenged = state.get("last_reply") == "challenge" and reply_age is not None \
                    and reply_age <= state_age
            since = " for %.1f s" % state_age if state_age is not None else ""
            if challenged:
                findings.append(_finding(
                    "dynamic-not-subscribed", "error", subject,
                    "a local application joined %s, but the subscription to server %s is not acknowledged%s: the "
                    "server challenged it and never acknowledged the JOIN that echoed the cookie (joins_sent=%s, "
                    "challenges=%s, acks=%s)" % (group, server, since, counters.get("joins_sent"),
                                                 counters.get("challenges"), counters.get("acks")),
                    "the server admits a member only when a JOIN echoes the cookie it sent to that address and "
                    "port: a NAT or load balancer that changes this host's source port between messages makes "
                    "every cookie wrong (bad_cookie on the server), and a lost acknowledgement looks the same; "
                    "until an ACK arrives the server sends this host nothing",
                    "%s; look at bad_cookie there, and send subscriptions to the server's own address and port "
                    "without a NAT that rewrites ports in between" % check_server, affects))
            else:
                findings.append(_finding(
                    "dynamic-not-subscribed", "error", subject,
                    "a local application joined %s, but server %s has not answered its subscription%s (no "
                    "challenge, joins_sent=%s): the server does not see it or refuses it silently%s"
                    % (group, server, since, counters.get("joins_sent"),
                       "; this client dropped answers it could not match or verify: %s" % dropped if dropped
                       else ""),
                    "the server answers only a JOIN that passed every check (a group with allow on that port, the "
                    "server port, the fleet key, an address in allow): a refused JOIN is counted there "
                    "(not_allowed, wrong_port, unknown_group, auth_*, rate_limited) and not answered, and a "
                    "firewall or security group that drops UDP %s to the server, or the server's answer back, "
                    "looks the same; the server sends nothing to a host that is not a member"
                    % entry.get("server_port"),
                    "%s; allow UDP %s from this host to the server and back (security groups, the server's host "
                    "firewall); with keys, the same auth_keys.json on both hosts" % (check_server,
                                                                                     entry.get("server_port")),
                    affects))
        elif state.get("state") == "refused":
            reason = state.get("refusal") or "no reason given"
            findings.append(_finding(
                "dynamic-refused", "error", subject,
                "a local application joined %s, but server %s refused the subscription (%s; refused=%s)"
                % (group, server, reason, counters.get("refused")),
                "full: the group already has its maximum of dynamic members (max_members), so the server admits "
                "no more and sends this host nothing; the client keeps asking and is admitted when one leaves"
                if reason == "full" else "the server admits no member while it refuses it",
                "raise max_members of the group on %s (multis_admin -A -m %s -p PORT --max-members N, up to "
                "1024; max_members in multicast_proxy_groups), or let fewer hosts subscribe"
                % (entry.get("server_ip"), entry.get("group_ip")) if reason == "full" else check_server,
                affects))
        elif state.get("state") == "subscribed":
            ack_age = _age(state.get("ack_age"))
            lease = _age(state.get("lease")) or (_age(state.get("refresh")) or 0.5) * 3
            if ack_age is None or ack_age <= lease:
                continue
            findings.append(_finding(
                "dynamic-lease-expired", "error", subject,
                "the subscription of %s to server %s was last acknowledged %.1f s ago, longer than its lease of "
                "%.1f s: the server has dropped this host from the group" % (group, server, ack_age, lease),
                "the client refreshes every lease / 3 and the server acknowledges each refresh; without an "
                "acknowledgement for a whole lease the refreshes do not reach the server (it is down, the "
                "network or a firewall drops UDP %s), or its answers do not come back, and its lease check "
                "removed the member: no copies come" % entry.get("server_port"),
                "check that the relay server on %s runs (multis_admin -P -m %s lists this host with joined_by "
                "subscription once it is back) and that UDP %s passes both ways between the hosts"
                % (entry.get("server_ip"), entry.get("group_ip"), entry.get("server_port")), affects))


def _rules_dynamic_server(server_stats, findings):
    """Subscriptions the server refused, by reason; members whose leases expired; ports it cannot take them on."""
    if not isinstance(server_stats, dict):
        return
    status = server_stats.get("subscriptions")
    status = status if isinstance(status, dict) else {}
    dynamic = [g for g in server_stats.get("groups") or [] if isinstance(g, dict) and isinstance(g.get("dynamic"),
                                                                                                 dict)]
    for error in status.get("errors") or []:
        findings.append(_finding(
            "dynamic-port-not-bound", "error", _DAEMONS["server"],
            "the relay server takes no subscriptions on a port: %s" % error,
            "the groups with allow on that port admit no dynamic member: their subscriptions are never read",
            "stop what holds the port on this host (a relay client listening on the same port cannot run next to "
            "such a group), or give the group another server_port; the server retries every 30 s",
            [("server", g.get("group_ip")) for g in dynamic]))
    refusals = status.get("refusals")
    refusals = refusals if isinstance(refusals, dict) else {}
    refused_sources = status.get("refused_sources")
    refused_sources = refused_sources if isinstance(refused_sources, dict) else {}
    allow = "; ".join("%s: allow %s" % (g.get("group_ip"), ",".join(g["dynamic"].get("allow") or []) or "none")
                      for g in dynamic)
    for reason in sorted(refusals, key=lambda r: (SEVERITIES.index(_REFUSALS.get(r, ("warning",))[0]), r)):
        count = refusals[reason]
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            continue
        severity, why, fix = _REFUSALS.get(reason, ("warning", "the server refused these subscriptions",
                                                    "the log names each source and the reason"))
        sources = [item for item in (refused_sources.get(reason) or []) if isinstance(item, dict)]
        named = ", ".join("%s (%s)" % (item.get("source"), item.get("count")) for item in sources)
        findings.append(_finding(
            "dynamic-refusals", severity, "subscriptions %s" % reason,
            "the relay server refused %d subscription messages as %s since it started%s%s"
            % (count, reason, "; the last sources: %s" % named if named else "",
               " (%s)" % allow if allow and reason == "not_allowed" else ""),
            why, fix, [("server", g.get("group_ip")) for g in dynamic] or [("server", "*")]))
    for group in dynamic:
        info = group["dynamic"]
        events = info.get("events") if isinstance(info.get("events"), dict) else {}
        expiries = events.get("expiries")
        if not isinstance(expiries, int) or expiries <= 0:
            continue
        members = set(m.get("member_ip") for m in info.get("members") or [] if isinstance(m, dict))
        expired = []
        for gone in info.get("departed") or []:
            if isinstance(gone, dict) and gone.get("left_by") == "expired" and gone.get("member_ip") not in expired:
                expired.append(gone.get("member_ip"))
        back = [ip for ip in expired if ip in members]
        away = [ip for ip in expired if ip not in members]
        named = []
        if away:
            named.append("gone: %s" % ", ".join(away))
        if back:
            named.append("subscribed again: %s" % ", ".join(back))
        findings.append(_finding(
            "dynamic-lease-expired", "warning", group.get("group_ip"),
            "%d dynamic members of %s left because their lease expired (no refresh for %s s), not by a leave%s"
            % (expiries, group.get("group_ip"), info.get("lease"), "; of the last departures, %s" % "; ".join(named)
               if named else ""),
            "a member refreshes every lease / 3 while its application is joined and sends a leave when it stops: "
            "a lease runs out when the member died or lost its network, or its refreshes stopped arriving "
            "(a firewall, loss); a member that subscribed again missed copies in between",
            "on the members named, check multic_monitord runs and multic_admin -P (dynamic ... subscribed); "
            "check UDP %s from them to this host; on a lossy network a longer lease (--lease SECONDS)"
            % group.get("server_port"), [("server", group.get("group_ip"))]))


# Which causes can explain each symptom.  A client that got nothing from its
# server is not explained by a wrong join on the client (that loses datagrams
# after they arrived), so the pairs are explicit rather than "same group".
_EXPLAINED_BY = {
    "server-no-input": ("join-interface-mismatch", "source-interface-not-joined", "server-join-incomplete",
                        "no-multicast-route", "firewall-blocks-group-port",
                        "igmp-max-memberships", "server-group-error", "interface-down", "interface-missing",
                        "port-not-shareable", "source-ttl-zero", "no-route-for-group", "config-invalid"),
    "server-group-error": ("igmp-max-memberships", "interface-down", "interface-missing", "no-route-for-group",
                           "port-not-shareable"),
    "client-no-input": ("firewall-blocks-server-port", "rp-filter-strict", "client-listen-error", "config-invalid",
                        "auth-required-no-keys", "dynamic-not-subscribed", "dynamic-refused",
                        "dynamic-lease-expired"),
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


def _apply(findings, rule, *inputs):
    """Run one rule on the inputs; a rule that fails on data it did not expect becomes a finding of its
    own, and the other rules still run (a doctor that crashes tells the operator nothing)."""
    try:
        rule(*(inputs + (findings,)))
    except Exception as exc:  # pylint: disable=broad-except
        findings.append(_finding(
            "doctor-rule-failed", "warning", "the doctor",
            "the check %s failed on this host's data: %s: %s" % (rule.__name__.lstrip("_"), type(exc).__name__, exc),
            "what it looks for was not checked; the other findings stand",
            "report it with the output of multis_admin -P --json and multic_admin -P --json (they show the "
            "data the check read)"))


def diagnose(facts, server_config=None, client_config=None, server_stats=None, client_stats=None,
             services=None, firewall=None, port_probes=None, config_errors=None, source_interfaces=None):
    """Apply every rule; return the findings, errors first.

    ``server_config``/``client_config``: validated relay configs (or None).
    ``server_stats``/``client_stats``: the ``-P --json`` replies (None when the
    daemon is down).  ``services``: {"server"|"client": {"installed", "running",
    "error"}}.  ``firewall``: {"format", "text"} or a list of them, format nft-json,
    iptables-save, firewalld-list-all (``firewall-cmd --list-all``) or ufw-status (``ufw status verbose``).
    ``port_probes``: results of probe_port_shareable with "group", "port", "side".
    ``config_errors``: {"server"|"client": ConfigError text} for a config file
    that does not validate (its config is then None).
    ``source_interfaces``: {group_ip: {interface: datagrams}} of the server's
    groups seen leaving this host in a short capture (None: not observed).
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
    for group_ip, counters in server_counters.items():
        if counters["interfaces"] and interfaces["server"].get(group_ip, {}).get("source") in ("all", "config"):
            interfaces["server"][group_ip] = {"interfaces": counters["interfaces"], "source": "relay"}
    used = {}
    for side in ("server", "client"):
        for group_ip, choice in interfaces[side].items():
            for interface in choice["interfaces"]:
                used.setdefault(interface, set()).add((side, group_ip))
    findings = []
    _apply(findings, _rules_config_errors, config_errors)
    _apply(findings, _rules_services, services, server_config, client_config)
    _apply(findings, _rules_relay_errors, server_counters, client_stats)
    _apply(findings, _rules_auth, server_stats, client_stats)
    _apply(findings, _rules_legacy_tags, server_stats, client_stats)
    _apply(findings, _rules_metrics, server_stats, client_stats)
    _apply(findings, _rules_source_port, server_stats, client_stats)
    _apply(findings, _rules_dynamic_client, client_stats)
    _apply(findings, _rules_dynamic_server, server_stats)
    _apply(findings, _rules_interfaces, host, used)
    _apply(findings, _rules_routes, host, interfaces)
    _apply(findings, _rules_join_interface, host, interfaces, server_counters)
    _apply(findings, _rules_source_interface, interfaces, source_interfaces, server_counters)
    _apply(findings, _rules_memberships, host, server_config, client_config)
    _apply(findings, _rules_rp_filter, host, client_config)
    _apply(findings, _rules_ports, port_probes)
    _apply(findings, _rules_firewall, host, interfaces, server_config, client_config, firewall)
    _apply(findings, _rules_groups, server_config, client_config)
    _apply(findings, _rules_ttl, server_config, client_config, server_counters)
    _apply(findings, _rules_counters, host, interfaces, server_config, client_config, server_counters,
           client_counters, services)
    _apply(findings, _rules_local_receivers, host, client_config)
    _apply(findings, _rules_source_specific, host, client_config)
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
