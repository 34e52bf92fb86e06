"""Daemons on loopback: control protocol, relaying, loop guard, reload, single instance.

Traffic stays on ``lo``: the group is joined on lo, the sender sets
IP_MULTICAST_IF to 127.0.0.1, members and servers are 127.0.0.1.
"""

import errno
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from multicast_proxy import relay_config as config, daemon
from multicast_proxy.server import ServerDaemon
from multicast_proxy.client import ClientDaemon

FILES_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "files"))


def free_port(kind=socket.SOCK_DGRAM):
    """A port of loopback that nothing holds now (UDP, or TCP with kind=socket.SOCK_STREAM)."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def free_udp_port():
    return free_port(socket.SOCK_DGRAM)


def random_group():
    # 239.193/16 is organisation-local scope; random parts keep parallel runs apart.
    return "239.193.%d.%d" % (random.randint(0, 255), random.randint(1, 254))


def wait_for(predicate, what, attempts=200):
    for _attempt in range(attempts):
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Relay:
    """A daemon subprocess with its own config directory."""

    def __init__(self, directory, side, notify_socket=None):
        self.directory = directory
        self.side = side
        self._output = None  # (stdout, stderr) once stopped: a second stop returns them again
        env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(directory))
        env.pop("NOTIFY_SOCKET", None)
        if notify_socket:
            env["NOTIFY_SOCKET"] = notify_socket
        program = "multis_admin" if side == "server" else "multic_admin"
        self.proc = subprocess.Popen([sys.executable, "-m", "multicast_proxy", program, "-R"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)

    def wait_ready(self):
        wait_for(lambda: self.proc.poll() is not None or daemon.daemon_running(self.side, str(self.directory)),
                 "%s daemon to answer ping" % self.side)
        assert self.proc.poll() is None, self.proc.communicate()

    def request(self, cmd):
        return daemon.request(self.side, {"cmd": cmd}, str(self.directory))

    def finish(self):
        """Wait for a daemon that is expected to exit by itself."""
        self._output = self.proc.communicate(timeout=20)
        return self._output

    def stop(self):
        if self._output is not None:
            return self._output
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self._output = self.proc.communicate(timeout=20)
            return self._output
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def relays():
    started = []

    def start(directory, side, notify_socket=None):
        relay = Relay(directory, side, notify_socket)
        started.append(relay)
        return relay
    yield start
    for relay in started:
        relay.stop()


def write_server(directory, group_ip, group_port, server_port, members):
    directory.mkdir(exist_ok=True)
    cfg = {"multi_group_array": [{"group_ip": group_ip, "server_port": server_port, "group_port": group_port,
                                  "member_array": members, "interface": "lo"}]}
    (directory / config.SERVER_CONFIG_NAME).write_text(json.dumps(cfg))


def write_client(directory, entries, interface="lo"):
    directory.mkdir(exist_ok=True)
    cfg = {"multi_server_info_array": entries, "interface": interface}
    (directory / config.CLIENT_CONFIG_NAME).write_text(json.dumps(cfg))


def lo_receiver(group_ip, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((group_ip, port))
    mreqn = socket.inet_aton(group_ip) + socket.inet_aton("127.0.0.1") + struct.pack("=i", socket.if_nametoindex("lo"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    sock.settimeout(0.5)
    return sock


def lo_sender():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    return sock


def drain(sock):
    received = []
    try:
        while True:
            received.append(sock.recvfrom(70000))
    except socket.timeout:
        return received


def test_relay_on_loopback_with_loop_guard(tmp_path, relays):
    group, group_port, server_port = random_group(), free_udp_port(), free_udp_port()
    write_server(tmp_path / "s", group, group_port, server_port, ["127.0.0.1"])
    write_client(tmp_path / "c", [{"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group,
                                   "group_port": group_port}])
    server = relays(tmp_path / "s", "server")
    client = relays(tmp_path / "c", "client")
    server.wait_ready()
    client.wait_ready()
    receiver = lo_receiver(group, group_port)
    sender = lo_sender()
    payloads = [b"datagram %d " % i + bytes(range(256)) * (i % 3) for i in range(20)]
    for payload in payloads:
        sender.sendto(payload, (group, group_port))
    # This host is source and member at once, so the receiver sees every
    # datagram twice: from the application and from the relay client.
    got = [data for data, _src in drain(receiver)]
    assert sorted(got) == sorted(payloads * 2)
    stats = server.request("stats")
    (g,) = stats["groups"]
    assert (g["rx_packets"], g["rx_bytes"]) == (20, sum(map(len, payloads)))
    # The relay client's TTL-0 copies reached the server socket and were not forwarded again.
    assert g["drops"]["loop"] == 20
    assert [(m["member_ip"], m["tx_packets"], m["send_errors"]) for m in g["members"]] == [("127.0.0.1", 20, 0)]
    (entry,) = client.request("stats")["entries"]
    assert (entry["rx_packets"], entry["delivered_packets"], entry["lost"], entry["duplicates"]) == (20, 20, 0, 0)
    assert entry["interfaces"] == ["lo"]
    receiver.close()
    sender.close()


def wildcard_receiver(group_ip, port):
    """A receiver as most applications write it: 0.0.0.0:port, SO_REUSEADDR, joined on lo."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    mreqn = socket.inet_aton(group_ip) + socket.inet_aton("127.0.0.1") + struct.pack("=i", socket.if_nametoindex("lo"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    sock.settimeout(0.5)
    return sock


@pytest.mark.parametrize("application_first", [False, True], ids=["relay-first", "application-first"])
def test_server_port_equal_to_group_port(tmp_path, relays, application_first):
    """The seed's example uses one port for both; frames must reach the client, not the application."""
    group, port = random_group(), free_udp_port()
    write_server(tmp_path / "s", group, port, port, ["127.0.0.1"])
    write_client(tmp_path / "c", [{"server_ip": "127.0.0.1", "server_port": port, "group_ip": group,
                                   "group_port": port}])
    receiver = wildcard_receiver(group, port) if application_first else None
    server = relays(tmp_path / "s", "server")
    client = relays(tmp_path / "c", "client")
    server.wait_ready()
    client.wait_ready()
    receiver = receiver or wildcard_receiver(group, port)
    sender = lo_sender()
    payloads = [b"same port %d" % i for i in range(10)]
    for payload in payloads:
        sender.sendto(payload, (group, port))
    got = [data for data, _src in drain(receiver)]
    # Each datagram twice (the application's own and the relay's copy), and no frame.
    assert sorted(got) == sorted(payloads * 2)
    (entry,) = client.request("stats")["entries"]
    assert entry["delivered_packets"] == 10
    assert not any(client.request("stats")["drops"].values())
    receiver.close()
    sender.close()


def test_server_frames_carry_group_source_tos_and_sequence(tmp_path, relays):
    from multicast_proxy import frame
    group, group_port = random_group(), free_udp_port()
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(5)
    write_server(tmp_path, group, group_port, member.getsockname()[1], ["127.0.0.1"])
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xb8)
    sender.bind(("127.0.0.1", 0))
    for payload in (b"first", b"second"):
        sender.sendto(payload, (group, group_port))
    frames = [frame.decode(member.recv(70000)) for _frame in range(2)]
    started = server.request("stats")["started"]
    assert [f.payload for f in frames] == [b"first", b"second"]
    assert [f.seq for f in frames] == [(started << 32) + 1, (started << 32) + 2]
    for decoded in frames:
        assert (decoded.group_ip, decoded.group_port) == (group, group_port)
        assert (decoded.src_ip, decoded.src_port) == sender.getsockname()
        assert (decoded.tos, decoded.proto, decoded.flags, decoded.tag) == (0xb8, 17, 0, None)
    # A datagram too big to fit a frame is dropped and counted, not truncated.
    sender.sendto(b"x" * (frame.MAX_PAYLOAD + 1), (group, group_port))
    sender.sendto(b"x" * frame.MAX_PAYLOAD, (group, group_port))
    assert len(frame.decode(member.recv(70000)).payload) == frame.MAX_PAYLOAD
    (g,) = server.request("stats")["groups"]
    assert (g["drops"]["oversize"], g["rx_packets"]) == (1, 3)
    member.close()
    sender.close()


def test_a_group_removed_and_added_again_continues_its_sequence(tmp_path, relays):
    """Issue 14.4: a re-added group must not restart at the run's base, or
    clients with keys refuse its frames as replays until the numbers catch up."""
    from multicast_proxy import frame
    group, group_port = random_group(), free_udp_port()
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(5)
    write_server(tmp_path, group, group_port, member.getsockname()[1], ["127.0.0.1"])
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    sender.bind(("127.0.0.1", 0))
    for payload in (b"one", b"two", b"three"):
        sender.sendto(payload, (group, group_port))
    before = [frame.decode(member.recv(70000)).seq for _frame in range(3)]
    (tmp_path / config.SERVER_CONFIG_NAME).write_text(json.dumps({"multi_group_array": []}))
    assert server.request("reload")["changes"]["removed"] == [group]
    write_server(tmp_path, group, group_port, member.getsockname()[1], ["127.0.0.1"])
    assert server.request("reload")["changes"]["added"] == [group]
    sender.sendto(b"again", (group, group_port))
    after = frame.decode(member.recv(70000))
    assert after.payload == b"again"
    assert after.seq == before[-1] + 1
    member.close()
    sender.close()


def test_client_drops_frames_by_reason(tmp_path, relays):
    server_port = free_udp_port()
    group = random_group()
    write_client(tmp_path / "c", [{"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group,
                                   "group_port": 5000}])
    client = relays(tmp_path / "c", "client")
    client.wait_ready()
    from multicast_proxy import frame
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.2", 0))
    good = frame.encode(group, 5000, "10.0.0.9", 1234, 1, b"x")
    probe.sendto(good, ("127.0.0.1", server_port))                       # wrong source address
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    local.bind(("127.0.0.1", 0))
    local.sendto(b"garbage", ("127.0.0.1", server_port))
    local.sendto(b"MC\x02" + good[3:], ("127.0.0.1", server_port))
    local.sendto(frame.encode(group, 5001, "10.0.0.9", 1, 1, b"x"), ("127.0.0.1", server_port))
    local.sendto(good, ("127.0.0.1", server_port))
    wait_for(lambda: client.request("stats")["entries"][0]["rx_packets"] == 1, "the good frame")
    drops = client.request("stats")["drops"]
    assert drops == {"malformed": 1, "bad_version": 1, "unknown_server": 1, "unknown_group": 1, "source_port": 0,
                     "deliver_error": 0, "receive_error": 0, "auth_missing": 0, "auth_unknown_key": 0, "auth_bad": 0,
                     "auth_unbound": 0, "replay": 0,
                     "no_keys": 0}
    probe.close()
    local.close()


def test_client_counts_frames_it_cannot_deliver(tmp_path, relays):
    from multicast_proxy import frame
    server_port, group = free_udp_port(), random_group()
    write_client(tmp_path, [{"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group,
                             "group_port": 5000}], interface="h1xnosuch0")
    client = relays(tmp_path, "client")
    client.wait_ready()
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    local.sendto(frame.encode(group, 5000, "10.0.0.9", 1, 1, b"x"), ("127.0.0.1", server_port))
    wait_for(lambda: client.request("stats")["drops"]["deliver_error"] == 1, "the deliver_error count")
    (entry,) = client.request("stats")["entries"]
    assert (entry["rx_packets"], entry["delivered_packets"], entry["interfaces"]) == (1, 0, ["h1xnosuch0"])
    local.close()


def test_control_protocol_and_reload(tmp_path, relays):
    group = random_group()
    write_server(tmp_path, group, free_udp_port(), free_udp_port(), ["127.0.0.1"])
    server = relays(tmp_path, "server")
    server.wait_ready()
    ping = server.request("ping")
    assert ping["ok"] and ping["pid"] == server.proc.pid and ping["side"] == "server"
    show = server.request("show")
    assert show["config"]["multi_group_array"][0]["group_ip"] == group
    assert show["groups"][0]["state"] == "joined"
    assert server.request("frobnicate") == {"ok": False,
                                            "error": 'unknown command "frobnicate"; use ping, reload, stats, show'}
    assert (tmp_path / "multis.sock").stat().st_mode & 0o777 == 0o600
    # A hand-broken file is refused and the daemon keeps its config.
    (tmp_path / config.SERVER_CONFIG_NAME).write_text('{"multi_group_array": [{"group_ip": "1.2.3.4"}]}')
    reply = server.request("reload")
    assert not reply["ok"] and "multi_group_array[0].group_ip" in reply["error"]
    assert server.request("show")["config"]["multi_group_array"][0]["group_ip"] == group
    # Read commands show what runs, even while the file holds an unapplied (here: broken) edit.
    env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "multicast_proxy", "multis_admin", "-L", "-m", group, "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == "daemon"
    assert json.loads(result.stdout)["members"] == ["127.0.0.1"]
    # An edit through the CLI is applied at once.
    write_server(tmp_path, group, 7000, 7001, ["127.0.0.1"])
    result = subprocess.run([sys.executable, "-m", "multicast_proxy", "multis_admin", "-A", "-m", group, "-j",
                             "127.0.0.2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "applied by the running daemon" in result.stdout
    (g,) = server.request("stats")["groups"]
    assert [m["member_ip"] for m in g["members"]] == ["127.0.0.1", "127.0.0.2"]
    assert (g["group_port"], g["server_port"]) == (7000, 7001)
    result = subprocess.run([sys.executable, "-m", "multicast_proxy", "multis_admin", "-P", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert result.returncode == 0 and json.loads(result.stdout)["groups"][0]["group_ip"] == group
    # -P --json carries what the control socket says about authentication (here: none configured).
    assert "auth" in json.loads(result.stdout)
    assert json.loads(result.stdout)["auth"] == server.request("stats").get("auth")
    # SIGHUP reloads too.
    write_server(tmp_path, group, 7000, 7001, ["127.0.0.3"])
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: [m["member_ip"] for m in server.request("stats")["groups"][0]["members"]] == ["127.0.0.3"],
             "SIGHUP reload")


def test_single_instance_and_clean_shutdown(tmp_path, relays):
    write_server(tmp_path, random_group(), free_udp_port(), free_udp_port(), [])
    first = relays(tmp_path, "server")
    first.wait_ready()
    second = relays(tmp_path, "server")
    _out, err = second.finish()
    assert second.proc.returncode == 1
    assert "already running" in err and "stop it first" in err
    assert daemon.daemon_running("server", str(tmp_path))
    _out, err = first.stop()
    assert first.proc.returncode == 0
    assert not (tmp_path / "multis.sock").exists()
    log = (tmp_path / "server_log.txt").read_text()
    assert "received SIGTERM, shutting down" in log and "multis_admin stopped" in log


def test_stale_socket_is_replaced(tmp_path, relays):
    write_client(tmp_path, [])
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "multic.sock"))
    stale.close()
    client = relays(tmp_path, "client")
    client.wait_ready()
    assert "removing stale control socket" in (tmp_path / "client_log.txt").read_text()


def test_invalid_config_at_start_exits_with_message(tmp_path, relays):
    tmp_path.joinpath(config.CLIENT_CONFIG_NAME).write_text('{"multi_server_info_array": [{"server_ip": 1}]}')
    client = relays(tmp_path, "client")
    _out, err = client.finish()
    assert client.proc.returncode == 2
    assert "multi_server_info_array[0].server_ip" in err and "did not start" in err
    assert not (tmp_path / "multic.sock").exists()


def test_sd_notify_ready_and_reload(tmp_path, relays):
    notify_path = str(tmp_path / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(20)
    write_client(tmp_path / "c", [])
    client = relays(tmp_path / "c", "client", notify_socket=notify_path)
    assert notify.recv(1000).startswith(b"READY=1\n")
    client.proc.send_signal(signal.SIGHUP)
    assert notify.recv(1000) == b"RELOADING=1"
    assert notify.recv(1000).startswith(b"READY=1\n")
    client.stop()
    assert notify.recv(1000) == b"STOPPING=1"
    notify.close()


def group_entry(group_ip, group_port, server_port, members):
    return {"group_ip": group_ip, "server_port": server_port, "group_port": group_port,
            "member_array": members, "interface": "lo"}


def test_server_diff_apply_keeps_untouched_sockets(tmp_path):
    relay = ServerDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("server", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    a, b, c = random_group(), random_group(), random_group()
    ports = [free_udp_port() for _port in range(3)]
    try:
        relay.apply_config(config.validate_server_config({"multi_group_array": [
            group_entry(a, ports[0], 7000, ["127.0.0.1"]), group_entry(b, ports[1], 7000, ["127.0.0.1"])]}))
        sock_a, sock_b = relay.groups[a].sock, relay.groups[b].sock
        # As if group b had relayed 5 datagrams to its one member.
        relay.groups[b].rx_packets, relay.groups[b].rx_bytes = 5, 500
        changes = relay.apply_config(config.validate_server_config({"multi_group_array": [
            group_entry(a, ports[0], 7000, ["127.0.0.1"]),
            group_entry(b, ports[1], 7000, ["127.0.0.1", "127.0.0.2"]),
            group_entry(c, ports[2], 7000, [])]}))
        assert changes["added"] == [c] and changes["updated"] == [b] and not changes["rejoined"]
        assert relay.groups[a].sock is sock_a and relay.groups[b].sock is sock_b
        # The member that stayed keeps its count; the one that joined starts at 0.
        assert [(m["member_ip"], m["tx_packets"], m["tx_bytes"]) for m in relay.groups[b].as_dict()["members"]] == [
            ("127.0.0.1", 5, 500), ("127.0.0.2", 0, 0)]
        changes = relay.apply_config(config.validate_server_config({"multi_group_array": [
            group_entry(a, ports[0], 7000, ["127.0.0.1"]), group_entry(b, ports[2], 7000, ["127.0.0.1"])]}))
        assert changes["removed"] == [c] and changes["rejoined"] == [b]
        assert relay.groups[a].sock is sock_a and relay.groups[b].sock is not sock_b
        assert sock_b.fileno() == -1
    finally:
        relay.close_data_sockets()


def test_client_reload_reports_entries_whose_options_changed(tmp_path):
    """preserve_source or source_port changed on a kept entry: "updated", not a silent reload."""
    relay = ClientDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("client", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    port, g = free_udp_port(), random_group()
    entry = {"server_ip": "127.0.0.1", "server_port": port, "group_ip": g, "group_port": 5000}
    described = "127.0.0.1:%d -> %s:5000" % (port, g)
    try:
        changes = relay.apply_config(config.validate_client_config({"multi_server_info_array": [entry]}))
        assert changes["added"] == [described] and changes["updated"] == []
        steps = [({"multi_server_info_array": [entry], "preserve_source": True}, [described]),
                 # Top-level or per entry: the same re-delivery, nothing changed.
                 ({"multi_server_info_array": [dict(entry, preserve_source=True)]}, []),
                 ({"multi_server_info_array": [dict(entry, preserve_source=True, source_port=868)]}, [described])]
        for cfg, updated in steps:
            changes = relay.apply_config(config.validate_client_config(cfg))
            assert changes["updated"] == updated and changes["added"] == changes["removed"] == [], (cfg, changes)
        (kept,) = list(relay.entries.values())
        assert kept.raw and kept.source_port == 868
        changes = relay.apply_config(config.validate_client_config({"multi_server_info_array": [entry]}))
        assert changes["updated"] == [described] and not kept.raw and kept.source_port is None
    finally:
        relay.close_data_sockets()


def test_server_group_that_cannot_join_is_reported_and_others_serve(tmp_path):
    relay = ServerDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("server", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    good, bad = random_group(), random_group()
    bad_entry = group_entry(bad, free_udp_port(), 7000, [])
    bad_entry["interface"] = "h1xnosuch0"
    relay.cfg = config.validate_server_config({"multi_group_array": [
        group_entry(good, free_udp_port(), 7000, []), bad_entry]})
    try:
        changes = relay.apply_config(relay.cfg)
        assert [e["group_ip"] for e in changes["errors"]] == [bad]
        states = dict((g["group_ip"], g) for g in relay.stats()["groups"])
        assert states[good]["state"] == "joined"
        assert states[bad]["state"] == "error" and "h1xnosuch0 does not exist" in states[bad]["error"]
        sock = relay.groups[good].sock
        # The periodic retry leaves the working group alone and logs the failure only once.
        relay.tick()
        relay._next_retry = 0.0
        relay.tick()
        assert relay.groups[good].sock is sock
        log = (tmp_path / "server_log.txt").read_text()
        assert log.count("h1xnosuch0 does not exist") == 1
    finally:
        relay.close_data_sockets()


def test_client_diff_apply_keeps_untouched_listeners(tmp_path):
    relay = ClientDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("client", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    p1, p2 = free_udp_port(), free_udp_port()
    g = random_group()

    def cfg(*entries):
        return config.validate_client_config({"multi_server_info_array": [
            {"server_ip": "127.0.0.1", "server_port": port, "group_ip": g, "group_port": gp} for port, gp in entries],
            "interface": "lo"})
    try:
        relay.cfg = cfg((p1, 5000))
        relay.apply_config(relay.cfg)
        assert ("0.0.0.0", p1) in relay.listeners and ("127.0.0.1", p1) in relay.listeners
        listener = relay.listeners[("0.0.0.0", p1)]
        entry = next(iter(relay.entries.values()))
        entry.rx_packets = 3
        relay.cfg = cfg((p1, 5000), (p2, 5001))
        changes = relay.apply_config(relay.cfg)
        assert changes["ports_opened"] == [p2] and relay.listeners[("0.0.0.0", p1)] is listener
        assert next(e for e in relay.entries.values() if e.group_port == 5000).rx_packets == 3
        relay.cfg = cfg((p2, 5001))
        changes = relay.apply_config(relay.cfg)
        assert changes["ports_closed"] == [p1] and listener.fileno() == -1
        assert sorted(port for _address, port in relay.listeners) == [p2] * len(relay.listeners)
    finally:
        relay.close_data_sockets()


def test_drop_log_rate_limits_per_reason():
    class Recorder:
        def __init__(self):
            self.lines = []

        def warning(self, fmt, *args):
            self.lines.append(fmt % args)
    now = [0.0]
    recorder = Recorder()
    drops = daemon.DropLog(recorder, interval=60, clock=lambda: now[0])
    assert drops.drop("malformed", "a") and not drops.drop("malformed", "b")
    assert drops.drop("unknown_server", "c")
    now[0] = 59.9
    assert not drops.drop("malformed", "d")
    now[0] = 60.0
    assert drops.drop("malformed", "e")
    assert recorder.lines == ["drop malformed: a", "drop unknown_server: c",
                              "drop malformed: e (2 more malformed drops since the last message)"]


def nobody_can_run_the_relay():
    """root, runuser, and a system python3 that user nobody may run on this checkout."""
    if os.geteuid() != 0 or not shutil.which("runuser") or not os.path.exists("/usr/bin/python3"):
        return False
    probe = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", "import multicast_proxy"],
                           env=dict(os.environ, PYTHONPATH=FILES_DIR), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not nobody_can_run_the_relay(), reason="needs root, runuser and a checkout readable by nobody")
def test_unprivileged_user_gets_a_clear_refusal(relays):
    directory = tempfile.mkdtemp(prefix="h1x-perm-")
    try:
        os.chmod(directory, 0o755)
        path = pathlib.Path(directory)
        write_server(path, random_group(), free_udp_port(), free_udp_port(), [])
        server = relays(path, "server")
        server.wait_ready()
        env = dict(os.environ, PYTHONPATH=FILES_DIR, MULTICAST_CONF_DIR=directory)
        before = (path / config.SERVER_CONFIG_NAME).read_bytes()

        def as_nobody(*argv):
            return subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-m", "multicast_proxy"] + list(argv),
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
        stats = as_nobody("multis_admin", "-P")
        assert stats.returncode == 1 and "control socket is for root only" in stats.stderr
        edit = as_nobody("multis_admin", "-A", "-m", "239.1.1.1", "-j", "10.0.0.2", "-p", "7000")
        assert edit.returncode == 1 and "run the command as root" in edit.stderr
        assert (path / config.SERVER_CONFIG_NAME).read_bytes() == before
    finally:
        shutil.rmtree(directory)


def test_a_socket_closed_by_an_earlier_callback_of_the_same_round_is_not_served(tmp_path):
    relay = ServerDaemon(str(tmp_path))
    first, second = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for dummy in range(2))
    served = []

    def serve_and_close_the_other(sock):
        served.append(sock)
        other = second if sock is first else first
        relay.unwatch(other)
        other.close()
        relay.stopping = True
    try:
        for sock in (first, second):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            relay.watch(sock, serve_and_close_the_other)
        # Both readable before the loop's first poll: one round reports both.
        for sock in (first, second):
            sock.sendto(b"x", sock.getsockname())
        assert relay.run() == 0
        assert len(served) == 1
    finally:
        first.close()
        second.close()
        relay.shutdown()


def test_client_survives_an_interface_scan_out_of_descriptors(tmp_path, monkeypatch):
    """Issue 14: EMFILE in the once-a-second scan must not end the client."""
    from multicast_proxy import netinfo
    relay = ClientDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("client", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    port = free_udp_port()
    relay.cfg = config.validate_client_config({"multi_server_info_array": [
        {"server_ip": "127.0.0.1", "server_port": port, "group_ip": random_group(), "group_port": 5000}],
        "interface": "lo"})
    try:
        relay.apply_config(relay.cfg)
        listeners = dict(relay.listeners)

        def out_of_descriptors():
            raise OSError(errno.EMFILE, "Too many open files")
        monkeypatch.setattr(netinfo, "local_addresses", out_of_descriptors)
        relay.tick()
        assert relay.listeners == listeners and all(sock.fileno() != -1 for sock in listeners.values())
        log = (tmp_path / "client_log.txt").read_text()
        assert "drop interface: cannot list the local addresses" in log and "Too many open files" in log
    finally:
        relay.close_data_sockets()


def test_a_failing_tick_does_not_end_the_loop(tmp_path):
    relay = ServerDaemon(str(tmp_path))
    relay.start()
    ticks = []

    def tick():
        ticks.append(1)
        if len(ticks) == 1:
            raise RuntimeError("boom")
        relay.stopping = True
    relay.tick = tick
    try:
        assert relay.run() == 0
        assert len(ticks) == 2
        assert "drop tick: housekeeping failed, the relay goes on: RuntimeError: boom" in \
            (tmp_path / "server_log.txt").read_text()
    finally:
        relay.shutdown()


STEAL_PORT = """
import socket, sys
port, option = int(sys.argv[1]), sys.argv[2]
results = []
for address in ("127.0.0.1", "0.0.0.0"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), 1)
    try:
        sock.bind((address, port))
        results.append("bound")
    except OSError as exc:
        results.append(str(exc.errno))
    sock.close()
print(" ".join(results))
"""


@pytest.mark.skipif(not nobody_can_run_the_relay(), reason="needs root, runuser and a checkout readable by nobody")
@pytest.mark.parametrize("option", ["SO_REUSEADDR", "SO_REUSEPORT"])
def test_another_user_cannot_bind_the_clients_relay_port(tmp_path, option):
    """Issue 14.3: the client's relay port must not be shareable by a local user."""
    relay = ClientDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("client", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    port = free_udp_port()
    try:
        relay.apply_config(config.validate_client_config({"multi_server_info_array": [
            {"server_ip": "127.0.0.1", "server_port": port, "group_ip": random_group(), "group_port": 5000}],
            "interface": "lo"}))
        assert ("0.0.0.0", port) in relay.listeners and ("127.0.0.1", port) in relay.listeners
        result = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", STEAL_PORT, str(port),
                                 option], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                check=False)
        assert result.stdout.split() == [str(errno.EADDRINUSE)] * 2, result.stderr
    finally:
        relay.close_data_sockets()


def test_a_relay_port_that_is_a_group_port_still_admits_the_application(tmp_path):
    relay = ClientDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("client", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    port = free_udp_port()
    try:
        relay.apply_config(config.validate_client_config({"multi_server_info_array": [
            {"server_ip": "127.0.0.1", "server_port": port, "group_ip": random_group(), "group_port": port}],
            "interface": "lo"}))
        application = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        application.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        application.bind(("0.0.0.0", port))
        application.close()
    finally:
        relay.close_data_sockets()
