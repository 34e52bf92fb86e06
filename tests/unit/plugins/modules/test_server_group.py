# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.multicast.proxy.plugins.modules import server_group

RELOAD = ["/usr/local/bin/server_reload_list", "reload"]


def config_file(conf_dir):
    return os.path.join(str(conf_dir), "server_cfg.json.txt")


def write_config(conf_dir, groups):
    with open(config_file(conf_dir), "w") as handle:
        json.dump({"multi_group_array": groups}, handle)


def read_config(conf_dir):
    with open(config_file(conf_dir)) as handle:
        return json.load(handle)


def group(group_ip="224.1.2.3", server_port=65535, group_port=65535, members=("192.168.1.1",)):
    return {"group_ip": group_ip, "server_port": server_port, "group_port": group_port,
            "member_array": list(members)}


def test_creates_group_writes_file_and_reloads(run_module, tmp_path):
    run_module.replies = [(0, "reloaded\n", "")]
    result, failed = run_module(server_group, {
        "group_ip": "224.1.2.3", "server_port": 65535, "members": ["192.168.1.1", "192.168.1.2"],
        "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is True
    assert result["reload"] == "applied"
    expected = {"multi_group_array": [group(members=["192.168.1.1", "192.168.1.2"])]}
    assert read_config(tmp_path) == expected
    assert result["config"] == expected
    assert result["group"] == expected["multi_group_array"][0]
    assert stat.S_IMODE(os.stat(config_file(tmp_path)).st_mode) == 0o644
    assert run_module.commands == [RELOAD]
    assert run_module.environ == [{"MULTICAST_CONF_DIR": str(tmp_path)}]
    # Written exactly as the relay's own commands write it.
    with open(config_file(tmp_path)) as handle:
        assert handle.read() == json.dumps(expected, indent=4) + "\n"


def test_same_request_twice_changes_nothing(run_module, tmp_path):
    write_config(tmp_path, [group()])
    before = open(config_file(tmp_path)).read()
    result, failed = run_module(server_group, {
        "group_ip": "224.1.2.3", "server_port": 65535, "members": ["192.168.1.1"], "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is False
    assert result["reload"] == "skipped"
    assert run_module.commands == []
    assert open(config_file(tmp_path)).read() == before


def test_check_mode_reports_change_and_writes_nothing(run_module, tmp_path):
    result, failed = run_module(server_group, {
        "group_ip": "224.1.2.3", "server_port": 65535, "members": ["192.168.1.1"], "conf_dir": str(tmp_path)},
        check_mode=True, diff=True)
    assert not failed
    assert result["changed"] is True
    assert result["reload"] == "skipped"
    assert os.listdir(str(tmp_path)) == []
    assert run_module.commands == []
    assert result["diff"]["before"] == ""
    assert json.loads(result["diff"]["after"]) == {"multi_group_array": [group()]}


def test_diff_shows_before_and_after(run_module, tmp_path):
    write_config(tmp_path, [group()])
    run_module.replies = [(0, "", "")]
    result, failed = run_module(server_group, {
        "group_ip": "224.1.2.3", "members": ["192.168.1.9"], "member_mode": "add", "conf_dir": str(tmp_path)},
        diff=True)
    assert not failed
    assert json.loads(result["diff"]["before"])["multi_group_array"][0]["member_array"] == ["192.168.1.1"]
    assert json.loads(result["diff"]["after"])["multi_group_array"][0]["member_array"] == [
        "192.168.1.1", "192.168.1.9"]
    assert result["diff"]["after_header"] == config_file(tmp_path)


@pytest.mark.parametrize("mode, members, expected", [
    ("exact", ["192.168.1.3"], ["192.168.1.3"]),
    ("add", ["192.168.1.2", "192.168.1.3"], ["192.168.1.1", "192.168.1.2", "192.168.1.3"]),
    ("remove", ["192.168.1.1"], ["192.168.1.2"]),
])
def test_member_modes(run_module, tmp_path, mode, members, expected):
    write_config(tmp_path, [group(members=["192.168.1.1", "192.168.1.2"])])
    run_module.replies = [(0, "", "")]
    result, failed = run_module(server_group, {
        "group_ip": "224.1.2.3", "members": members, "member_mode": mode, "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is True
    assert read_config(tmp_path)["multi_group_array"][0]["member_array"] == expected


def test_omitted_members_are_kept_when_a_port_changes(run_module, tmp_path):
    write_config(tmp_path, [group(members=["192.168.1.1", "192.168.1.2"])])
    run_module.replies = [(0, "", "")]
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 6000,
                                               "conf_dir": str(tmp_path)})
    assert not failed
    saved = read_config(tmp_path)["multi_group_array"][0]
    assert saved["server_port"] == 6000
    assert saved["group_port"] == 65535
    assert saved["member_array"] == ["192.168.1.1", "192.168.1.2"]


def test_interface_is_set_and_removed(run_module, tmp_path):
    write_config(tmp_path, [group()])
    run_module.replies = [(0, "", ""), (0, "", "")]
    run_module(server_group, {"group_ip": "224.1.2.3", "interface": "eth1", "conf_dir": str(tmp_path)})
    assert read_config(tmp_path)["multi_group_array"][0]["interface"] == "eth1"
    run_module(server_group, {"group_ip": "224.1.2.3", "interface": "", "conf_dir": str(tmp_path)})
    assert "interface" not in read_config(tmp_path)["multi_group_array"][0]


@pytest.mark.parametrize("args, message", [
    ({"group_ip": "10.1.2.3", "server_port": 1}, "224.0.0.0/4"),
    ({"group_ip": "224.1.2.9", "members": ["192.168.1.1"]}, "server port"),
    ({"group_ip": "224.1.2.3", "members": ["192.168.1.7"], "member_mode": "remove"}, "192.168.1.7"),
    ({"group_ip": "224.1.2.3", "members": ["224.9.9.9"]}, "multicast address"),
    ({"group_ip": "224.1.2.3", "server_port": 70000}, "65535"),
    ({"group_ip": "224.1.2.3", "interface": "eth/0"}, "interface"),
    ({"group_ip": "300.1.2.3", "state": "absent"}, "IPv4"),
])
def test_bad_arguments_fail_and_leave_the_file_alone(run_module, tmp_path, args, message):
    write_config(tmp_path, [group()])
    before = open(config_file(tmp_path)).read()
    result, failed = run_module(server_group, dict(args, conf_dir=str(tmp_path)))
    assert failed
    assert message in result["msg"]
    assert open(config_file(tmp_path)).read() == before
    assert sorted(os.listdir(str(tmp_path))) == [".server_cfg.lock", "server_cfg.json.txt"]
    assert run_module.commands == []


def test_too_many_members_fail(run_module, tmp_path):
    members = ["10.%d.%d.1" % (i // 256, i % 256) for i in range(1025)]
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1, "members": members,
                                               "conf_dir": str(tmp_path)})
    assert failed
    assert "1024" in result["msg"]
    assert not os.path.exists(config_file(tmp_path))


def test_absent_removes_the_group(run_module, tmp_path):
    write_config(tmp_path, [group(), group(group_ip="224.1.2.4")])
    run_module.replies = [(0, "", "")]
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "state": "absent",
                                               "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is True
    assert result["group"] is None
    assert [g["group_ip"] for g in read_config(tmp_path)["multi_group_array"]] == ["224.1.2.4"]


def test_absent_when_missing_changes_nothing(run_module, tmp_path):
    write_config(tmp_path, [group()])
    result, failed = run_module(server_group, {"group_ip": "224.9.9.9", "state": "absent",
                                               "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is False
    assert run_module.commands == []


def test_daemon_not_running_is_a_warning(run_module, tmp_path):
    run_module.replies = [(3, "", "multis_monitord is not running\n")]
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1, "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is True
    assert result["reload"] == "daemon_not_running"
    assert any("not running" in warning for warning in run_module.warnings)
    assert read_config(tmp_path)["multi_group_array"][0]["group_ip"] == "224.1.2.3"


def test_reload_refused_fails(run_module, tmp_path):
    run_module.replies = [(2, "", "invalid config\n")]
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1, "conf_dir": str(tmp_path)})
    assert failed
    assert "invalid config" in result["msg"]
    assert result["rc"] == 2


def test_reload_false_does_not_touch_the_daemon(run_module, tmp_path):
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1, "reload": False,
                                               "conf_dir": str(tmp_path)})
    assert not failed
    assert result["changed"] is True
    assert result["reload"] == "skipped"
    assert run_module.commands == []


def test_invalid_file_on_host_fails_without_rewriting_it(run_module, tmp_path):
    with open(config_file(tmp_path), "w") as handle:
        handle.write('{"multi_group_aray": []}')
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1, "conf_dir": str(tmp_path)})
    assert failed
    assert "multi_group_aray" in result["msg"]
    assert open(config_file(tmp_path)).read() == '{"multi_group_aray": []}'


def test_file_that_is_not_utf8_fails_with_advice_without_rewriting_it(run_module, tmp_path):
    latin1 = b'{"multi_group_array": [], "interface": "caf\xe9"}'
    with open(config_file(tmp_path), "wb") as handle:
        handle.write(latin1)
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1, "conf_dir": str(tmp_path)})
    assert failed
    assert "is not UTF-8" in result["msg"] and "fix it" in result["msg"]
    with open(config_file(tmp_path), "rb") as handle:
        assert handle.read() == latin1


def test_missing_conf_dir_fails_with_advice(run_module, tmp_path):
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1,
                                               "conf_dir": str(tmp_path / "nope")})
    assert failed
    assert "does not exist" in result["msg"]
    assert "multicast.proxy.server" in result["msg"]


def test_a_failed_directory_sync_is_a_warning_with_the_file_written(run_module, tmp_path, monkeypatch):
    from ansible_collections.multicast.proxy.plugins.module_utils import relay_module

    def fail(directory):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(relay_module, "sync_directory", fail)
    run_module.replies = [(0, "reloaded\n", "")]
    result, failed = run_module(server_group, {"group_ip": "224.1.2.3", "server_port": 1, "conf_dir": str(tmp_path)})
    assert not failed and result["changed"] is True
    assert read_config(tmp_path)["multi_group_array"][0]["group_ip"] == "224.1.2.3"
    assert any("syncing its directory to disk failed" in warning and "Input/output error" in warning
               for warning in run_module.warnings)
