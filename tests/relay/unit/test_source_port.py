"""Issue 14.7: the server's copies leave from a fixed source port, and clients refuse others.

Without keys, the one thing that told a member a frame came from the relay
server was the server's address, which any local user of the server host
can send from.  With ``source_port`` the copies leave from a port the server
holds without SO_REUSEADDR (below 1024 only root can even try), and a client
entry that names it drops frames from any other port as ``source_port``.
Everything here runs on loopback.
"""

import json
import socket
import subprocess
import sys
import time

import pytest

from multicast_proxy import client_fastpath, frame, relay_config as config, relay_contract as contract
from test_daemon import (  # noqa: F401 (relays is a fixture)  # pylint: disable=unused-import
    FILES_DIR, free_udp_port, lo_sender, random_group, relays, wait_for, write_client, write_server)


def server_config(directory, group, group_port, member_port, source_port=None):
    write_server(directory, group, group_port, member_port, ["127.0.0.1"])
    path = directory / config.SERVER_CONFIG_NAME
    cfg = json.loads(path.read_text())
    if source_port is not None:
        cfg["source_port"] = source_port
    path.write_text(json.dumps(cfg))


def member_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def copy_source(sender, member, group, group_port, payload):
    """Send ``payload`` to the group; the (address, port) the member's copy came from."""
    sender.sendto(payload, (group, group_port))
    data, source = member.recvfrom(70000)
    assert frame.decode(data).payload == payload
    return source


def held_port():
    """A UDP socket holding a free port of every address, as another program would (no SO_REUSEADDR)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    return sock


def admin(directory, *args):
    env = {"PYTHONPATH": FILES_DIR, "MULTICAST_CONF_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "multicast_proxy"] + list(args), env=env, stdout=subprocess.PIPE, check=False,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=30)


def test_copies_leave_from_the_source_port_and_follow_a_change_at_reload(tmp_path, relays):
    group, group_port = random_group(), free_udp_port()
    member = member_socket()
    first, second = free_udp_port(), free_udp_port()
    server_config(tmp_path, group, group_port, member.getsockname()[1], first)
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    try:
        assert copy_source(sender, member, group, group_port, b"one") == ("127.0.0.1", first)
        assert server.request("stats")["sender"] == {"source_port": first, "bound_port": first, "error": ""}
        # The relay holds the port without SO_REUSEADDR: nobody can bind beside it, with or without the option.
        for reuse in (0, 1):
            thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
            with pytest.raises(OSError):
                thief.bind(("127.0.0.1", first))
            thief.close()
        server_config(tmp_path, group, group_port, member.getsockname()[1], second)
        reply = server.request("reload")
        assert reply["ok"] and reply["changes"]["errors"] == []
        assert copy_source(sender, member, group, group_port, b"two") == ("127.0.0.1", second)
        # The old port is free again: the socket under the sender's descriptor was replaced, not added.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("0.0.0.0", first))
        probe.close()
        # Removing the setting: back to an ephemeral port.
        server_config(tmp_path, group, group_port, member.getsockname()[1])
        assert server.request("reload")["ok"]
        address, port = copy_source(sender, member, group, group_port, b"three")
        assert port not in (first, second)
        assert server.request("stats")["sender"] == {"source_port": None, "bound_port": port, "error": ""}
    finally:
        sender.close()
        member.close()


def test_a_source_port_held_by_another_socket_keeps_the_copies_flowing_and_says_why(tmp_path, relays):
    group, group_port = random_group(), free_udp_port()
    member = member_socket()
    good = free_udp_port()
    server_config(tmp_path, group, group_port, member.getsockname()[1], good)
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    holder = held_port()
    taken = holder.getsockname()[1]
    try:
        server_config(tmp_path, group, group_port, member.getsockname()[1], taken)
        reply = server.request("reload")
        (error,) = reply["changes"]["errors"]
        assert error["source_port"] == taken
        assert "cannot send from UDP port %d" % taken in error["error"] and "another socket holds" in error["error"]
        # Still the old port: members that check the new one refuse them, the others lose nothing.
        assert copy_source(sender, member, group, group_port, b"held") == ("127.0.0.1", good)
        status = server.request("stats")["sender"]
        assert (status["source_port"], status["bound_port"]) == (taken, good) and status["error"] == error["error"]
        listing = admin(tmp_path, "multis_admin", "-P")
        assert listing.returncode == 0, listing.stderr
        assert "source port: NOT bound: cannot send from UDP port %d" % taken in listing.stdout
        shown = json.loads(admin(tmp_path, "multis_admin", "-P", "--json").stdout)
        assert shown["sender"] == status
        # The holder goes; the next reload (or the retry of the failed groups) binds it.
        holder.close()
        assert server.request("reload")["changes"]["errors"] == []
        assert copy_source(sender, member, group, group_port, b"freed") == ("127.0.0.1", taken)
        listing = admin(tmp_path, "multis_admin", "-P")
        assert "source port: copies leave from UDP port %d" % taken in listing.stdout
    finally:
        holder.close()
        sender.close()
        member.close()


def test_a_server_whose_source_port_is_held_at_start_starts_and_relays_from_another(tmp_path, relays):
    group, group_port = random_group(), free_udp_port()
    member = member_socket()
    holder = held_port()
    taken = holder.getsockname()[1]
    server_config(tmp_path, group, group_port, member.getsockname()[1], taken)
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    try:
        address, port = copy_source(sender, member, group, group_port, b"x")
        assert port != taken
        status = server.request("stats")["sender"]
        assert status["bound_port"] == port and "cannot send from UDP port %d" % taken in status["error"]
    finally:
        holder.close()
        sender.close()
        member.close()


def client_entry(group, server_port, **options):
    entry = {"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group, "group_port": 5000}
    entry.update(options)
    return entry


def frames_from(sock, group, destination, first_seq, count):
    for seq in range(first_seq, first_seq + count):
        sock.sendto(frame.encode(group, 5000, "10.0.0.9", 1234, seq, b"p%d" % seq), destination)


@pytest.mark.parametrize("where", ["entry", "client"])
def test_the_client_refuses_copies_from_another_source_port(tmp_path, relays, where):
    """The lone-frame, run and per-frame paths of the client all check the port."""
    server_port = free_udp_port()
    group = random_group()
    genuine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    genuine.bind(("127.0.0.1", 0))
    source_port = genuine.getsockname()[1]
    if where == "entry":
        write_client(tmp_path, [client_entry(group, server_port, source_port=source_port)])
    else:
        write_client(tmp_path, [client_entry(group, server_port)])
        path = tmp_path / config.CLIENT_CONFIG_NAME
        cfg = json.loads(path.read_text())
        cfg["source_port"] = source_port
        path.write_text(json.dumps(cfg))
    client = relays(tmp_path, "client")
    client.wait_ready()
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(("127.0.0.1", 0))
    destination = ("127.0.0.1", server_port)
    try:
        (entry,) = client.request("stats")["entries"]
        assert entry["source_port"] == source_port
        frames_from(forger, group, destination, 1, 1)          # alone: the lone-frame path
        frames_from(forger, group, destination, 2, 200)        # a burst that is one run
        wait_for(lambda: client.request("stats")["drops"]["source_port"] == 201, "201 refused frames")
        frames_from(genuine, group, destination, 300, 1)
        frames_from(genuine, group, destination, 301, 200)
        wait_for(lambda: client.request("stats")["entries"][0]["rx_packets"] == 201, "201 genuine frames")
        # Interleaved: the per-frame path.
        for seq in range(600, 700):
            frames_from(forger if seq % 2 else genuine, group, destination, seq, 1)
        wait_for(lambda: client.request("stats")["entries"][0]["rx_packets"] == 251, "the even frames")
        stats = client.request("stats")
        assert stats["drops"]["source_port"] == 251
        assert stats["drops"]["unknown_server"] == 0 and stats["drops"]["unknown_group"] == 0
    finally:
        genuine.close()
        forger.close()


def test_an_entry_without_a_source_port_takes_any_port(tmp_path, relays):
    server_port = free_udp_port()
    group = random_group()
    write_client(tmp_path, [client_entry(group, server_port)])
    client = relays(tmp_path, "client")
    client.wait_ready()
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _index in range(2)]
    try:
        for index, sock in enumerate(senders):
            sock.bind(("127.0.0.1", 0))
            frames_from(sock, group, ("127.0.0.1", server_port), 1 + 10 * index, 3)
        wait_for(lambda: client.request("stats")["entries"][0]["rx_packets"] == 6, "six frames")
        assert client.request("stats")["drops"]["source_port"] == 0
    finally:
        for sock in senders:
            sock.close()


def test_the_entry_setting_wins_over_the_client_setting_and_a_reload_changes_it(tmp_path, relays):
    server_port = free_udp_port()
    group = random_group()
    a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _index in range(2))
    try:
        for sock in (a, b):
            sock.bind(("127.0.0.1", 0))
        path = tmp_path / config.CLIENT_CONFIG_NAME
        write_client(tmp_path, [client_entry(group, server_port, source_port=a.getsockname()[1])])
        cfg = json.loads(path.read_text())
        cfg["source_port"] = b.getsockname()[1]
        path.write_text(json.dumps(cfg))
        client = relays(tmp_path, "client")
        client.wait_ready()
        destination = ("127.0.0.1", server_port)
        frames_from(a, group, destination, 1, 1)
        frames_from(b, group, destination, 2, 1)
        wait_for(lambda: client.request("stats")["drops"]["source_port"] == 1, "b refused")
        assert client.request("stats")["entries"][0]["rx_packets"] == 1
        # Without the entry's own port, the client's applies, to the same running entry.
        write_client(tmp_path, [client_entry(group, server_port)])
        cfg = json.loads(path.read_text())
        cfg["source_port"] = b.getsockname()[1]
        path.write_text(json.dumps(cfg))
        assert client.request("reload")["ok"]
        frames_from(a, group, destination, 3, 1)
        frames_from(b, group, destination, 4, 1)
        wait_for(lambda: client.request("stats")["drops"]["source_port"] == 2, "a refused")
        assert client.request("stats")["entries"][0]["rx_packets"] == 2
    finally:
        a.close()
        b.close()


# -- the config model and the commands ------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [("5000", "not a port"), (0, "not a port"), (65536, "not a port"),
                                            (True, "not a port"), (None, "not a port")])
def test_a_source_port_in_a_file_must_be_a_port(value, message):
    text = json.dumps({"multi_group_array": [], "source_port": value})
    with pytest.raises(config.ConfigError) as info:
        config.load_server_config(text)
    assert "source_port" in str(info.value) and message in str(info.value)
    text = json.dumps({"multi_server_info_array": [dict(client_entry("239.1.1.1", 7000), source_port=value)]})
    with pytest.raises(config.ConfigError) as info:
        config.load_client_config(text)
    assert "source_port" in str(info.value) and message in str(info.value)


def saved(result):
    """The command changed the file; no daemon runs here to apply it (exit code 3 says so)."""
    assert result.returncode == contract.EXIT_NOT_RUNNING, result.stderr
    return True


def test_the_commands_set_and_remove_the_source_port(tmp_path):
    assert saved(admin(tmp_path, "multis_admin", "--set", "source_port=700"))
    assert json.loads((tmp_path / config.SERVER_CONFIG_NAME).read_text())["source_port"] == 700
    refused = admin(tmp_path, "multis_admin", "--set", "source_port=http")
    assert refused.returncode == 2 and "source_port" in refused.stderr and "not a port" in refused.stderr
    assert json.loads((tmp_path / config.SERVER_CONFIG_NAME).read_text())["source_port"] == 700
    assert saved(admin(tmp_path, "multis_admin", "--set", "source_port="))
    assert "source_port" not in json.loads((tmp_path / config.SERVER_CONFIG_NAME).read_text())
    added = admin(tmp_path, "multic_admin", "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "6000", "-m", "239.1.1.1",
                  "--source-port", "700")
    assert saved(added)
    (entry,) = json.loads((tmp_path / config.CLIENT_CONFIG_NAME).read_text())[config.CLIENT_TOP_KEY]
    assert entry["source_port"] == 700
    bad = admin(tmp_path, "multic_admin", "-A", "-i", "10.0.0.1", "-g", "5000", "-s", "6000", "-m", "239.1.1.1",
                "--source-port", "99999")
    assert bad.returncode == 2 and "not a port" in bad.stderr
    assert saved(admin(tmp_path, "multic_admin", "--set", "source_port=701"))
    assert json.loads((tmp_path / config.CLIENT_CONFIG_NAME).read_text())["source_port"] == 701


def test_the_receivers_report_each_frames_source_port_as_a_port_word():
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _index in range(3)]
    recvmmsg = client_fastpath.mmsg.libc_recvmmsg()
    assert recvmmsg is not None, "this Linux and Python have recvmmsg; the batched receiver must be tested"
    receivers = [client_fastpath.RecvfromReceiver(8), client_fastpath.MmsgReceiver(recvmmsg, 8)]
    try:
        for sock in senders:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in senders]
        for receiver in receivers:
            for sock in senders:
                sock.sendto(b"frame", listener.getsockname())
            time.sleep(0.05)
            assert receiver.receive_first(listener) == 1
            assert list(receiver.port_words)[:1] == [client_fastpath.port_word(ports[0])]
            assert receiver.receive(listener) == 2
            assert list(receiver.port_words[:2]) == [client_fastpath.port_word(port) for port in ports[1:]]
            assert [receiver.source(index)[1] for index in range(2)] == ports[1:]
            receiver.close()
    finally:
        listener.close()
        for sock in senders:
            sock.close()
