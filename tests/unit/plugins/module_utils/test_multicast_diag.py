# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's facts parsing (on fake /proc trees) and rules (on synthetic facts)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket

import pytest

from ansible_collections.multicast.proxy.plugins.module_utils import multicast_diag as diag

GROUP = "239.7.7.7"


# ------------------------------------------------------------ fake /proc trees

def hexip(address):
    return diag.ip_to_kernel_hex(address)


def route_line(interface, destination, prefixlen, gateway=None, metric=0):
    mask = socket.inet_ntoa(((0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF).to_bytes(4, "big")) if prefixlen else "0.0.0.0"
    flags = 0x1 | (0x2 if gateway else 0)
    return "%s\t%s\t%s\t%04X\t0\t0\t%d\t%s\t0\t0\t0" % (
        interface, hexip(destination), hexip(gateway or "0.0.0.0"), flags, metric, hexip(mask))


def write_tree(root, interfaces, routes, igmp, udp, max_memberships=20, rp_filter=None):
    """A minimal /proc + /sys tree as the kernel lays it out."""
    def put(relative, text):
        path = os.path.join(str(root), relative)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path))
        with open(path, "w") as handle:
            handle.write(text)

    for name, index, flags, operstate in interfaces:
        put("sys/class/net/%s/flags" % name, "0x%x\n" % flags)
        put("sys/class/net/%s/ifindex" % name, "%d\n" % index)
        put("sys/class/net/%s/operstate" % name, operstate + "\n")
    put("proc/net/route", "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        + "\n".join(routes) + "\n")
    put("proc/net/igmp", "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n" + igmp)
    put("proc/net/udp", "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode ref pointer drops\n" + udp)
    put("proc/net/dev", "Inter-|   Receive\n face |bytes    packets errs drop fifo frame compressed multicast|\n"
        + "".join("%6s: 100 1 0 0 0 0 0 7 100 1 0 0 0 0 0 0\n" % i[0] for i in interfaces))
    put("proc/net/netstat", "IpExt: InMcastPkts OutMcastPkts\nIpExt: 5 9\n")
    put("proc/sys/net/ipv4/igmp_max_memberships", "%d\n" % max_memberships)
    for name, value in (rp_filter or {"all": 0}).items():
        put("proc/sys/net/ipv4/conf/%s/rp_filter" % name, "%d\n" % value)


@pytest.fixture
def two_nic_tree(tmp_path):
    write_tree(
        tmp_path,
        interfaces=[("lo", 1, 0x49, "unknown"), ("eth0", 2, 0x1043, "up"), ("eth1", 3, 0x1043, "up")],
        routes=[route_line("eth0", "0.0.0.0", 0, gateway="10.0.0.254"),
                route_line("eth0", "10.0.0.0", 24), route_line("eth1", "10.1.0.0", 24),
                route_line("eth1", "224.0.0.0", 4, metric=5)],
        igmp=("1\tlo        :     1      V3\n\t\t\t\t%s     1 0:00000000\t\t0\n"
              "2\teth0      :     2      V3\n\t\t\t\t%s     1 0:00000000\t\t0\n"
              "\t\t\t\t%s     2 0:00000000\t\t0\n" % (hexip("224.0.0.1"), hexip("224.0.0.1"), hexip(GROUP))),
        udp=("  1: %s:B798 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 "
             "0000000000000000 3\n" % hexip(GROUP)),
        rp_filter={"all": 0, "eth1": 1},
    )
    return tmp_path


def test_fake_tree_is_read_like_netstat_and_route(two_nic_tree):
    facts = diag.collect_facts(str(two_nic_tree), ipv4_by_index={2: ["10.0.0.5/24"], 3: ["10.1.0.5/24"]})
    eth0 = [i for i in facts["interfaces"] if i["name"] == "eth0"][0]
    assert eth0["flags"] == ["UP", "BROADCAST", "RUNNING", "MULTICAST"]
    assert eth0["ipv4"] == ["10.0.0.5/24"] and eth0["rx_multicast"] == 7
    lo = [i for i in facts["interfaces"] if i["name"] == "lo"][0]
    assert lo["loopback"] and not lo["multicast"]
    assert {"interface": "eth0", "index": 2, "group": GROUP, "users": 2} in facts["memberships"]
    assert facts["udp_sockets"] == [{"local_address": GROUP, "local_port": 0xB798, "remote_address": "0.0.0.0",
                                     "remote_port": 0, "uid": 0, "inode": 4242, "drops": 3}]
    assert facts["multicast_routes"] == [{"interface": "eth1", "destination": "224.0.0.0", "prefixlen": 4,
                                          "gateway": None, "metric": 5}]
    assert facts["igmp_max_memberships"] == 20
    assert facts["rp_filter"] == {"all": 0, "eth1": 1}
    assert facts["ip_counters"] == {"InMcastPkts": 5, "OutMcastPkts": 9}


def test_route_lookup_prefers_the_longest_prefix_then_the_lowest_metric(two_nic_tree):
    facts = diag.collect_facts(str(two_nic_tree), ipv4_by_index={})
    assert diag.route_lookup(facts["routes"], GROUP)["interface"] == "eth1"
    assert diag.route_lookup(facts["routes"], "8.8.8.8")["interface"] == "eth0"
    routes = [{"interface": "a", "destination": "224.0.0.0", "prefixlen": 4, "gateway": None, "metric": 10},
              {"interface": "b", "destination": "224.0.0.0", "prefixlen": 4, "gateway": None, "metric": 1}]
    assert diag.route_lookup(routes, GROUP)["interface"] == "b"
    assert diag.route_lookup(routes, "10.0.0.1") is None
    assert diag.group_routes(facts, [GROUP]) == {GROUP: {"interface": "eth1", "route": "224.0.0.0/4"}}


def test_a_fake_root_without_addresses_is_refused(two_nic_tree):
    with pytest.raises(diag.FactsError, match="ipv4_by_index"):
        diag.collect_facts(str(two_nic_tree))


def test_garbage_igmp_is_a_facts_error():
    with pytest.raises(diag.FactsError, match="igmp"):
        diag.parse_proc_igmp("Idx\tDevice\n\t\t\t\tE0000001\n")


def test_live_namespace_has_loopback_with_its_address():
    facts = diag.collect_facts()
    lo = [i for i in facts["interfaces"] if i["name"] == "lo"][0]
    assert "127.0.0.1/8" in lo["ipv4"]


def test_port_probe_sees_a_socket_without_reuseaddr():
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        assert diag.probe_port_shareable("127.0.0.1", port)["shareable"] is False
    finally:
        holder.close()
    assert diag.probe_port_shareable("127.0.0.1", port) == {"shareable": True, "error": None}


# ------------------------------------------------------------ synthetic facts

def interface(name, index, ipv4=(), up=True, multicast=True, loopback=False):
    return {"name": name, "index": index, "flags": [], "up": up, "multicast": multicast, "loopback": loopback,
            "operstate": "up" if up else "down", "ipv4": list(ipv4), "rx_multicast": 0}


def route(name, destination, prefixlen, metric=0):
    return {"interface": name, "destination": destination, "prefixlen": prefixlen, "gateway": None, "metric": metric}


def make_facts(second_nic=False, multicast_route=None, memberships=(), max_memberships=20, rp_filter=None):
    interfaces = [interface("lo", 1, ["127.0.0.1/8"], multicast=False, loopback=True),
                  interface("eth0", 2, ["10.0.0.5/24"])]
    routes = [route("eth0", "0.0.0.0", 0), route("eth0", "10.0.0.0", 24)]
    if second_nic:
        interfaces.append(interface("eth1", 3, ["10.1.0.5/24"]))
        routes.append(route("eth1", "10.1.0.0", 24))
    if multicast_route:
        routes.append(route(multicast_route, "224.0.0.0", 4))
    return {
        "interfaces": interfaces,
        "memberships": [{"interface": i, "index": 0, "group": g, "users": 1} for i, g in memberships],
        "udp_sockets": [],
        "routes": routes,
        "multicast_routes": diag.multicast_routes(routes),
        "igmp_max_memberships": max_memberships,
        "rp_filter": rp_filter or {"all": 0},
        "mc_forwarding": {},
        "ip_counters": {"OutMcastPkts": 0},
    }


def server_config(interface_name=None, group=GROUP):
    entry = {"group_ip": group, "server_port": 47001, "group_port": 47000, "member_array": ["10.0.0.9"]}
    if interface_name:
        entry["interface"] = interface_name
    return {"multi_group_array": [entry]}


def client_config(interface_name=None, group=GROUP):
    cfg = {"multi_server_info_array": [{"server_ip": "10.0.0.1", "server_port": 47001, "group_ip": group,
                                        "group_port": 47000}]}
    if interface_name:
        cfg["interface"] = interface_name
    return cfg


def server_stats(rx_packets=10, loop=0, error=""):
    return {"side": "server", "groups": [{"group_ip": GROUP, "group_port": 47000, "rx_packets": rx_packets,
                                          "drops": {"loop": loop}, "error": error, "members": []}]}


def client_stats(rx_packets=10, interfaces=()):
    return {"side": "client", "drops": {}, "listen_errors": [],
            "entries": [{"server_ip": "10.0.0.1", "server_port": 47001, "group_ip": GROUP, "group_port": 47000,
                         "rx_packets": rx_packets, "delivered_packets": rx_packets,
                         "interfaces": list(interfaces)}]}


RUNNING = {"server": {"installed": True, "running": True}, "client": {"installed": True, "running": True}}


def serious(findings):
    return sorted((f["id"], f["severity"]) for f in findings if f["severity"] != "info")


def test_healthy_host_has_no_error_or_warning():
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             server_stats(), client_stats(interfaces=["eth0"]), RUNNING)
    assert serious(findings) == []
    assert [f["id"] for f in findings] == ["ttl-scope"]


def test_join_on_eth0_while_relay_delivers_on_eth1_is_an_error():
    facts = make_facts(second_nic=True, multicast_route="eth0", memberships=[("eth0", GROUP)])
    findings = diag.diagnose(facts, client_config=client_config("eth1"), client_stats=client_stats(),
                             services=RUNNING)
    assert serious(findings) == [("join-interface-mismatch", "error")]
    assert "joined %s on eth0" % GROUP in findings[0]["what"]
    assert '"interface": "eth0"' in findings[0]["fix"]


def test_client_following_the_joins_has_no_mismatch():
    facts = make_facts(second_nic=True, multicast_route="eth0", memberships=[("eth0", GROUP), ("eth1", GROUP)])
    findings = diag.diagnose(facts, client_config=client_config(), client_stats=client_stats(
        interfaces=["eth0", "eth1"]), services=RUNNING)
    assert serious(findings) == []


def test_server_pinned_off_the_route_with_no_input_is_an_error_that_explains_the_silence():
    facts = make_facts(second_nic=True, multicast_route="eth1")
    findings = diag.diagnose(facts, server_config("eth0"), server_stats=server_stats(rx_packets=0),
                             services=RUNNING)
    assert serious(findings) == [("join-interface-mismatch", "error")]
    assert findings[0]["evidence"] and "received nothing" in findings[0]["evidence"][0]


def test_server_pinned_off_the_route_that_receives_is_fine():
    facts = make_facts(second_nic=True, multicast_route="eth1")
    assert serious(diag.diagnose(facts, server_config("eth0"), server_stats=server_stats(), services=RUNNING)) == []


def test_relay_interface_without_multicast_flag_is_a_warning_and_others_a_note():
    facts = make_facts(second_nic=True, multicast_route="eth0")
    for item in facts["interfaces"]:
        if item["name"] in ("eth0", "eth1"):
            item["multicast"] = False
    findings = diag.diagnose(facts, server_config(), server_stats=server_stats(), services=RUNNING)
    assert serious(findings) == [("interface-no-multicast", "warning")]
    assert [(f["subject"], f["severity"]) for f in findings if f["id"] == "interface-no-multicast"] == [
        ("eth0", "warning"), ("eth1", "info")]


def test_down_and_missing_relay_interfaces_are_errors():
    facts = make_facts()
    facts["interfaces"][1]["up"] = False
    assert ("interface-down", "error") in serious(diag.diagnose(facts, server_config()))
    findings = diag.diagnose(make_facts(), server_config("eth9"))
    assert serious(findings) == [("interface-missing", "error")]
    assert "eth0" in findings[0]["fix"]


def test_an_unused_down_interface_is_not_reported():
    facts = make_facts()
    facts["interfaces"].append(interface("ifb0", 9, up=False, multicast=False))
    assert serious(diag.diagnose(facts, server_config())) == []


def test_two_nics_without_multicast_route():
    findings = diag.diagnose(make_facts(second_nic=True), server_config(), server_stats=server_stats(0),
                             services=RUNNING)
    assert serious(findings) == [("no-multicast-route", "warning")]
    assert "eth0, eth1" in findings[0]["what"] and "224.0.0.0/4" in findings[0]["fix"]
    # The silent server is the symptom: attached, not reported twice.
    assert findings[0]["evidence"]
    with_route = diag.diagnose(make_facts(second_nic=True, multicast_route="eth1"), server_config())
    assert serious(with_route) == []
    pinned = diag.diagnose(make_facts(second_nic=True), server_config("eth0"))
    assert [(f["id"], f["severity"]) for f in pinned] == [("no-multicast-route", "info")]


def test_no_route_at_all_is_an_error():
    facts = make_facts()
    facts["routes"] = [route("eth0", "10.0.0.0", 24)]
    assert serious(diag.diagnose(facts, server_config())) == [("no-route-for-group", "error")]


def test_igmp_max_memberships():
    findings = diag.diagnose(make_facts(max_memberships=0), server_config(),
                             server_stats=server_stats(0, error="cannot join: No buffer space available"),
                             services=RUNNING)
    assert serious(findings) == [("igmp-max-memberships", "error")]
    assert any("No buffer space" in line for line in findings[0]["evidence"])
    many = {"multi_server_info_array": [{"server_ip": "10.0.0.1", "server_port": 47001,
                                         "group_ip": "239.7.7.%d" % n, "group_port": 47000} for n in range(3)]}
    assert serious(diag.diagnose(make_facts(max_memberships=2), client_config=many)) == [
        ("igmp-max-memberships", "warning")]


def test_strict_rp_filter_matters_only_with_several_nics():
    facts = make_facts(second_nic=True, multicast_route="eth0", rp_filter={"all": 1},
                       memberships=[("eth0", GROUP)])
    findings = diag.diagnose(facts, client_config=client_config())
    assert serious(findings) == [("rp-filter-strict", "warning")]
    assert "rp_filter=2" in findings[0]["fix"]
    single = make_facts(rp_filter={"all": 1}, memberships=[("eth0", GROUP)])
    assert serious(diag.diagnose(single, client_config=client_config())) == []


def test_port_held_without_reuseaddr():
    probes = [{"side": "client", "group": GROUP, "port": 47000, "shareable": False, "error": "Address in use"}]
    findings = diag.diagnose(make_facts(), port_probes=probes)
    assert serious(findings) == [("port-not-shareable", "error")]
    assert findings[0]["subject"] == GROUP + ":47000" and "SO_REUSEADDR" in findings[0]["fix"]


def test_link_local_group_is_a_warning_naming_the_protocol():
    findings = diag.diagnose(make_facts(), server_config(group="224.0.0.251"))
    assert serious(findings) == [("link-local-group", "warning")]
    assert "mDNS" in findings[0]["what"]


def test_source_sending_with_ttl_zero():
    findings = diag.diagnose(make_facts(), server_config(), server_stats=server_stats(0, loop=50),
                             services=RUNNING)
    assert ("source-ttl-zero", "warning") in serious(findings)
    # A host that also runs the client of the group expects loop drops.
    both = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                         server_stats(5, loop=50), client_stats(), RUNNING)
    assert serious(both) == []


def test_server_and_client_without_input_are_warnings():
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             server_stats(0), client_stats(0), RUNNING)
    assert serious(findings) == [("client-no-input", "warning"), ("server-no-input", "warning")]
    server = [f for f in findings if f["id"] == "server-no-input"][0]
    assert "IP_MULTICAST_LOOP 1" in server["fix"] and "no multicast at all" in server["what"]


def test_relay_not_running_and_not_installed():
    stopped = {"server": {"installed": True, "running": False, "error": "no answer"}}
    findings = diag.diagnose(make_facts(), server_config(), services=stopped)
    assert serious(findings) == [("relay-not-running", "error")]
    assert "systemctl start multis_monitord.service" in findings[0]["fix"]
    missing = {"client": {"installed": False, "running": False}}
    assert serious(diag.diagnose(make_facts(), client_config=client_config(), services=missing)) == [
        ("relay-not-installed", "error")]
    # No config: not a relay host, nothing to say about the service.
    assert serious(diag.diagnose(make_facts(), services=stopped)) == []


def test_invalid_config_is_a_finding():
    findings = diag.diagnose(make_facts(), config_errors={"client": "multi_server_info_array[0].server_ip: bad"})
    assert serious(findings) == [("config-invalid", "error")]
    assert "multic_admin --check-config" in findings[0]["fix"]


def nft_ruleset(rules, policy="accept", chain_type="filter"):
    items = [{"metainfo": {"json_schema_version": 1}},
             {"table": {"family": "inet", "name": "fw"}},
             {"chain": {"family": "inet", "table": "fw", "name": "input", "type": chain_type, "hook": "input",
                        "prio": 0, "policy": policy}},
             {"chain": {"family": "inet", "table": "fw", "name": "relay"}}]
    for handle, (chain, expr) in enumerate(rules, start=1):
        items.append({"rule": {"family": "inet", "table": "fw", "chain": chain, "handle": handle, "expr": expr}})
    return {"format": "nft-json", "text": json.dumps({"nftables": items})}


def dport(port, op="=="):
    return {"match": {"op": op, "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}}


def test_nft_drop_of_the_server_port_on_the_client():
    firewall = nft_ruleset([("input", [dport({"set": [53, 47001]}), {"counter": None}, {"drop": None}])])
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), client_config=client_config(),
                             client_stats=client_stats(0), services=RUNNING, firewall=firewall)
    assert serious(findings) == [("firewall-blocks-server-port", "error")]
    assert "table inet fw chain input" in findings[0]["what"]
    assert any("received nothing" in line for line in findings[0]["evidence"])


def test_nft_verdicts_follow_jumps_policies_and_established_rules():
    packet = {"l4proto": "udp", "saddr": "10.0.0.1", "daddr": "10.0.0.5", "dport": 47001, "iifname": "eth0",
              "ct_state": "new", "nfproto": "ipv4"}
    jump = nft_ruleset([("input", [{"jump": {"target": "relay"}}]),
                        ("relay", [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                              "right": {"prefix": {"addr": "10.0.0.0", "len": 24}}}},
                                   {"reject": None}])])
    assert diag.firewall_verdict(jump, packet)[0] == "reject"
    established_only = nft_ruleset([("input", [{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                                                          "right": {"set": ["established", "related"]}}},
                                               {"accept": None}])], policy="drop")
    assert diag.firewall_verdict(established_only, packet)[1].startswith("policy drop")
    allowed = nft_ruleset([("input", [dport({"range": [47000, 47010]}), {"accept": None}])], policy="drop")
    assert diag.firewall_verdict(allowed, packet) is None
    other_port = nft_ruleset([("input", [dport(47001, "!="), {"drop": None}])])
    assert diag.firewall_verdict(other_port, packet) is None
    unknown = nft_ruleset([("input", [{"xt": {"type": "match", "name": "addrtype"}}, {"drop": None}])])
    assert diag.firewall_verdict(unknown, packet) is None
    nat_chain = nft_ruleset([("input", [{"drop": None}])], chain_type="nat")
    assert diag.firewall_verdict(nat_chain, packet) is None


def test_iptables_save_rules():
    packet = {"l4proto": "udp", "saddr": "10.0.0.1", "daddr": "10.0.0.5", "dport": 47001, "iifname": "eth0",
              "ct_state": "new", "nfproto": "ipv4"}

    def verdict(text):
        return diag.firewall_verdict({"format": "iptables-save", "text": text}, packet)

    assert verdict("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 47001 -j DROP\nCOMMIT\n")[0] == "drop"
    assert verdict("*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
                   "COMMIT\n") == ("drop", "iptables filter INPUT policy DROP")
    assert verdict("*filter\n:INPUT DROP [0:0]\n-A INPUT -i eth+ -p udp -m multiport --dports 47000:47002 "
                   "-m comment --comment \"relay frames\" -j ACCEPT\nCOMMIT\n") is None
    assert verdict("*filter\n:INPUT ACCEPT [0:0]\n:SVC - [0:0]\n-A INPUT -j SVC\n"
                   "-A SVC ! -s 10.0.0.0/24 -j DROP\n-A SVC -s 10.0.0.1/32 -p udp -j REJECT\nCOMMIT\n")[0] == "reject"
    assert verdict("*nat\n:INPUT DROP [0:0]\nCOMMIT\n") is None


def test_unknown_firewall_format_is_refused():
    with pytest.raises(diag.FactsError, match="nft-json or iptables-save"):
        diag.firewall_verdict({"format": "pf", "text": "block all"}, {})
    with pytest.raises(diag.FactsError, match="nft -j list ruleset"):
        diag.firewall_verdict({"format": "nft-json", "text": "table inet x {}"}, {})


def test_report_is_readable():
    findings = diag.diagnose(make_facts(max_memberships=0), server_config(), services=RUNNING)
    report = diag.format_report(findings, "doctor")
    assert report.splitlines()[0] == "doctor: 1 error(s), 0 warning(s), 0 note(s)"
    assert "[ERROR] igmp-max-memberships (net.ipv4.igmp_max_memberships)" in report
    assert "  fix:  sysctl -w net.ipv4.igmp_max_memberships=256" in report
    assert diag.format_report([], "doctor").splitlines() == [
        "doctor: 0 error(s), 0 warning(s), 0 note(s)", "  no problem found"]


def test_symptoms_fold_only_into_causes_that_explain_them():
    # A wrong join on the client loses datagrams after they arrived: it does
    # not explain a client that received nothing from its server.
    facts = make_facts(second_nic=True, multicast_route="eth0", memberships=[("eth0", GROUP)])
    findings = diag.diagnose(facts, client_config=client_config("eth1"), client_stats=client_stats(0),
                             services=RUNNING)
    assert serious(findings) == [("client-no-input", "warning"), ("join-interface-mismatch", "error")]
    assert all(f["evidence"] == [] for f in findings)


def test_a_group_error_without_known_cause_carries_the_silence():
    findings = diag.diagnose(make_facts(), server_config(), server_stats=server_stats(0, error="cannot join: boom"),
                             services=RUNNING)
    assert serious(findings) == [("server-group-error", "error")]
    assert "boom" in findings[0]["what"] and "received nothing" in findings[0]["evidence"][0]
