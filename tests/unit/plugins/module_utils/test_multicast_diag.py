# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's rules (on synthetic facts), its report, and how its three files are shared."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import os

from ansible_collections.multicast.proxy.plugins.module_utils import multicast_diag as diag
from ansible_collections.multicast.proxy.plugins.module_utils import multicast_diag_firewall, multicast_diag_kernel
from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag_kernel import multicast_routes
from ansible_collections.multicast.proxy.tests.unit.plugins.module_utils.test_multicast_diag_firewall import (
    dport,
    nft_ruleset,
)

GROUP = "239.7.7.7"


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
        "multicast_routes": multicast_routes(routes),
        "igmp_max_memberships": max_memberships,
        "rp_filter": rp_filter or {"all": 0},
        "mc_forwarding": {},
        "ip_counters": {"OutMcastPkts": 0},
    }


def server_config(interface_name=None, group=GROUP, join=None):
    entry = {"group_ip": group, "server_port": 47001, "group_port": 47000, "member_array": ["10.0.0.9"]}
    if interface_name:
        entry["interface"] = interface_name
    cfg = {"multi_group_array": [entry]}
    if join is not None:
        cfg["join_interfaces"] = join
    return cfg


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


def test_a_relay_refusing_without_its_required_keys_is_an_error():
    refusing = {"required": True, "keys": False, "refusing": True, "error": "/etc/multicast/auth_keys.json does "
                "not exist", "load_failures": 1}
    stats = dict(server_stats(), auth_status=refusing)
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             stats, client_stats(interfaces=["eth0"]), RUNNING)
    assert serious(findings) == [("auth-required-no-keys", "error")]
    (finding,) = [f for f in findings if f["id"] == "auth-required-no-keys"]
    assert finding["subject"] == "multis_monitord" and "auth_keys.json does not exist" in finding["what"]
    assert "multis_admin --check-auth" in finding["fix"] and "server_reload_list reload" in finding["fix"]


def test_a_keyless_client_delivering_tagged_frames_is_a_warning():
    stats = dict(client_stats(interfaces=["eth0"]), auth_status={"required": False, "keys": False,
                                                                 "refusing": False, "unverified": 12})
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             server_stats(), stats, RUNNING)
    assert serious(findings) == [("auth-tags-unchecked", "warning")]
    assert "12 frames" in [f for f in findings if f["id"] == "auth-tags-unchecked"][0]["what"]
    # With keys, or without tagged frames, nothing is said.
    stats["auth_status"] = {"required": False, "keys": True, "refusing": False, "unverified": 0}
    assert serious(diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                                 server_stats(), stats, RUNNING)) == []


def test_an_unfinished_upgrade_from_legacy_tags_and_a_downgrade_are_findings():
    facts = make_facts(memberships=[("eth0", GROUP)])
    legacy_server = dict(server_stats(), auth_status={"required": False, "keys": True, "refusing": False,
                                                      "legacy_tags": True})
    findings = diag.diagnose(facts, server_config(), client_config(), legacy_server, client_stats(), RUNNING)
    assert serious(findings) == [("legacy-tags-sent", "warning")]
    assert "legacy_tags=false" in [f for f in findings if f["id"] == "legacy-tags-sent"][0]["fix"]
    client = dict(client_stats(), auth_status={"required": False, "keys": True, "refusing": False,
                                               "unverified": 0, "accepted_unbound": 40, "refused_unbound": 3})
    findings = diag.diagnose(facts, server_config(), client_config(), server_stats(), client, RUNNING)
    assert serious(findings) == [("legacy-tags-accepted", "warning"), ("legacy-tags-refused", "error")]
    assert "40 frames" in [f for f in findings if f["id"] == "legacy-tags-accepted"][0]["what"]
    assert "3 frames" in [f for f in findings if f["id"] == "legacy-tags-refused"][0]["what"]
    # An upgraded fleet says nothing.
    client["auth_status"].update(accepted_unbound=0, refused_unbound=0)
    assert serious(diag.diagnose(facts, server_config(), client_config(), server_stats(), client, RUNNING)) == []


def test_metrics_configured_but_not_produced_are_warnings():
    not_serving = {"listen": "127.0.0.1:9471", "serving": False, "textfile": "/var/lib/n/m.prom",
                   "error": "cannot listen on 127.0.0.1:9471: Address already in use",
                   "textfile_error": "cannot write /var/lib/n/m.prom: Read-only file system"}
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             dict(server_stats(), metrics=not_serving), client_stats(interfaces=["eth0"]), RUNNING)
    assert serious(findings) == [("metrics-not-serving", "warning"), ("metrics-textfile-failing", "warning")]
    (finding,) = [f for f in findings if f["id"] == "metrics-not-serving"]
    assert finding["subject"] == "multis_monitord" and "Address already in use" in finding["what"]
    assert "multicast_proxy_metrics_server_port" in finding["fix"]
    # Serving on every address is a note about exposure; serving on loopback, or no metrics, says nothing.
    open_to_all = {"listen": "0.0.0.0:9472", "serving": True, "error": None, "textfile": None}
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             server_stats(), dict(client_stats(interfaces=["eth0"]), metrics=open_to_all), RUNNING)
    assert serious(findings) == [] and "metrics-open" in [f["id"] for f in findings]
    quiet = {"listen": "127.0.0.1:9471", "serving": True, "error": None, "textfile": None}
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             dict(server_stats(), metrics=quiet), client_stats(interfaces=["eth0"]), RUNNING)
    assert not [f for f in findings if f["id"].startswith("metrics-")]
    # What a running daemon without metrics reports (nulls), or an older daemon (nothing, or another shape).
    off = {"listen": None, "serving": False, "error": None, "detail": "group", "textfile": None,
           "textfile_error": None}
    for metrics in (off, None, "garbage", {"listen": 9471}):
        findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                                 dict(server_stats(), metrics=metrics),
                                 dict(client_stats(interfaces=["eth0"]), metrics=metrics), RUNNING)
        assert not [f for f in findings if f["id"].startswith("metrics-")], metrics


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
    findings = diag.diagnose(make_facts(second_nic=True), server_config(join="route"), server_stats=server_stats(0),
                             services=RUNNING)
    assert serious(findings) == [("no-multicast-route", "warning")]
    assert "eth0, eth1" in findings[0]["what"] and "224.0.0.0/4" in findings[0]["fix"]
    # The silent server is the symptom: attached, not reported twice.
    assert findings[0]["evidence"]
    with_route = diag.diagnose(make_facts(second_nic=True, multicast_route="eth1"), server_config())
    assert serious(with_route) == []
    pinned = diag.diagnose(make_facts(second_nic=True), server_config("eth0"))
    assert [(f["id"], f["severity"]) for f in pinned] == [("no-multicast-route", "info")]
    # Joined on every interface (the default), the server does not depend on the route.
    joined_everywhere = diag.diagnose(make_facts(second_nic=True), server_config())
    assert [(f["id"], f["severity"]) for f in joined_everywhere] == [("no-multicast-route", "info")]


def test_no_route_at_all_is_an_error():
    facts = make_facts()
    facts["routes"] = [route("eth0", "10.0.0.0", 24)]
    assert serious(diag.diagnose(facts, server_config(join="route"))) == [("no-route-for-group", "error")]
    # join_interfaces "all" (the default) names its interfaces: no route is needed to join.
    assert serious(diag.diagnose(facts, server_config())) == []


def test_the_relay_interfaces_follow_join_interfaces():
    facts = make_facts(second_nic=True)
    server = diag.relay_interfaces(facts, server_config())["server"][GROUP]
    assert server == {"interfaces": ["eth0", "eth1"], "source": "all"}
    listed = diag.relay_interfaces(facts, server_config(join=["10.1.0.5"]))["server"][GROUP]
    assert listed == {"interfaces": ["eth1"], "source": "config"}
    assert diag.relay_interfaces(facts, server_config(join="route"))["server"][GROUP]["source"] == "route"
    # A pinned interface wins; a capture group reads one interface, the route's.
    assert diag.relay_interfaces(facts, server_config("eth1"))["server"][GROUP]["interfaces"] == ["eth1"]
    captured = server_config()
    captured["multi_group_array"][0]["capture"] = True
    assert diag.relay_interfaces(facts, captured)["server"][GROUP] == {"interfaces": ["eth0"], "source": "route"}


def test_a_source_sending_out_of_an_interface_the_relay_did_not_join_is_named():
    facts = make_facts(second_nic=True)
    seen = {GROUP: {"eth1": 40}}
    findings = diag.diagnose(facts, server_config(join="route"), server_stats=server_stats(0), services=RUNNING,
                             source_interfaces=seen)
    assert serious(findings) == [("no-multicast-route", "warning"), ("source-interface-not-joined", "error")]
    (finding,) = [f for f in findings if f["id"] == "source-interface-not-joined"]
    assert "out of eth1 (40 datagrams)" in finding["what"] and "on eth0 only" in finding["what"]
    assert "join_interfaces=eth0,eth1" in finding["fix"] and "IP_MULTICAST_IF to eth0" in finding["fix"]
    # The silent server is the error's evidence, not a finding of its own.
    assert any("received nothing" in line for line in finding["evidence"])
    # What the daemon reports it joined beats the inference from the config.
    stats = server_stats(0)
    stats["groups"][0]["interfaces"] = ["eth0"]
    findings = diag.diagnose(facts, server_config(join=["eth0", "eth1"]), server_stats=stats, services=RUNNING,
                             source_interfaces=seen)
    assert ("source-interface-not-joined", "error") in serious(findings)
    # Joined where the source sends, or nothing observed: no finding.
    for config, observed in ((server_config(), seen), (server_config(join="route"), {GROUP: {"eth0": 5}}),
                             (server_config(join="route"), {GROUP: {}}), (server_config(join="route"), None)):
        findings = diag.diagnose(facts, config, source_interfaces=observed)
        assert "source-interface-not-joined" not in [f["id"] for f in findings], (config, observed)


def test_a_join_the_server_could_not_make_is_a_warning():
    stats = server_stats(10)
    stats["groups"][0].update(interfaces=["eth0"], join_problem="eth7: no interface has this name or address")
    findings = diag.diagnose(make_facts(), server_config(join=["eth0", "eth7"]), server_stats=stats,
                             services=RUNNING)
    assert serious(findings) == [("server-join-incomplete", "warning")]
    assert "eth7: no interface" in findings[0]["what"]


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


def test_the_host_firewall_that_blocks_the_server_port_is_named_with_its_fix():
    from ansible_collections.multicast.proxy.tests.unit.plugins.module_utils.test_multicast_diag_firewall import (
        FIREWALLD_LIST_ALL,
        UFW_STATUS,
    )
    for fmt, text, name, fix in [
            ("firewalld-list-all", FIREWALLD_LIST_ALL, "firewalld", "firewall-cmd --permanent --add-rich-rule="),
            ("ufw-status", UFW_STATUS, "ufw", "ufw allow from 10.0.0.1 to any port 47001 proto udp")]:
        firewall = [{"format": fmt, "text": text}, nft_ruleset([])]
        findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), client_config=client_config(),
                                 client_stats=client_stats(0), services=RUNNING, firewall=firewall)
        assert serious(findings) == [("firewall-blocks-server-port", "error")]
        assert findings[0]["what"].startswith("the host firewall (%s) " % name), findings[0]["what"]
        assert "multicast_proxy_firewall_open: true" in findings[0]["fix"] and fix in findings[0]["fix"]


def test_nft_drop_of_the_server_port_on_the_client():
    firewall = nft_ruleset([("input", [dport({"set": [53, 47001]}), {"counter": None}, {"drop": None}])])
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), client_config=client_config(),
                             client_stats=client_stats(0), services=RUNNING, firewall=firewall)
    assert serious(findings) == [("firewall-blocks-server-port", "error")]
    assert "table inet fw chain input" in findings[0]["what"]
    assert any("received nothing" in line for line in findings[0]["evidence"])


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


# ------------------------------------------------------------ one doctor in three files

def test_callers_of_multicast_diag_still_get_the_facts_and_the_firewall_verdict():
    # files/multicast_proxy/doctor.py and netinfo.py read these through multicast_diag.
    for name in ("FactsError", "collect_facts", "group_routes", "parse_proc_igmp", "parse_proc_route",
                 "route_lookup"):
        assert getattr(diag, name) is getattr(multicast_diag_kernel, name), name
    assert diag.firewall_verdict is multicast_diag_firewall.firewall_verdict
    assert [name for name in diag.__all__ if not hasattr(diag, name)] == []


def _relative_imports(path):
    with open(path) as handle:
        tree = ast.parse(handle.read())
    return set(node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1)


def test_the_relay_package_links_every_file_the_doctor_imports():
    # The relay package imports the same files through symlinks; a file
    # copied instead of linked, or not linked at all, would break or fork the rules.
    module_utils = os.path.dirname(os.path.abspath(diag.__file__))
    package = os.path.normpath(os.path.join(module_utils, "..", "..", "files", "multicast_proxy"))
    wanted, seen = ["multicast_diag"], set()
    while wanted:
        name = wanted.pop()
        seen.add(name)
        wanted.extend(_relative_imports(os.path.join(module_utils, name + ".py")) - seen)
    assert {"multicast_diag_kernel", "multicast_diag_firewall"} <= seen
    for name in sorted(seen):
        link = os.path.join(package, name + ".py")
        assert os.path.islink(link), "%s is not a symlink into plugins/module_utils" % link
        assert os.readlink(link) == "../../plugins/module_utils/%s.py" % name


def test_a_check_that_fails_on_odd_data_is_a_finding_and_the_others_still_run(monkeypatch):
    """A rule that raises must not take the doctor down: the operator gets every other finding."""
    def broken(server_stats, client_stats, findings):
        raise KeyError("entries")
    broken.__name__ = "_rules_auth"
    monkeypatch.setattr(diag, "_rules_auth", broken)
    not_serving = {"listen": "127.0.0.1:9471", "serving": False, "error": "cannot listen", "textfile": None}
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             dict(server_stats(), metrics=not_serving), client_stats(interfaces=["eth0"]), RUNNING)
    (failed,) = [f for f in findings if f["id"] == "doctor-rule-failed"]
    assert failed["severity"] == "warning" and "rules_auth" in failed["what"] and "KeyError" in failed["what"]
    # The rules after the broken one ran.
    assert "metrics-not-serving" in [f["id"] for f in findings]


def test_a_source_port_the_server_cannot_bind_is_an_error_and_refused_frames_a_warning():
    held = {"source_port": 868, "bound_port": 41000,
            "error": "cannot send from UDP port 868: Address already in use; copies leave from port 41000"}
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             dict(server_stats(), sender=held), client_stats(interfaces=["eth0"]), RUNNING)
    assert serious(findings) == [("source-port-not-bound", "error")]
    (finding,) = [f for f in findings if f["id"] == "source-port-not-bound"]
    assert "Address already in use" in finding["what"] and "sport = :868" in finding["fix"]
    stats = client_stats(interfaces=["eth0"])
    stats["drops"] = dict(stats.get("drops") or {}, source_port=7)
    findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                             server_stats(), stats, RUNNING)
    assert serious(findings) == [("client-source-port-refused", "warning")]
    assert "7 frames" in [f for f in findings if f["id"] == "client-source-port-refused"][0]["what"]
    # Bound, nothing refused, or a daemon too old to say: nothing.
    for sender in ({"source_port": 868, "bound_port": 868, "error": ""}, None, "garbage"):
        findings = diag.diagnose(make_facts(memberships=[("eth0", GROUP)]), server_config(), client_config(),
                                 dict(server_stats(), sender=sender), client_stats(interfaces=["eth0"]), RUNNING)
        assert not [f for f in findings if "source-port" in f["id"]]


def source_filter(group, source, include=1, exclude=0, index=2, name="eth0"):
    """A row of /proc/net/mcfilter as parse_proc_mcfilter returns it (the name as the kernel cuts it)."""
    return {"index": index, "interface": name[:6], "group": group, "source": source, "include": include,
            "exclude": exclude}


def source_specific(findings):
    return [f for f in findings if f["id"] == "source-specific-receiver"]


def test_a_source_specific_join_for_a_group_relayed_without_preserve_source_is_an_error():
    facts = dict(make_facts(memberships=[("eth0", GROUP)]), source_filters=[source_filter(GROUP, "10.0.0.1")])
    findings = diag.diagnose(facts, client_config=client_config(), client_stats=client_stats(interfaces=["eth0"]),
                             services=RUNNING)
    assert serious(findings) == [("source-specific-receiver", "error")]
    (finding,) = source_specific(findings)
    assert finding["subject"] == "%s from 10.0.0.1" % GROUP
    assert "for source 10.0.0.1 only" in finding["what"] and "on eth0" in finding["what"]
    assert "from 10.0.0.1 without preserve_source" in finding["what"]
    assert "preserve_source: true" in finding["fix"] and "--preserve-source" in finding["fix"]
    assert finding["affects"] == ["client %s" % GROUP]


def test_preserve_source_at_either_level_or_vrrp_silences_the_source_specific_finding():
    facts = dict(make_facts(memberships=[("eth0", GROUP)]), source_filters=[source_filter(GROUP, "10.0.0.1")])
    top = dict(client_config(), preserve_source=True)
    entry = client_config()
    entry["multi_server_info_array"][0]["preserve_source"] = True
    vrrp = client_config()
    vrrp["multi_server_info_array"][0]["protocol"] = "vrrp"
    for cfg in (top, entry, vrrp):
        assert source_specific(diag.diagnose(facts, client_config=cfg)) == [], cfg


def test_blocked_sources_and_groups_the_client_does_not_relay_are_not_source_specific_joins():
    facts = dict(make_facts(memberships=[("eth0", GROUP)]), source_filters=[
        source_filter(GROUP, "10.0.0.1", include=0, exclude=1), source_filter("232.1.1.1", "10.0.0.1")])
    assert source_specific(diag.diagnose(facts, client_config=client_config())) == []
    # The facts of an older kernel table reader have no source_filters at all.
    assert source_specific(diag.diagnose(make_facts(), client_config=client_config())) == []


def test_with_two_servers_only_the_entries_without_preserve_source_are_named():
    cfg = client_config()
    cfg["multi_server_info_array"].append({"server_ip": "10.0.0.2", "server_port": 47001, "group_ip": GROUP,
                                           "group_port": 47000, "preserve_source": True})
    facts = dict(make_facts(second_nic=True, multicast_route="eth0"), source_filters=[
        source_filter(GROUP, "10.0.0.3"), source_filter(GROUP, "10.0.0.2"),
        source_filter(GROUP, "10.0.0.3", index=3, name="enp0s31f6")])
    facts["interfaces"][2]["name"] = "enp0s31f6"
    (finding,) = source_specific(diag.diagnose(facts, client_config=cfg))
    # 10.0.0.2's own entry keeps its source; a join for another sender may be served by either server.
    assert finding["severity"] == "warning" and finding["subject"] == "%s from 10.0.0.3" % GROUP
    assert "on enp0s31f6, eth0" in finding["what"] and "from 10.0.0.1 without" in finding["what"]


# ------------------------------------------------------------ dynamic members (issue 17)

# What the daemons report, as subscription.Subscriber.as_dict, SubscriptionServer.as_dict and
# DynamicGroup.as_dict build it (tests/relay/unit/test_subscription.py drives those).

def subscriber(state="subscribed", wanted=True, refusal="", state_age=30.0, ack_age=0.2, last_reply="ack",
               last_reply_age=0.2, lease=1.5, joins_sent=61, challenges=1, acks=60, refused=0):
    return {"state": state, "wanted": wanted, "refusal": refusal, "state_age": state_age, "ack_age": ack_age,
            "last_reply": last_reply, "last_reply_age": last_reply_age, "lease": lease,
            "refresh": lease / 3 if lease else 0.5,
            "counters": {"joins_sent": joins_sent, "leaves_sent": 0, "challenges": challenges, "acks": acks,
                         "refused": refused, "unsolicited": 0}}


def dynamic_client_stats(dynamic, rx_packets=0, drops=None):
    stats = client_stats(rx_packets=rx_packets, interfaces=["eth0"])
    stats["entries"][0].update(source_port=None, preserve_source=False, rx_bytes=0, delivered_bytes=0, lost=0,
                               duplicates=0, reordered=0, last_seq=None, dynamic=dynamic)
    stats["drops"] = dict({"malformed": 0, "unknown_server": 0, "auth_bad": 0, "source_port": 0}, **(drops or {}))
    return stats


def dynamic_server_stats(refusals=None, refused_sources=None, expiries=0, departed=(), members=(), errors=()):
    stats = server_stats()
    counts = dict.fromkeys(("malformed", "bad_version", "rate_limited", "unexpected_kind", "unknown_group",
                            "wrong_port", "auth_missing", "auth_unknown_key", "auth_bad", "not_allowed", "bad_cookie",
                            "full"), 0)
    counts.update(refusals or {})
    stats["subscriptions"] = {"refusals": counts, "refused_sources": refused_sources or {}, "ports": [47001],
                              "groups": 1, "members": len(members), "errors": list(errors)}
    stats["groups"][0].update(server_port=47001, dynamic={
        "allow": ["10.0.0.0/24"], "max_members": 256, "lease": 1.5,
        "events": {"joins": 4, "refreshes": 800, "leaves": 1, "expiries": expiries, "challenges": 4, "acks": 804},
        "members": [{"member_ip": ip, "joined_by": "subscription", "since": 1765000000.0, "lease_age": 0.3,
                     "refreshes": 200} for ip in members],
        "departed": [{"member_ip": ip, "left_by": how, "since": 1765000000.0, "left": 1765000100.0,
                      "subscribed_seconds": 100.0, "tx_packets": 5000, "tx_bytes": 900000}
                     for ip, how in departed]})
    return stats


def dynamic_findings(server=None, client=None, memberships=((("eth0", GROUP),))):
    return diag.diagnose(make_facts(memberships=list(memberships)), server_config(), client_config(),
                         server or server_stats(), client or client_stats(interfaces=["eth0"]), RUNNING)


def only(findings, finding_id):
    (finding,) = [f for f in findings if f["id"] == finding_id]
    return finding


def test_a_subscribed_dynamic_entry_and_an_idle_one_are_no_problem():
    assert serious(dynamic_findings(client=dynamic_client_stats(subscriber(), rx_packets=500))) == []
    # No local application joined: not subscribed and nothing received, rightly (not even client-no-input).
    idle = subscriber(state="idle", wanted=False, state_age=600.0, ack_age=600.0, last_reply_age=600.0)
    findings = dynamic_findings(client=dynamic_client_stats(idle), memberships=())
    assert serious(findings) == []
    assert not [f for f in findings if f["id"].startswith("dynamic-")]
    # Just joined: the first round trip is under way.
    joining = subscriber(state="joining", state_age=0.1, ack_age=None, last_reply=None, last_reply_age=None,
                         lease=None, joins_sent=1, challenges=0, acks=0)
    assert serious(dynamic_findings(client=dynamic_client_stats(joining))) == []


def test_a_dynamic_entry_the_server_never_answers_is_not_subscribed():
    silent = subscriber(state="joining", state_age=12.0, ack_age=None, last_reply=None, last_reply_age=None,
                        lease=None, joins_sent=25, challenges=0, acks=0)
    findings = dynamic_findings(client=dynamic_client_stats(silent))
    # client-no-input is the symptom, folded into the cause.
    assert serious(findings) == [("dynamic-not-subscribed", "error")]
    finding = only(findings, "dynamic-not-subscribed")
    assert "has not answered" in finding["what"] and "12.0 s" in finding["what"]
    assert "allow list" in finding["fix"] and "UDP 47001" in finding["fix"] and "auth_keys.json" in finding["fix"]
    assert finding["subject"] == "10.0.0.1 %s:47000" % GROUP and finding["affects"] == ["client %s" % GROUP]
    assert finding["evidence"] and "received nothing" in finding["evidence"][0]
    # An earlier session's answers do not count: the last reply came before this join.
    again = dict(silent, last_reply="ack", last_reply_age=300.0, ack_age=300.0, lease=1.5)
    assert "has not answered" in only(dynamic_findings(client=dynamic_client_stats(again)),
                                      "dynamic-not-subscribed")["what"]
    # Answers the client could not match are named.
    dropped = dynamic_client_stats(silent, drops={"unknown_server": 7})
    assert "unknown_server=7" in only(dynamic_findings(client=dropped), "dynamic-not-subscribed")["what"]


def test_a_dynamic_entry_challenged_but_never_acknowledged_names_the_cookie():
    challenged = subscriber(state="joining", state_age=5.0, ack_age=None, last_reply="challenge",
                            last_reply_age=0.3, lease=None, joins_sent=20, challenges=10, acks=0)
    findings = dynamic_findings(client=dynamic_client_stats(challenged))
    assert serious(findings) == [("dynamic-not-subscribed", "error")]
    finding = only(findings, "dynamic-not-subscribed")
    assert "challenged" in finding["what"] and "challenges=10" in finding["what"]
    assert "cookie" in finding["why"] and "bad_cookie" in finding["fix"]


def test_a_refused_dynamic_entry_names_the_reason():
    full = subscriber(state="refused", refusal="full", state_age=40.0, ack_age=None, last_reply="refused",
                      last_reply_age=0.2, lease=None, joins_sent=80, challenges=1, acks=0, refused=79)
    findings = dynamic_findings(client=dynamic_client_stats(full))
    assert serious(findings) == [("dynamic-refused", "error")]
    finding = only(findings, "dynamic-refused")
    assert "(full; refused=79)" in finding["what"] and "--max-members" in finding["fix"]


def test_a_subscription_no_longer_acknowledged_for_a_lease_has_expired():
    stale = subscriber(state="subscribed", ack_age=9.4, last_reply_age=9.4, lease=1.5)
    findings = dynamic_findings(client=dynamic_client_stats(stale, rx_packets=400))
    assert serious(findings) == [("dynamic-lease-expired", "error")]
    finding = only(findings, "dynamic-lease-expired")
    assert "9.4 s ago" in finding["what"] and "1.5 s" in finding["what"]
    # Within the lease (a refresh or two lost) it is not said.
    late = subscriber(state="subscribed", ack_age=1.2, last_reply_age=1.2, lease=1.5)
    assert serious(dynamic_findings(client=dynamic_client_stats(late, rx_packets=400))) == []


def test_dynamic_rules_read_odd_or_old_stats_without_failing():
    for dynamic in ({}, {"state": "joining", "wanted": True}, {"state": "subscribed", "wanted": True},
                    {"state": "refused", "wanted": True, "counters": None}, "garbage", None):
        stats = dynamic_client_stats(dynamic, rx_packets=10)
        findings = dynamic_findings(client=stats)
        assert "doctor-rule-failed" not in [f["id"] for f in findings], dynamic
    # A daemon that does not say since when: several unanswered JOINs are enough.
    old = {"state": "joining", "wanted": True, "refusal": "", "ack_age": None, "refresh": 0.5,
           "counters": {"joins_sent": 9, "challenges": 0, "acks": 0, "refused": 0}}
    assert serious(dynamic_findings(client=dynamic_client_stats(old))) == [("dynamic-not-subscribed", "error")]
    for subscriptions in (None, "garbage", {"refusals": None, "errors": None}, {"refusals": {"not_allowed": "x"}}):
        stats = dict(server_stats(), subscriptions=subscriptions)
        findings = dynamic_findings(server=stats)
        assert serious(findings) == [], subscriptions


def test_server_refusals_by_reason_name_the_sources():
    stats = dynamic_server_stats(refusals={"not_allowed": 42, "full": 3, "bad_cookie": 2},
                                 refused_sources={"not_allowed": [{"source": "10.9.0.7", "count": 40, "last": 1.0},
                                                                  {"source": "10.9.0.8", "count": 2, "last": 2.0}],
                                                  "full": [{"source": "10.0.0.77", "count": 3, "last": 3.0}]})
    findings = dynamic_findings(server=stats)
    assert serious(findings) == [("dynamic-refusals", "warning"), ("dynamic-refusals", "warning")]
    by_subject = dict((f["subject"], f) for f in findings if f["id"] == "dynamic-refusals")
    assert sorted(by_subject) == ["subscriptions bad_cookie", "subscriptions full", "subscriptions not_allowed"]
    not_allowed = by_subject["subscriptions not_allowed"]
    assert "42 subscription messages as not_allowed" in not_allowed["what"]
    assert "10.9.0.7 (40), 10.9.0.8 (2)" in not_allowed["what"] and "allow 10.0.0.0/24" in not_allowed["what"]
    assert "may_join" in not_allowed["fix"] and not_allowed["affects"] == ["server %s" % GROUP]
    assert "--max-members" in by_subject["subscriptions full"]["fix"]
    assert by_subject["subscriptions bad_cookie"]["severity"] == "info"
    # Without the sources (an older server) the count is said alone; no refusal, no finding.
    stats["subscriptions"].pop("refused_sources")
    assert "last sources" not in dict((f["subject"], f) for f in dynamic_findings(server=stats)
                                      if f["id"] == "dynamic-refusals")["subscriptions not_allowed"]["what"]
    assert not [f for f in dynamic_findings(server=dynamic_server_stats()) if f["id"].startswith("dynamic-")]


def test_server_expiries_name_the_members_gone_and_back():
    stats = dynamic_server_stats(expiries=3, members=["10.0.0.21"],
                                 departed=[("10.0.0.20", "expired"), ("10.0.0.21", "expired"), ("10.0.0.22", "leave"),
                                           ("10.0.0.20", "expired")])
    findings = dynamic_findings(server=stats)
    assert serious(findings) == [("dynamic-lease-expired", "warning")]
    finding = only(findings, "dynamic-lease-expired")
    assert "3 dynamic members of %s" % GROUP in finding["what"]
    assert "gone: 10.0.0.20" in finding["what"] and "subscribed again: 10.0.0.21" in finding["what"]
    assert "10.0.0.22" not in finding["what"] and "UDP 47001" in finding["fix"]


def test_a_subscription_port_the_server_cannot_bind_is_an_error():
    error = ("cannot take subscriptions on UDP port 47001: Address already in use (a relay client on this host "
             "holds it? ss -uapn 'sport = :47001' names the socket)")
    findings = dynamic_findings(server=dynamic_server_stats(errors=[error]))
    assert serious(findings) == [("dynamic-port-not-bound", "error")]
    assert "Address already in use" in only(findings, "dynamic-port-not-bound")["what"]
