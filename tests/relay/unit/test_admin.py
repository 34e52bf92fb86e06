"""Admin commands against a temporary MULTICAST_CONF_DIR with no daemon running."""

import io
import json
import os
import subprocess
import sys
import threading

import pytest

from multicast_proxy import admin, cli, relay_config as config

FILES_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "files"))


def run(directory, line, stdin=""):
    words = line.split()
    out, err = io.StringIO(), io.StringIO()
    try:
        action = cli.parse(words[0], words[1:])
    except cli.UsageError as exc:
        return admin.EXIT_USAGE, "", str(exc)
    code = admin.execute(action, str(directory), out, err, io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def server_file(directory):
    return directory / config.SERVER_CONFIG_NAME


def test_seed_add_saves_file_and_reports_daemon_not_running(tmp_path):
    code, out, err = run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 192.168.1.1,192.168.1.2,192.168.1.3 -p 65535")
    assert code == admin.EXIT_NOT_RUNNING
    assert "saved" in out and "will apply when the daemon starts" in err
    cfg = json.loads(server_file(tmp_path).read_text())
    assert cfg == {"multi_group_array": [{"group_ip": "224.1.2.3", "server_port": 65535, "group_port": 65535,
                                          "member_array": ["192.168.1.1", "192.168.1.2", "192.168.1.3"]}]}
    assert server_file(tmp_path).stat().st_mode & 0o777 == 0o644
    # No temp files left behind by the atomic write.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".server_cfg.lock", "server_cfg.json.txt"]


def test_quit_delete_clear(tmp_path):
    run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 10.0.0.2,10.0.0.3 -p 7000")
    run(tmp_path, "multis_admin -A -m 239.1.1.1 -j 10.0.0.2 -p 7000")
    code, _out, _err = run(tmp_path, "multis_admin -A -m 224.1.2.3 \u2013q 10.0.0.2")
    assert code == admin.EXIT_NOT_RUNNING
    cfg = json.loads(server_file(tmp_path).read_text())
    assert cfg["multi_group_array"][0]["member_array"] == ["10.0.0.3"]
    run(tmp_path, "multis_admin -D -m 224.1.2.3")
    assert [g["group_ip"] for g in json.loads(server_file(tmp_path).read_text())["multi_group_array"]] == ["239.1.1.1"]
    run(tmp_path, "multis_admin -C")
    assert json.loads(server_file(tmp_path).read_text()) == {"multi_group_array": []}


@pytest.mark.parametrize("line, words", [
    ("multis_admin -A -m 224.1.2.3 -j 10.0.0.256 -p 7000", "-j/-q (member_array)"),
    ("multis_admin -A -m 10.1.2.3 -j 10.0.0.4 -p 7000", "-m (group_ip)"),
    ("multis_admin -A -m 224.1.2.3 -j 10.0.0.4 -p 70000", "-p (server_port)"),
    ("multis_admin -A -m 224.1.2.3 -j 10.0.0.4 -g 0", "-g (group_port)"),
    ("multis_admin -A -m 224.1.2.3 -q 10.0.0.9", "not a member"),
    ("multis_admin -A -m 239.9.9.9 -j 10.0.0.4", "give the server port (-p)"),
    ("multis_admin -D -m 239.9.9.9", "not configured"),
])
def test_invalid_edit_leaves_file_byte_identical(tmp_path, line, words):
    run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 10.0.0.2,10.0.0.3 -p 7000")
    before = server_file(tmp_path).read_bytes()
    code, _out, err = run(tmp_path, line)
    assert code == admin.EXIT_USAGE
    assert words in err and "Nothing was changed" in err
    assert server_file(tmp_path).read_bytes() == before


def test_hand_broken_file_is_not_overwritten(tmp_path):
    server_file(tmp_path).write_text('{"multi_group_array": [ {"group_ip": "224.1.2.3",, } ]}')
    before = server_file(tmp_path).read_bytes()
    code, _out, err = run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 10.0.0.2 -p 7000")
    assert code == admin.EXIT_USAGE
    assert "invalid JSON" in err and "line 1 column" in err and "nothing was changed" in err
    assert server_file(tmp_path).read_bytes() == before
    code, _out, err = run(tmp_path, "multis_admin -S")
    assert code == admin.EXIT_USAGE


def test_unchanged_edit_does_not_rewrite(tmp_path):
    run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 10.0.0.2 -p 7000")
    inode = server_file(tmp_path).stat().st_ino
    code, out, _err = run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 10.0.0.2")
    assert "unchanged" in out and code == admin.EXIT_NOT_RUNNING
    assert server_file(tmp_path).stat().st_ino == inode


def test_edit_waits_for_the_config_lock(tmp_path):
    done = []
    with config.ConfigLock(str(tmp_path), "server"):
        worker = threading.Thread(target=lambda: done.append(
            run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 10.0.0.2 -p 7000")))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive() and not server_file(tmp_path).exists()
    worker.join()
    assert done[0][0] == admin.EXIT_NOT_RUNNING and server_file(tmp_path).exists()


def test_show_and_list_read_the_file_when_the_daemon_is_down(tmp_path):
    run(tmp_path, "multis_admin -A -m 224.1.2.3 -j 10.0.0.2,10.0.0.3 -p 7000 -g 7001")
    code, out, _err = run(tmp_path, "multis_admin -S")
    assert code == 0
    assert out.splitlines()[0].split() == ["GROUP", "GROUP_PORT", "SERVER_PORT", "MEMBERS", "INTERFACE", "STATE"]
    assert out.splitlines()[1].split() == ["224.1.2.3", "7001", "7000", "2", "(all)", "not", "running"]
    code, out, _err = run(tmp_path, "multis_admin -S --json")
    assert json.loads(out)["source"] == "file"
    code, out, _err = run(tmp_path, "multis_admin -L -m 224.1.2.3 --json")
    assert json.loads(out)["members"] == ["10.0.0.2", "10.0.0.3"]
    code, out, _err = run(tmp_path, "multis_admin -L -m 224.1.2.3")
    assert out.splitlines()[-2:] == ["10.0.0.2", "10.0.0.3"]
    code, _out, err = run(tmp_path, "multis_admin -L -m 239.0.0.9")
    assert code == admin.EXIT_USAGE and "not configured" in err


def test_stats_need_the_daemon(tmp_path):
    code, _out, err = run(tmp_path, "multis_admin -P")
    assert code == admin.EXIT_NOT_RUNNING and "not running" in err
    code, _out, err = run(tmp_path, "multic_admin -P --json")
    assert code == admin.EXIT_NOT_RUNNING
    code, _out, err = run(tmp_path, "server_reload_list reload")
    assert code == admin.EXIT_NOT_RUNNING
    code, out, err = run(tmp_path, "client_reload_list", stdin="list\n")
    assert out == cli.RELOAD_PROMPT and code == admin.EXIT_NOT_RUNNING
    code, out, err = run(tmp_path, "client_reload_list", stdin="restart\n")
    assert code == admin.EXIT_USAGE and "type reload or list" in err


def test_client_edits(tmp_path):
    path = tmp_path / config.CLIENT_CONFIG_NAME
    code, _out, _err = run(tmp_path, "multic_admin -A -i 10.0.0.1 -g 5000 -s 6000 -m 239.1.1.1")
    assert code == admin.EXIT_NOT_RUNNING
    run(tmp_path, "multic_admin -A -i 10.0.0.1 -g 5000 -s 6000 -m 239.1.1.2")
    code, out, _err = run(tmp_path, "multic_admin -L")
    assert [line.split() for line in out.splitlines()] == [
        ["SERVER_IP", "SERVER_PORT", "GROUP_IP", "GROUP_PORT"],
        ["10.0.0.1", "6000", "239.1.1.1", "5000"], ["10.0.0.1", "6000", "239.1.1.2", "5000"]]
    before = path.read_bytes()
    code, _out, err = run(tmp_path, "multic_admin -A -i 239.0.0.1 -g 5000 -s 6000 -m 239.1.1.1")
    assert code == admin.EXIT_USAGE and "-i (server_ip)" in err and path.read_bytes() == before
    code, _out, err = run(tmp_path, "multic_admin -D -i 10.0.0.9 -g 5000")
    assert code == admin.EXIT_USAGE and "no entry" in err and path.read_bytes() == before
    run(tmp_path, "multic_admin -D -i 10.0.0.1 -g 5000 -m 239.1.1.2")
    assert len(json.loads(path.read_text())["multi_server_info_array"]) == 1
    run(tmp_path, "multic_admin -C")
    assert json.loads(path.read_text()) == {"multi_server_info_array": []}


def test_check_config(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"multi_group_array": [{"group_ip": "224.1.2.3", "server_port": 1, "member_array": []}]}')
    code, out, _err = run(tmp_path, "multis_admin --check-config %s" % good)
    assert code == 0 and "valid, 1 groups" in out
    code, _out, err = run(tmp_path, "multic_admin --check-config %s" % good)
    assert code == admin.EXIT_USAGE and "multi_group_array: unknown key" in err
    code, _out, err = run(tmp_path, "multis_admin --check-config %s" % (tmp_path / "missing.json"))
    assert code == admin.EXIT_USAGE and "cannot read" in err


def test_module_entry_points(tmp_path):
    env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "multicast_proxy", "multis_admin", "-X"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert result.returncode == 2
    assert "unknown option -X" in result.stderr and "usage:" in result.stderr
    result = subprocess.run([sys.executable, "-m", "multicast_proxy"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert result.returncode == 2 and "multis_admin" in result.stderr
    result = subprocess.run([sys.executable, "-m", "multicast_proxy", "multic_admin", "-H"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("Usage:\nmultic_admin -A -i {ip}")


def test_dispatch_on_program_name():
    from multicast_proxy.__main__ import main
    assert main(["/usr/local/bin/multis_admin", "--bogus"]) == admin.EXIT_USAGE
    assert main(["python3 -m multicast_proxy", "nope"]) == admin.EXIT_USAGE


def test_the_subscription_line_names_the_last_sources_refused():
    status = {"refusals": {"not_allowed": 3, "full": 0}, "ports": [6000], "members": 1, "errors": [],
              "refused_sources": {"not_allowed": [{"source": "10.9.0.1", "count": 2, "last": 1.0},
                                                  {"source": "10.9.0.2", "count": 1, "last": 2.0}]}}
    out = io.StringIO()
    admin.write_subscription_status(status, out)
    assert out.getvalue() == ("subscriptions: ports 6000, 1 dynamic members; refused: not_allowed=3\n"
                              "subscriptions: refused as not_allowed, the last sources: 10.9.0.1 (2), 10.9.0.2 (1)\n")
    out = io.StringIO()
    admin.write_subscription_status(dict(status, refused_sources=None), out)
    assert out.getvalue().count("\n") == 1
