"""Keys that fail closed (issue 14.5) and handlers that never end the daemon (issue 14, "Smaller").

With the marker ``<conf dir>/auth_required`` a missing, unreadable or
invalid key file makes the daemons relay nothing (and say so); without it a
key file that vanishes turns authentication off with a warning.  The second
half injects exceptions into every handler of the event loop.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from multicast_proxy import admin, auth, daemon, frame, relay_config as config, relay_contract as contract
from multicast_proxy.client import ClientDaemon
from multicast_proxy.server import ServerDaemon

from test_daemon import (  # noqa: F401 (relays is a fixture)  # pylint: disable=unused-import
    FILES_DIR, free_udp_port, lo_sender, random_group, relays, wait_for, write_client, write_server)
from test_frame_auth import SECRET_1, key_file_text, write_keys


def require_keys(directory):
    (directory / contract.AUTH_REQUIRED_NAME).write_text("")


def member_socket():
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(0.5)
    return member


def received(sock):
    try:
        return sock.recv(70000)
    except socket.timeout:
        return None


def tagged(group, seq, payload=b"x", secret=SECRET_1, key_id=1):
    header = bytearray(frame.HEADER_LEN)
    frame.pack_header_into(header, frame.ip_to_int(group), 5000, frame.ip_to_int("10.0.0.9"), 1, seq,
                           flags=frame.FLAG_TAG, key_id=key_id)
    covered = bytes(header) + payload
    return covered + auth.compute_tag(secret, "127.0.0.1", covered)


def run_admin(directory, *argv):
    env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(directory))
    return subprocess.run([sys.executable, "-m", "multicast_proxy"] + list(argv), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)


# -- the marker ----------------------------------------------------------------------

def test_the_marker_is_any_file_and_survives_the_key_file(tmp_path):
    assert not auth.auth_required(str(tmp_path))
    assert not auth.auth_required(str(tmp_path / "no such directory"))
    require_keys(tmp_path)
    assert auth.auth_required(str(tmp_path))
    (tmp_path / contract.AUTH_REQUIRED_NAME).unlink()
    os.symlink(str(tmp_path / "nowhere"), str(tmp_path / contract.AUTH_REQUIRED_NAME))
    assert auth.auth_required(str(tmp_path)), "a dangling symlink is a marker too: in doubt, refuse"


# -- server ----------------------------------------------------------------------------

def server_setup(tmp_path):
    group, group_port = random_group(), free_udp_port()
    member = member_socket()
    write_server(tmp_path, group, group_port, member.getsockname()[1], ["127.0.0.1"])
    return group, group_port, member


def test_server_with_keys_required_and_no_key_file_starts_but_sends_nothing(tmp_path, relays):
    group, group_port, member = server_setup(tmp_path)
    require_keys(tmp_path)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    server = relays(tmp_path, "server", notify_socket=str(tmp_path / "notify"))
    server.wait_ready()
    status = notify.recv(1000).decode()
    assert status.startswith("READY=1\n") and "RELAYING NOTHING" in status and "auth_keys.json" in status
    sender = lo_sender()
    sender.sendto(b"must not leave", (group, group_port))
    assert received(member) is None
    wait_for(lambda: server.request("stats")["groups"][0]["drops"]["no_keys"] == 1, "the refused datagram")
    stats = server.request("stats")
    assert stats["auth_status"]["refusing"] and stats["auth_status"]["load_failures"] == 1
    assert stats["groups"][0]["rx_packets"] == 0
    table = run_admin(tmp_path, "multis_admin", "-P")
    assert table.returncode == 0 and "NOTHING is relayed" in table.stdout and "no_keys=1" in table.stdout
    as_json = json.loads(run_admin(tmp_path, "multis_admin", "-P", "--json").stdout)
    assert as_json["auth_status"]["refusing"] is True and as_json["auth_status"]["required"] is True
    # Keys written and reloaded: tagged frames flow again.
    write_keys(tmp_path, 1, (1, SECRET_1))
    reply = server.request("reload")
    assert reply["ok"] and reply["changes"]["auth"] == "keys 1, sending with key 1"
    sender.sendto(b"after", (group, group_port))
    data = received(member)
    assert data is not None and frame.decode(data).flags == frame.FLAG_TAG and frame.decode(data).payload == b"after"
    server.stop()
    log = (tmp_path / "server_log.txt").read_text()
    assert "ERROR start: authentication is required" in log and "relays NOTHING" in log
    assert "ERROR group %s: 1 datagrams not relayed" % group in log
    for sock in (member, sender, notify):
        sock.close()


def test_server_with_keys_required_stops_sending_when_the_key_file_is_deleted(tmp_path, relays):
    """Before: the reload turned authentication off and the next datagram left untagged."""
    group, group_port, member = server_setup(tmp_path)
    require_keys(tmp_path)
    write_keys(tmp_path, 1, (1, SECRET_1))
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    sender.sendto(b"tagged", (group, group_port))
    assert frame.decode(received(member)).flags == frame.FLAG_TAG
    (tmp_path / config.AUTH_KEYS_NAME).unlink()
    reply = server.request("reload")
    assert not reply["ok"] and "relays nothing" in reply["error"] and "does not exist" in reply["error"]
    assert reply["changes"]["auth"].startswith("required but unavailable")
    assert server.request("stats")["auth"] is None
    sender.sendto(b"must not leave", (group, group_port))
    assert received(member) is None
    wait_for(lambda: server.request("stats")["groups"][0]["drops"]["no_keys"] == 1, "the refused datagram")
    result = run_admin(tmp_path, "server_reload_list", "reload")
    assert result.returncode == 2 and "relays nothing" in result.stderr
    member.close()
    sender.close()


@pytest.mark.parametrize("breakage", ["invalid", "readable by others"])
def test_server_with_keys_required_and_a_bad_key_file_at_start_keeps_running_and_refuses(tmp_path, relays, breakage):
    """Before: exit 2 at start (systemd does not restart it); now it runs, refuses and says why."""
    group, group_port, member = server_setup(tmp_path)
    require_keys(tmp_path)
    path = write_keys(tmp_path, 1, (1, SECRET_1))
    if breakage == "invalid":
        path.write_text(key_file_text(1, (1, SECRET_1[:20])))
    else:
        os.chmod(str(path), 0o644)
    server = relays(tmp_path, "server")
    server.wait_ready()
    status = server.request("stats")["auth_status"]
    assert status["refusing"] and ("too short" in status["error"] or "chmod 600" in status["error"])
    sender = lo_sender()
    sender.sendto(b"must not leave", (group, group_port))
    assert received(member) is None
    member.close()
    sender.close()


def test_without_the_marker_a_vanished_key_file_is_a_warning_naming_the_file(tmp_path, relays):
    group, group_port, member = server_setup(tmp_path)
    write_keys(tmp_path, 1, (1, SECRET_1))
    server = relays(tmp_path, "server")
    server.wait_ready()
    (tmp_path / config.AUTH_KEYS_NAME).unlink()
    assert server.request("reload")["changes"]["auth"] == "off"
    sender = lo_sender()
    sender.sendto(b"plain", (group, group_port))
    assert frame.decode(received(member)).flags == 0
    assert server.request("stats")["auth_status"] == {"required": False, "keys": False, "refusing": False,
                                                      "error": None, "load_failures": 0, "legacy_tags": False}
    server.stop()
    log = (tmp_path / "server_log.txt").read_text()
    assert "WARNING reload (control socket): the key file %s is gone: authentication is now OFF" % (
        tmp_path / config.AUTH_KEYS_NAME) in log
    member.close()
    sender.close()


# -- client ----------------------------------------------------------------------------

def client_setup(tmp_path):
    server_port, group = free_udp_port(), random_group()
    write_client(tmp_path, [{"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group,
                             "group_port": 5000}])
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    local.bind(("127.0.0.1", 0))
    return group, ("127.0.0.1", server_port), local


def test_client_with_keys_required_and_no_key_file_delivers_nothing(tmp_path, relays):
    group, to, local = client_setup(tmp_path)
    require_keys(tmp_path)
    client = relays(tmp_path, "client")
    client.wait_ready()
    local.sendto(tagged(group, 10), to)
    local.sendto(frame.encode(group, 5000, "10.0.0.9", 1, 11, b"x"), to)
    wait_for(lambda: client.request("stats")["drops"]["no_keys"] == 2, "two refused frames")
    stats = client.request("stats")
    assert stats["entries"][0]["rx_packets"] == 0 and stats["auth_status"]["refusing"]
    table = run_admin(tmp_path, "multic_admin", "-P")
    assert "NOTHING is relayed" in table.stdout and "no_keys=2" in table.stdout
    # Keys back: a tagged frame is delivered, an untagged one dropped.
    write_keys(tmp_path, 1, (1, SECRET_1))
    assert client.request("reload")["ok"]
    local.sendto(tagged(group, 12), to)
    local.sendto(frame.encode(group, 5000, "10.0.0.9", 1, 13, b"x"), to)
    wait_for(lambda: client.request("stats")["drops"]["auth_missing"] == 1, "the untagged frame dropped")
    assert client.request("stats")["entries"][0]["rx_packets"] == 1
    local.close()


def test_client_with_keys_required_stops_delivering_when_the_key_file_is_deleted(tmp_path, relays):
    """Before: the reload turned checks off and forged untagged frames were delivered."""
    group, to, local = client_setup(tmp_path)
    require_keys(tmp_path)
    write_keys(tmp_path, 1, (1, SECRET_1))
    client = relays(tmp_path, "client")
    client.wait_ready()
    (tmp_path / config.AUTH_KEYS_NAME).unlink()
    assert not client.request("reload")["ok"]
    local.sendto(frame.encode(group, 5000, "10.0.0.9", 1, 1, b"forged"), to)
    wait_for(lambda: client.request("stats")["drops"]["no_keys"] == 1, "the refused frame")
    assert client.request("stats")["entries"][0]["rx_packets"] == 0
    local.close()


def test_client_without_keys_counts_and_reports_tags_it_cannot_check(tmp_path, relays):
    """Before: tagged frames passed unchecked without a sign."""
    group, to, local = client_setup(tmp_path)
    client = relays(tmp_path, "client")
    client.wait_ready()
    for seq in range(3):
        local.sendto(tagged(group, 100 + seq), to)
    wait_for(lambda: client.request("stats")["entries"][0]["rx_packets"] == 3, "three delivered frames")
    stats = client.request("stats")
    assert stats["auth_status"]["unverified"] == 3 and not stats["auth_status"]["refusing"]
    table = run_admin(tmp_path, "multic_admin", "-P")
    assert "authentication: off" in table.stdout and "3 tagged frames were delivered unchecked" in table.stdout
    assert json.loads(run_admin(tmp_path, "multic_admin", "-P", "--json").stdout)["auth_status"]["unverified"] == 3
    client.stop()
    log = (tmp_path / "client_log.txt").read_text()
    assert log.count("carry authentication tags, but this client has no key file") == 1
    local.close()


def test_auth_status_text():
    lines = []

    class Out:
        @staticmethod
        def write(text):
            lines.append(text)
    admin.write_auth_status({"required": True, "keys": True, "refusing": False, "error": None,
                             "load_failures": 2}, Out)
    admin.write_auth_status(None, Out)
    assert lines == ["authentication: on, required, 2 failed key loads since the start\n"]


# -- handlers that never end the daemon ------------------------------------------------

def started(tmp_path, cls=ServerDaemon):
    if cls is ServerDaemon:
        write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), [])
    else:
        write_client(tmp_path, [])
    relay = cls(str(tmp_path))
    relay.start()
    return relay


def control(relay, message):
    """One request through the real accept path, in this thread."""
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        peer.connect(relay.socket_path)
        peer.sendall(json.dumps(message).encode() + b"\n")
        relay._accept_control(relay._control)
        peer.settimeout(2)
        return json.loads(peer.recv(1 << 20).decode())
    finally:
        peer.close()


def boom(*_args):
    raise RuntimeError("injected")


def test_a_reload_that_raises_is_answered_and_the_daemon_goes_on(tmp_path, monkeypatch):
    relay = started(tmp_path)
    try:
        monkeypatch.setattr(relay, "apply_config", boom)
        reply = control(relay, {"cmd": "reload"})
        assert not reply["ok"] and "RuntimeError: injected" in reply["error"]
        assert control(relay, {"cmd": "ping"})["ok"]
    finally:
        relay.shutdown()
    assert "reload (control socket) failed, the daemon goes on: RuntimeError: injected" in \
        (tmp_path / "server_log.txt").read_text()


def test_a_control_request_that_raises_is_answered(tmp_path, monkeypatch):
    relay = started(tmp_path, ClientDaemon)
    try:
        monkeypatch.setattr(relay, "stats", boom)
        reply = control(relay, {"cmd": "stats"})
        assert reply == {"ok": False, "error": "the daemon failed to answer: RuntimeError: injected; it goes on, "
                                               "see its log"}
        assert control(relay, {"cmd": "ping"})["ok"]
    finally:
        relay.shutdown()


def test_accept_out_of_descriptors_does_not_end_the_daemon(tmp_path):
    relay = started(tmp_path)

    class Listener:
        @staticmethod
        def accept():
            raise OSError(errno.EMFILE, "Too many open files")
    try:
        relay._accept_control(Listener())
        assert control(relay, {"cmd": "ping"})["ok"]
    finally:
        relay.shutdown()


def test_sighup_whose_reload_raises_does_not_end_the_daemon(tmp_path, monkeypatch):
    relay = started(tmp_path)
    try:
        monkeypatch.setattr(relay, "read_config", boom)
        os.kill(os.getpid(), signal.SIGHUP)
        wait_for(lambda: relay._pending_signals, "the SIGHUP")
        relay._handle_signals()
        assert not relay.stopping
    finally:
        relay.shutdown()
    assert "reload (SIGHUP) failed, the daemon goes on: RuntimeError: injected" in \
        (tmp_path / "server_log.txt").read_text()


def test_a_signal_wakeup_read_error_does_not_end_the_daemon(tmp_path):
    relay = started(tmp_path)

    class Wakeup:
        @staticmethod
        def recv(_size):
            raise OSError(errno.EBADF, "Bad file descriptor")
    try:
        relay._drain_wakeup(Wakeup())
        assert control(relay, {"cmd": "ping"})["ok"]
    finally:
        relay.shutdown()


def test_a_callback_that_raises_does_not_end_the_loop(tmp_path, monkeypatch):
    relay = started(tmp_path)
    faulty, healthy = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _sock in range(2))
    calls = []

    def raise_after_reading(sock):
        sock.recv(100)
        calls.append("faulty")
        # The next readable socket: served by a later round of the same loop.
        healthy.sendto(b"x", healthy.getsockname())
        raise ValueError("injected")

    def stop(sock):
        sock.recv(100)
        calls.append("healthy")
        relay.stopping = True

    def give_up():
        # A loop that stopped serving would otherwise wait forever.
        calls.append("tick")
        if calls.count("tick") > 5:
            relay.stopping = True
    monkeypatch.setattr(relay, "tick", give_up)
    try:
        for sock, callback in ((faulty, raise_after_reading), (healthy, stop)):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            relay.watch(sock, callback)
        faulty.sendto(b"x", faulty.getsockname())
        assert relay.run() == 0
        assert [call for call in calls if call != "tick"] == ["faulty", "healthy"]
    finally:
        for sock in (faulty, healthy):
            relay.unwatch(sock)
            sock.close()
        relay.shutdown()
    assert "callback failed, the daemon goes on: ValueError: injected" in (tmp_path / "server_log.txt").read_text()


def test_the_client_reload_survives_an_interface_scan_out_of_descriptors(tmp_path, monkeypatch):
    from multicast_proxy import netinfo
    relay = started(tmp_path, ClientDaemon)

    def out_of_descriptors():
        raise OSError(errno.EMFILE, "Too many open files")
    try:
        monkeypatch.setattr(netinfo, "local_addresses", out_of_descriptors)
        write_client(tmp_path, [{"server_ip": "127.0.0.1", "server_port": free_udp_port(), "group_ip": random_group(),
                                 "group_port": 5000}])
        reply = control(relay, {"cmd": "reload"})
        assert reply["ok"] and len(reply["changes"]["added"]) == 1
    finally:
        relay.shutdown()


# -- the control socket never outlives the daemon ---------------------------------------

def test_an_unexpected_exception_in_the_loop_removes_the_control_socket(tmp_path, monkeypatch):
    write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), [])
    relay = ServerDaemon(str(tmp_path))
    monkeypatch.setattr(relay, "run", boom)
    assert daemon.run_daemon(relay) == contract.EXIT_FAILURE
    assert not os.path.lexists(relay.socket_path)
    log = (tmp_path / "server_log.txt").read_text()
    assert "unexpected failure, the daemon stops" in log and "RuntimeError: injected" in log


def test_an_unexpected_exception_at_start_removes_the_control_socket(tmp_path, monkeypatch):
    write_client(tmp_path, [])
    relay = ClientDaemon(str(tmp_path))
    monkeypatch.setattr(relay, "apply_config", boom)
    assert daemon.run_daemon(relay) == contract.EXIT_FAILURE
    assert not os.path.lexists(relay.socket_path)


def test_a_failing_shutdown_step_still_removes_the_control_socket(tmp_path, monkeypatch):
    relay = started(tmp_path)
    assert os.path.exists(relay.socket_path)
    real_close = relay.close_data_sockets

    def close_then_fail():
        real_close()
        raise RuntimeError("injected")
    monkeypatch.setattr(relay, "close_data_sockets", close_then_fail)
    with pytest.raises(RuntimeError):
        relay.shutdown()
    assert not os.path.lexists(relay.socket_path)
    assert relay._epoll.closed
