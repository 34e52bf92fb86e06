# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.multicast.proxy.plugins.modules import client_server

RELOAD = ["/usr/local/bin/client_reload_list", "reload"]
ENTRY = {"server_ip": "10.0.0.1", "server_port": 65535, "group_ip": "224.1.2.3", "group_port": 65535}


def config_file(conf_dir):
    return os.path.join(str(conf_dir), "client_cfg.json.txt")


def write_config(conf_dir, entries):
    with open(config_file(conf_dir), "w") as handle:
        json.dump({"multi_server_info_array": entries}, handle)


def read_config(conf_dir):
    with open(config_file(conf_dir)) as handle:
        return json.load(handle)


def test_adds_entry_and_reloads(run_module, tmp_path):
    run_module.replies = [(0, "", "")]
    result, failed = run_module(client_server, dict(ENTRY, conf_dir=str(tmp_path)))
    assert not failed
    assert result["changed"] is True
    assert result["entry"] == ENTRY
    assert read_config(tmp_path) == {"multi_server_info_array": [ENTRY]}
    assert run_module.commands == [RELOAD]
    assert run_module.environ == [{"MULTICAST_CONF_DIR": str(tmp_path)}]


def test_existing_entry_is_unchanged(run_module, tmp_path):
    write_config(tmp_path, [ENTRY])
    result, failed = run_module(client_server, dict(ENTRY, conf_dir=str(tmp_path)))
    assert not failed
    assert result["changed"] is False
    assert run_module.commands == []


def test_new_server_port_updates_the_entry(run_module, tmp_path):
    write_config(tmp_path, [ENTRY])
    run_module.replies = [(0, "", "")]
    result, failed = run_module(client_server, dict(ENTRY, server_port=7000, conf_dir=str(tmp_path)))
    assert not failed
    assert result["changed"] is True
    assert read_config(tmp_path)["multi_server_info_array"] == [dict(ENTRY, server_port=7000)]


def test_check_mode_writes_nothing(run_module, tmp_path):
    result, failed = run_module(client_server, dict(ENTRY, conf_dir=str(tmp_path)), check_mode=True, diff=True)
    assert not failed
    assert result["changed"] is True
    assert os.listdir(str(tmp_path)) == []
    assert run_module.commands == []
    assert json.loads(result["diff"]["after"]) == {"multi_server_info_array": [ENTRY]}


def test_absent_removes_only_the_matching_entry(run_module, tmp_path):
    other = dict(ENTRY, group_ip="224.1.2.4")
    write_config(tmp_path, [ENTRY, other])
    run_module.replies = [(0, "", "")]
    args = dict(ENTRY, state="absent", conf_dir=str(tmp_path))
    del args["server_port"]
    result, failed = run_module(client_server, args)
    assert not failed
    assert result["changed"] is True
    assert result["entry"] is None
    assert read_config(tmp_path)["multi_server_info_array"] == [other]


def test_absent_when_missing_changes_nothing(run_module, tmp_path):
    write_config(tmp_path, [ENTRY])
    result, failed = run_module(client_server, dict(ENTRY, group_port=1, state="absent", conf_dir=str(tmp_path)))
    assert not failed
    assert result["changed"] is False


@pytest.mark.parametrize("args, message", [
    (dict(ENTRY, server_ip="224.0.0.1"), "multicast address"),
    (dict(ENTRY, group_ip="192.168.0.1"), "224.0.0.0/4"),
    (dict(ENTRY, group_port=0), "65535"),
    (dict(ENTRY, server_ip="10.0.0", state="absent"), "IPv4"),
])
def test_bad_arguments_fail_and_leave_the_file_alone(run_module, tmp_path, args, message):
    write_config(tmp_path, [ENTRY])
    before = open(config_file(tmp_path)).read()
    result, failed = run_module(client_server, dict(args, conf_dir=str(tmp_path)))
    assert failed
    assert message in result["msg"]
    assert open(config_file(tmp_path)).read() == before
    assert run_module.commands == []


def test_present_without_server_port_fails(run_module, tmp_path):
    args = dict(ENTRY, conf_dir=str(tmp_path))
    del args["server_port"]
    result, failed = run_module(client_server, args)
    assert failed
    assert "server_port" in result["msg"]


def test_daemon_not_running_is_a_warning(run_module, tmp_path):
    run_module.replies = [(3, "", "")]
    result, failed = run_module(client_server, dict(ENTRY, conf_dir=str(tmp_path)))
    assert not failed
    assert result["reload"] == "daemon_not_running"
    assert run_module.warnings
