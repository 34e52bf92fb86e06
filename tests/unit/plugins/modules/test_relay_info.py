# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.multicast.proxy.plugins.modules import relay_info

SERVER_CFG = {"multi_group_array": [{"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535,
                                     "member_array": ["192.168.1.1"]}]}
STATUS = {"groups": [{"group_ip": "224.1.2.3", "members": 1}]}
STATS = {"groups": [{"group_ip": "224.1.2.3", "rx_packets": 10,
                     "members": [{"address": "192.168.1.1", "tx_packets": 10}]}]}


def write_server_config(conf_dir):
    with open(os.path.join(str(conf_dir), "server_cfg.json.txt"), "w") as handle:
        json.dump(SERVER_CFG, handle)


def test_running_daemon_reports_config_status_and_stats(run_module, tmp_path):
    write_server_config(tmp_path)
    run_module.replies = [(0, json.dumps(STATUS), ""), (0, json.dumps(STATS), "")]
    result, failed = run_module(relay_info, {"side": "server", "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is False
    assert result["config"] == SERVER_CFG
    assert result["daemon_running"] is True
    assert result["status"] == STATUS
    assert result["stats"] == STATS
    assert run_module.commands == [["/usr/local/bin/multis_admin", "-S", "--json"],
                                   ["/usr/local/bin/multis_admin", "-P", "--json"]]
    assert run_module.environ == [{"MULTICAST_CONF_DIR": str(tmp_path)}] * 2


def test_stopped_daemon_reports_not_running(run_module, tmp_path):
    run_module.replies = [(0, json.dumps({"entries": []}), ""), (3, "", "multic_monitord is not running\n")]
    result, failed = run_module(relay_info, {"side": "client", "conf_dir": str(tmp_path)})
    assert not failed
    assert result["daemon_running"] is False
    assert result["stats"] is None
    assert result["config"] == {"multi_server_info_array": []}
    assert run_module.commands[0] == ["/usr/local/bin/multic_admin", "-L", "--json"]


def test_runs_in_check_mode(run_module, tmp_path):
    run_module.replies = [(0, "{}", ""), (0, "{}", "")]
    result, failed = run_module(relay_info, {"side": "server", "conf_dir": str(tmp_path)}, check_mode=True)
    assert not failed
    assert result["daemon_running"] is True


def test_output_that_is_not_json_fails(run_module, tmp_path):
    run_module.replies = [(0, "groups: 1\n", "")]
    result, failed = run_module(relay_info, {"side": "server", "conf_dir": str(tmp_path)})
    assert failed
    assert "not JSON" in result["msg"]


def test_command_error_fails(run_module, tmp_path):
    run_module.replies = [(1, "", "permission denied\n")]
    result, failed = run_module(relay_info, {"side": "server", "conf_dir": str(tmp_path)})
    assert failed
    assert "permission denied" in result["msg"]


def test_invalid_config_file_fails(run_module, tmp_path):
    with open(os.path.join(str(tmp_path), "server_cfg.json.txt"), "w") as handle:
        handle.write("{")
    result, failed = run_module(relay_info, {"side": "server", "conf_dir": str(tmp_path)})
    assert failed
    assert "invalid JSON" in result["msg"]
