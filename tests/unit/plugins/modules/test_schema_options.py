# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schema's options through the modules: server_group, client_server, relay_settings (issue 13)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.multicast.proxy.plugins.modules import client_server, relay_settings, server_group

SERVER_RELOAD = ["/usr/local/bin/server_reload_list", "reload"]
CLIENT_RELOAD = ["/usr/local/bin/client_reload_list", "reload"]


def read(conf_dir, name):
    with open(os.path.join(str(conf_dir), name)) as handle:
        return json.load(handle)


def test_server_group_sets_protocol_and_capture(run_module, tmp_path):
    run_module.replies = [(0, "", "")] * 4
    result, failed = run_module(server_group, {"group_ip": "224.0.0.18", "server_port": 5112, "members": ["10.0.0.2"],
                                               "protocol": "vrrp", "conf_dir": str(tmp_path)})
    assert not failed and result["changed"]
    assert result["group"] == {"group_ip": "224.0.0.18", "server_port": 5112, "group_port": 0,
                               "member_array": ["10.0.0.2"], "protocol": "vrrp"}
    result, failed = run_module(server_group, {"group_ip": "239.1.1.1", "server_port": 5000, "group_port": 0,
                                               "members": ["10.0.0.2"], "capture": True, "conf_dir": str(tmp_path)})
    assert not failed and result["group"]["capture"] is True and result["group"]["group_port"] == 0
    # Left out, an option keeps its value; false removes it.
    result, failed = run_module(server_group, {"group_ip": "239.1.1.1", "members": ["10.0.0.3"], "member_mode": "add",
                                               "conf_dir": str(tmp_path)})
    assert not failed and result["group"]["capture"] is True
    result, failed = run_module(server_group, {"group_ip": "239.1.1.1", "group_port": 5000, "capture": False,
                                               "conf_dir": str(tmp_path)})
    assert not failed and "capture" not in result["group"]
    assert "capture" not in read(tmp_path, "server_cfg.json.txt")["multi_group_array"][1]


def test_server_group_refuses_a_port_zero_group_without_capture_and_writes_nothing(run_module, tmp_path):
    result, failed = run_module(server_group, {"group_ip": "239.1.1.1", "server_port": 5000, "group_port": 0,
                                               "members": ["10.0.0.2"], "conf_dir": str(tmp_path)})
    assert failed and "group_port" in result["msg"]
    assert not os.path.exists(os.path.join(str(tmp_path), "server_cfg.json.txt"))
    assert run_module.commands == []


def test_server_group_check_mode_with_options_writes_nothing(run_module, tmp_path):
    result, failed = run_module(server_group, {"group_ip": "239.1.1.1", "server_port": 5000, "members": ["10.0.0.2"],
                                               "capture": True, "conf_dir": str(tmp_path)}, check_mode=True, diff=True)
    assert not failed and result["changed"] and '"capture": true' in result["diff"]["after"]
    assert not os.path.exists(os.path.join(str(tmp_path), "server_cfg.json.txt"))


def test_client_server_sets_protocol_and_preserve_source(run_module, tmp_path):
    run_module.replies = [(0, "", "")] * 2
    result, failed = run_module(client_server, {"server_ip": "10.0.0.1", "server_port": 5112, "group_ip": "224.0.0.18",
                                                "group_port": 0, "protocol": "vrrp", "conf_dir": str(tmp_path)})
    assert not failed and result["entry"]["protocol"] == "vrrp"
    result, failed = run_module(client_server, {"server_ip": "10.0.0.1", "server_port": 5000, "group_ip": "239.1.1.1",
                                                "group_port": 5000, "preserve_source": True,
                                                "conf_dir": str(tmp_path)})
    assert not failed and result["entry"]["preserve_source"] is True
    assert run_module.commands == [CLIENT_RELOAD, CLIENT_RELOAD]


def test_client_server_refuses_port_zero_for_udp(run_module, tmp_path):
    result, failed = run_module(client_server, {"server_ip": "10.0.0.1", "server_port": 5000, "group_ip": "239.1.1.1",
                                                "group_port": 0, "conf_dir": str(tmp_path)})
    assert failed and "group_port" in result["msg"]
    assert not os.path.exists(os.path.join(str(tmp_path), "client_cfg.json.txt"))


def test_relay_settings_sets_and_removes_top_level_keys(run_module, tmp_path):
    run_module.replies = [(0, "", "")] * 3
    result, failed = run_module(relay_settings, {"side": "client", "interface": "eth1", "preserve_source": True,
                                                 "conf_dir": str(tmp_path)})
    assert not failed and result["changed"] and result["reload"] == "applied"
    assert result["settings"] == {"interface": "eth1", "preserve_source": True}
    assert read(tmp_path, "client_cfg.json.txt") == {"multi_server_info_array": [], "interface": "eth1",
                                                     "preserve_source": True}
    # The same again: nothing to do, no reload.
    result, failed = run_module(relay_settings, {"side": "client", "interface": "eth1", "conf_dir": str(tmp_path)})
    assert not failed and not result["changed"] and result["reload"] == "skipped"
    result, failed = run_module(relay_settings, {"side": "client", "interface": "", "preserve_source": False,
                                                 "conf_dir": str(tmp_path)})
    assert not failed and result["changed"] and result["settings"] == {}
    result, failed = run_module(relay_settings, {"side": "server", "interface": "eth2", "conf_dir": str(tmp_path)})
    assert not failed and read(tmp_path, "server_cfg.json.txt") == {"multi_group_array": [], "interface": "eth2"}
    assert run_module.commands == [CLIENT_RELOAD, CLIENT_RELOAD, SERVER_RELOAD]


def test_relay_settings_sets_the_server_address_the_tags_are_bound_to(run_module, tmp_path):
    run_module.replies = [(0, "", "")] * 2
    result, failed = run_module(relay_settings, {"side": "server", "address": "10.0.0.11", "conf_dir": str(tmp_path)})
    assert not failed and result["changed"] and result["settings"] == {"address": "10.0.0.11"}
    assert read(tmp_path, "server_cfg.json.txt") == {"multi_group_array": [], "address": "10.0.0.11"}
    result, failed = run_module(relay_settings, {"side": "server", "address": "", "conf_dir": str(tmp_path)})
    assert not failed and result["changed"] and read(tmp_path, "server_cfg.json.txt") == {"multi_group_array": []}


def test_relay_settings_keeps_the_groups(run_module, tmp_path):
    with open(os.path.join(str(tmp_path), "server_cfg.json.txt"), "w") as handle:
        json.dump({"multi_group_array": [{"group_ip": "239.1.1.1", "server_port": 1, "group_port": 1,
                                          "member_array": ["10.0.0.2"]}]}, handle)
    run_module.replies = [(3, "", "not running")]
    result, failed = run_module(relay_settings, {"side": "server", "interface": "eth1", "conf_dir": str(tmp_path)},
                                diff=True)
    assert not failed and result["reload"] == "daemon_not_running"
    assert read(tmp_path, "server_cfg.json.txt")["multi_group_array"][0]["member_array"] == ["10.0.0.2"]
    assert '"interface": "eth1"' in result["diff"]["after"] and '"interface"' not in result["diff"]["before"]


@pytest.mark.parametrize("args, message", [
    ({"side": "server", "preserve_source": True}, "preserve_source: not a server setting"),
    ({"side": "client", "interface": "eth0/x"}, "not an interface name"),
    ({"side": "client", "address": "10.0.0.1"}, "address: not a client setting"),
    ({"side": "server", "address": "239.1.1.1"}, "is a multicast address"),
    ({"side": "server", "address": "10.0.0"}, "address"),
])
def test_relay_settings_refuses_bad_settings_and_writes_nothing(run_module, tmp_path, args, message):
    result, failed = run_module(relay_settings, dict(args, conf_dir=str(tmp_path)))
    assert failed and message in result["msg"]
    assert os.listdir(str(tmp_path)) in ([], [".client_cfg.lock"], [".server_cfg.lock"])
    assert run_module.commands == []


def test_relay_settings_check_mode_writes_nothing(run_module, tmp_path):
    result, failed = run_module(relay_settings, {"side": "client", "interface": "eth1", "conf_dir": str(tmp_path)},
                                check_mode=True)
    assert not failed and result["changed"] and result["reload"] == "skipped"
    assert os.listdir(str(tmp_path)) == []
