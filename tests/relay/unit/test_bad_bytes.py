# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Config files with bytes that are not a config's (issue 14.2).

An operator's editor in a legacy encoding, a truncated copy or a stray binary
must give one clear line at every entry point (daemon start, reload by
control socket or SIGHUP, the admin commands, the doctor), never a traceback,
and a running daemon must keep its config.
"""

import os
import signal
import subprocess
import sys

import pytest

from multicast_proxy import relay_config as config
from test_daemon import FILES_DIR, free_udp_port, random_group, relays, wait_for, write_server  # noqa: F401  # pylint: disable=unused-import

# Latin-1 "é" in a value: what an editor set to ISO-8859-1 writes.
LATIN1 = b'{"multi_group_array": [{"group_ip": "224.1.2.3", "group_port": 5000, "server_port": 5000, ' \
         b'"member_array": ["10.0.0.1"], "interface": "caf\xe9"}]}'
BAD_CONTENTS = {
    "latin-1": LATIN1,
    "binary": bytes(range(256)) * 4,
    "not-json": b"multi_group_array = [224.1.2.3]\n",
    "huge": b" " * (config.MAX_CONFIG_BYTES + 1),
}


@pytest.mark.parametrize("name", sorted(BAD_CONTENTS))
def test_loader_names_the_problem(name):
    with pytest.raises(config.ConfigError) as raised:
        config.load_server_config(BAD_CONTENTS[name], "server_cfg.json.txt")
    message = str(raised.value)
    assert message.startswith("server_cfg.json.txt")
    expected = {"latin-1": "byte 0xe9 at offset", "binary": "is not UTF-8", "not-json": "invalid JSON",
                "huge": "larger than"}[name]
    assert expected in message


def test_read_config_text_reports_line_of_bad_byte(tmp_path):
    path = tmp_path / "server_cfg.json.txt"
    path.write_bytes(b'{\n"multi_group_array":\n[]\xff}')
    with pytest.raises(config.ConfigError) as raised:
        config.read_config_text(str(path))
    assert "line 3" in str(raised.value) and "iconv" in str(raised.value)
    assert config.read_config_text(str(tmp_path / "missing")) == ""


@pytest.mark.parametrize("name", ["latin-1", "binary", "huge"])
def test_running_server_keeps_its_config_on_bad_bytes(tmp_path, relays, name):
    group = random_group()
    write_server(tmp_path, group, free_udp_port(), free_udp_port(), ["127.0.0.1"])
    server = relays(tmp_path, "server")
    server.wait_ready()
    (tmp_path / config.SERVER_CONFIG_NAME).write_bytes(BAD_CONTENTS[name])
    reply = server.request("reload")
    assert not reply["ok"] and "previous config" in reply["error"]
    # SIGHUP takes the same path and must not end the daemon either.
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload (SIGHUP) refused" in (tmp_path / "server_log.txt").read_text(),
             "the refused SIGHUP reload in the log")
    assert server.proc.poll() is None
    assert server.request("show")["config"]["multi_group_array"][0]["group_ip"] == group
    _out, err = server.stop()
    assert "Traceback" not in err


def test_start_with_bad_bytes_exits_2_with_one_line(tmp_path, relays):
    (tmp_path / config.SERVER_CONFIG_NAME).write_bytes(LATIN1)
    server = relays(tmp_path, "server")
    _out, err = server.finish()
    assert server.proc.returncode == 2
    assert "Traceback" not in err and "not UTF-8" in err and "did not start" in err
    assert not (tmp_path / "multis.sock").exists()


@pytest.mark.parametrize("argv", [
    ["multis_admin", "-S"],
    ["multis_admin", "-A", "-m", "224.1.2.4", "-j", "10.0.0.2", "-p", "6000"],
    ["multis_admin", "-D", "-m", "224.1.2.3"],
    ["multic_admin", "-L"],
])
def test_admin_commands_refuse_bad_bytes_without_traceback(tmp_path, argv):
    path = tmp_path / (config.SERVER_CONFIG_NAME if argv[0] == "multis_admin" else config.CLIENT_CONFIG_NAME)
    path.write_bytes(LATIN1)
    env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "multicast_proxy"] + argv, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "not UTF-8" in result.stderr
    assert path.read_bytes() == LATIN1


def test_check_config_refuses_bad_bytes(tmp_path):
    path = tmp_path / "candidate.json"
    path.write_bytes(LATIN1)
    env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "multicast_proxy", "multis_admin", "--check-config", str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "not UTF-8" in result.stderr


def test_a_utf8_byte_order_mark_is_accepted_and_offsets_count_it(tmp_path):
    path = tmp_path / "server_cfg.json.txt"
    path.write_bytes(b"\xef\xbb\xbf" + LATIN1.replace(b"caf\xe9", b"eth0"))
    cfg = config.load_server_config(config.read_config_text(str(path)), str(path))
    assert cfg["multi_group_array"][0]["interface"] == "eth0"
    path.write_bytes(b"\xef\xbb\xbf" + LATIN1)
    with pytest.raises(config.ConfigError) as raised:
        config.read_config_text(str(path))
    assert "at offset %d" % (LATIN1.index(b"\xe9") + 3) in str(raised.value)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_config_path_that_is_not_a_file_is_refused_without_hanging(tmp_path, kind):
    path = tmp_path / config.SERVER_CONFIG_NAME
    if kind == "fifo":
        os.mkfifo(str(path))
    else:
        path.mkdir()
    env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(tmp_path))
    # A FIFO nobody writes to blocked open() for ever: the timeout turns that hang into a failure.
    result = subprocess.run([sys.executable, "-m", "multicast_proxy", "multis_admin", "-S"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "not a regular file" in result.stderr


def test_running_server_keeps_its_config_when_a_fifo_replaces_it(tmp_path, relays):
    group = random_group()
    write_server(tmp_path, group, free_udp_port(), free_udp_port(), ["127.0.0.1"])
    server = relays(tmp_path, "server")
    server.wait_ready()
    path = tmp_path / config.SERVER_CONFIG_NAME
    path.unlink()
    os.mkfifo(str(path))
    reply = server.request("reload")
    assert not reply["ok"] and "not a regular file" in reply["error"] and "previous config" in reply["error"]
    assert server.request("show")["config"]["multi_group_array"][0]["group_ip"] == group
    _out, err = server.stop()
    assert "Traceback" not in err
