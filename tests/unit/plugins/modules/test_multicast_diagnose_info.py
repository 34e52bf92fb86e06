# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""multicast_diagnose_info: what it runs, what it returns, and that it changes nothing."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest
import yaml
from unittest import mock

from ansible.module_utils import basic
from ansible_collections.multicast.proxy.tests.unit.compat import patch_module_args
from ansible.plugins.loader import module_loader
from ansible_collections.multicast.proxy.plugins.module_utils.multicast_diag_kernel import FactsError
from ansible_collections.multicast.proxy.plugins.modules import multicast_diagnose_info

GROUP = "239.7.7.7"
SERVER_CFG = {"multi_group_array": [{"group_ip": GROUP, "server_port": 47001, "group_port": 47000,
                                     "member_array": ["10.0.0.9"]}]}


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super(ModuleExit, self).__init__(result)
        self.result = result
        self.failed = failed


def exit_json(self, **result):
    raise ModuleExit(result, False)


def fail_json(self, **result):
    raise ModuleExit(result, True)


FACTS = {
    "interfaces": [
        {"name": "lo", "index": 1, "flags": ["UP", "LOOPBACK"], "up": True, "multicast": False, "loopback": True,
         "operstate": "unknown", "ipv4": ["127.0.0.1/8"], "rx_multicast": 0},
        {"name": "eth0", "index": 2, "flags": ["UP", "MULTICAST"], "up": True, "multicast": True, "loopback": False,
         "operstate": "up", "ipv4": ["10.0.0.5/24"], "rx_multicast": 0},
    ],
    "memberships": [],
    "udp_sockets": [],
    "routes": [{"interface": "eth0", "destination": "0.0.0.0", "prefixlen": 0, "gateway": "10.0.0.254", "metric": 0},
               {"interface": "eth0", "destination": "10.0.0.0", "prefixlen": 24, "gateway": None, "metric": 0}],
    "multicast_routes": [],
    "igmp_max_memberships": 20,
    "rp_filter": {"all": 0},
    "mc_forwarding": {},
    "ip_counters": {"OutMcastPkts": 12},
}


class Host:
    """The commands the module may run, answered like a host would."""

    def __init__(self, binaries, answers):
        self.binaries = binaries
        self.answers = answers
        self.calls = []

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return self.binaries.get(name)

    def run_command(self, argv, environ_update=None, **kwargs):
        assert isinstance(argv, list), "commands must be lists, never shell strings"
        self.calls.append((list(argv), dict(environ_update or {})))
        return self.answers[os.path.basename(argv[0])]


def run_module(tmp_path, host, args=None, probes=None):
    params = {"conf_dir": str(tmp_path)}
    params.update(args or {})
    with patch_module_args(params), \
            mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json,
                                get_bin_path=host.get_bin_path, run_command=host.run_command), \
            mock.patch.object(multicast_diagnose_info, "collect_facts", return_value=FACTS), \
            mock.patch.object(multicast_diagnose_info, "probe_relay_ports", return_value=probes or []):
        with pytest.raises(ModuleExit) as caught:
            multicast_diagnose_info.main()
    return caught.value


def ids(result):
    return [(f["id"], f["severity"]) for f in result.result["findings"] if f["severity"] != "info"]


def write_server_config(tmp_path, cfg=None):
    (tmp_path / "server_cfg.json.txt").write_text(json.dumps(cfg or SERVER_CFG))


def stats_reply(rx_packets):
    return json.dumps({"side": "server", "started": 1, "groups": [
        {"group_ip": GROUP, "group_port": 47000, "server_port": 47001, "interface": "eth0", "state": "joined",
         "error": "", "rx_packets": rx_packets, "rx_bytes": 0, "drops": {"loop": 0}, "members": []}]})


def test_host_without_relay_reports_only_facts(tmp_path):
    result = run_module(tmp_path, Host({}, {}))
    assert not result.failed and result.result["changed"] is False
    assert ids(result) == []
    assert result.result["relay"]["server"]["installed"] is False
    assert result.result["relay"]["server"]["config"] is None
    assert result.result["facts"] == FACTS
    assert result.result["summary"] == {"error": 0, "warning": 0, "info": 0}


def test_running_server_stats_come_from_the_relay_cli(tmp_path):
    write_server_config(tmp_path)
    host = Host({"multis_admin": "/usr/local/bin/multis_admin"},
                {"multis_admin": (0, stats_reply(25), "")})
    result = run_module(tmp_path, host, {"firewall": False})
    assert host.calls == [(["/usr/local/bin/multis_admin", "-P", "--json"], {"MULTICAST_CONF_DIR": str(tmp_path)})]
    assert ids(result) == []
    assert result.result["relay"]["server"]["running"] is True
    assert result.result["relay"]["server"]["stats"]["groups"][0]["rx_packets"] == 25
    assert result.result["relay"]["server"]["interfaces"] == {GROUP: {"interfaces": ["eth0"], "source": "all"}}
    assert result.result["group_routes"] == {GROUP: {"interface": "eth0", "route": "0.0.0.0/0"}}


def test_stopped_daemon_is_an_error_finding_not_a_module_failure(tmp_path):
    write_server_config(tmp_path)
    host = Host({"multis_admin": "/usr/local/bin/multis_admin"},
                {"multis_admin": (3, "", "the server daemon is not running")})
    result = run_module(tmp_path, host, {"firewall": False})
    assert not result.failed and result.result["changed"] is False
    assert ids(result) == [("relay-not-running", "error")]
    assert result.result["summary"]["error"] == 1
    assert "[ERROR] relay-not-running" in result.result["report"]


def test_firewall_drop_is_found_in_the_nft_ruleset(tmp_path):
    write_server_config(tmp_path)
    ruleset = {"nftables": [
        {"chain": {"family": "inet", "table": "fw", "name": "input", "type": "filter", "hook": "input",
                   "prio": 0, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "fw", "chain": "input", "handle": 3, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 47000}},
            {"drop": None}]}}]}
    host = Host({"multis_admin": "/usr/local/bin/multis_admin", "nft": "/usr/sbin/nft"},
                {"multis_admin": (0, stats_reply(0), ""), "nft": (0, json.dumps(ruleset), "")})
    result = run_module(tmp_path, host)
    assert (["/usr/sbin/nft", "-j", "list", "ruleset"], {}) in host.calls
    assert ids(result) == [("firewall-blocks-group-port", "error")]
    finding = result.result["findings"][0]
    assert "table inet fw chain input handle 3" in finding["what"]
    # The silent server is explained by the drop, not reported on its own.
    assert finding["evidence"] and "received nothing" in finding["evidence"][0]


def test_iptables_save_is_the_fallback(tmp_path):
    write_server_config(tmp_path)
    host = Host({"multis_admin": "/usr/local/bin/multis_admin", "iptables-save": "/usr/sbin/iptables-save"},
                {"multis_admin": (0, stats_reply(3), ""),
                 "iptables-save": (0, "*filter\n:INPUT DROP [0:0]\nCOMMIT\n", "")})
    result = run_module(tmp_path, host)
    assert ids(result) == [("firewall-blocks-group-port", "error")]


def test_firewalld_and_ufw_are_read_and_the_blocking_one_is_named(tmp_path):
    from ansible_collections.multicast.proxy.tests.unit.plugins.module_utils.test_multicast_diag_firewall import (
        FIREWALLD_LIST_ALL,
    )
    client = {"multi_server_info_array": [{"server_ip": "10.0.0.1", "server_port": 47001, "group_ip": GROUP,
                                           "group_port": 47000}]}
    (tmp_path / "client_cfg.json.txt").write_text(json.dumps(client))
    host = Host({"firewall-cmd": "/usr/bin/firewall-cmd", "ufw": "/usr/sbin/ufw", "nft": "/usr/sbin/nft"},
                {"firewall-cmd": (0, FIREWALLD_LIST_ALL, ""), "ufw": (0, "Status: inactive\n", ""),
                 "nft": (0, json.dumps({"nftables": []}), "")})
    result = run_module(tmp_path, host)
    assert [call[0] for call in host.calls] == [["/usr/bin/firewall-cmd", "--list-all"],
                                                ["/usr/sbin/ufw", "status", "verbose"],
                                                ["/usr/sbin/nft", "-j", "list", "ruleset"]]
    blocking = [f for f in result.result["findings"] if f["id"] == "firewall-blocks-server-port"]
    assert len(blocking) == 1 and blocking[0]["what"].startswith("the host firewall (firewalld) rejects")


def test_invalid_config_is_reported_and_the_file_left_alone(tmp_path):
    path = tmp_path / "server_cfg.json.txt"
    path.write_text('{"multi_group_array": [{"group_ip": "10.1.1.1"}]}')
    before = path.read_bytes()
    result = run_module(tmp_path, Host({}, {}), {"firewall": False})
    assert ids(result) == [("config-invalid", "error")]
    assert "group_ip" in result.result["findings"][0]["what"]
    assert path.read_bytes() == before


def test_check_mode_reads_the_same_and_writes_nothing(tmp_path):
    write_server_config(tmp_path)
    listing = sorted(os.listdir(str(tmp_path)))
    host = Host({"multis_admin": "/usr/local/bin/multis_admin"}, {"multis_admin": (0, stats_reply(5), "")})
    normal = run_module(tmp_path, host, {"firewall": False})
    checked = run_module(tmp_path, host, {"firewall": False, "_ansible_check_mode": True})
    assert checked.result["findings"] == normal.result["findings"]
    assert checked.result["changed"] is False
    assert sorted(os.listdir(str(tmp_path))) == listing


def test_port_probe_results_reach_the_rules(tmp_path):
    write_server_config(tmp_path)
    host = Host({"multis_admin": "/usr/local/bin/multis_admin"}, {"multis_admin": (0, stats_reply(5), "")})
    probes = [{"side": "server", "group": GROUP, "port": 47000, "shareable": False, "error": "Address in use"}]
    result = run_module(tmp_path, host, {"firewall": False}, probes=probes)
    assert ids(result) == [("port-not-shareable", "error")]


def test_unreadable_kernel_tables_fail_with_a_clear_message(tmp_path):
    host = Host({}, {})
    with patch_module_args({"conf_dir": str(tmp_path)}), \
            mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json,
                                get_bin_path=host.get_bin_path, run_command=host.run_command), \
            mock.patch.object(multicast_diagnose_info, "collect_facts",
                              side_effect=FactsError("/proc/net/igmp: permission denied")):
        with pytest.raises(ModuleExit) as caught:
            multicast_diagnose_info.main()
    assert caught.value.failed
    assert caught.value.result["msg"] == ("cannot read the kernel's multicast state: "
                                          "/proc/net/igmp: permission denied")


COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def test_the_old_name_redirects_to_this_module():
    with open(os.path.join(COLLECTION_ROOT, "meta", "runtime.yml")) as handle:
        runtime = yaml.safe_load(handle)
    redirect = runtime["plugin_routing"]["modules"]["multicast_diagnose"]["redirect"]
    assert redirect == "multicast.proxy.multicast_diagnose_info"
    namespace, collection, name = redirect.split(".")
    assert (namespace, collection) == ("multicast", "proxy")
    assert os.path.isfile(os.path.join(COLLECTION_ROOT, "plugins", "modules", name + ".py"))
    # No file under the old name: the redirect is the only way it resolves.
    assert not os.path.exists(os.path.join(COLLECTION_ROOT, "plugins", "modules", "multicast_diagnose.py"))
    assert runtime["requires_ansible"]


def test_ansible_resolves_the_old_name_to_this_module():
    context = module_loader.find_plugin_with_context("multicast.proxy.multicast_diagnose")
    assert context.resolved
    assert context.resolved_fqcn == "multicast.proxy.multicast_diagnose_info"
    assert os.path.realpath(context.plugin_resolved_path) == os.path.realpath(multicast_diagnose_info.__file__)
