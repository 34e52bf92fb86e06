"""The server's burst path: what queued behind the first datagram, in with one
``recvmmsg`` and out with one ``sendmmsg`` per up to 1024 copies.

The daemon runs in this process; its group is joined on ``lo`` and its
members are sockets bound to 127.0.0.x.  Datagrams are queued before the
group's reader is called, so one call sees them as a burst.
"""

import ctypes
import errno
import random
import socket
import struct

import pytest

from multicast_proxy import auth, relay_config as config, daemon, frame, mmsg, replay, server, server_fastpath

from test_daemon import free_udp_port

SECRET = bytes(range(32))


@pytest.fixture
def relay(tmp_path):
    """An in-process server daemon with one group on lo; yields (daemon, group, group_port, sender)."""
    instance = server.ServerDaemon(str(tmp_path))
    instance.log = daemon.setup_logging("server", str(tmp_path))
    instance.drop_log = daemon.DropLog(instance.log)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sender.bind(("127.0.0.1", 0))

    def start(member_ips, server_port):
        group_ip = "239.194.%d.%d" % (random.randint(0, 255), random.randint(1, 254))
        group_port = free_udp_port()
        instance.apply_config(config.validate_server_config({"multi_group_array": [
            {"group_ip": group_ip, "group_port": group_port, "server_port": server_port,
             "member_array": list(member_ips), "interface": "lo"}]}))
        group = instance.groups[group_ip]
        assert not group.error, group.error
        return group, group_port
    try:
        yield instance, start, sender
    finally:
        sender.close()
        instance.close_data_sockets()


def queue(sender, group, group_port, payloads):
    """Send ``payloads`` to the group.

    Loopback delivers within the send call (the softirq runs as the call
    re-enables bottom halves), so the group socket holds them all on return.
    """
    for payload in payloads:
        sender.sendto(payload, (group.group_ip, group_port))


def read_frames(sock, count):
    return [frame.decode(sock.recv(70000)) for _frame in range(count)]


def test_a_burst_reaches_every_member_in_order_with_consecutive_sequence_numbers(relay, receivers):
    instance, start, sender = relay
    members, port, socks = receivers
    group, group_port = start(members, port)
    assert instance.receiver is not None
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x28)
    payloads = [b"burst %03d " % index + b"x" * (index * 7) for index in range(40)]
    queue(sender, group, group_port, payloads)
    first_seq = group.seq + 1
    instance._make_reader(group)(group.sock)
    for sock in socks:
        frames = read_frames(sock, len(payloads))
        assert [f.payload for f in frames] == payloads
        assert [f.seq for f in frames] == list(range(first_seq, first_seq + len(payloads)))
        for decoded in frames:
            assert (decoded.group_ip, decoded.group_port) == (group.group_ip, group_port)
            assert (decoded.src_ip, decoded.src_port) == sender.getsockname()
            assert (decoded.tos, decoded.proto, decoded.flags, decoded.tag) == (0x28, 17, 0, None)
    assert (group.rx_packets, group.rx_bytes) == (len(payloads), sum(map(len, payloads)))
    assert [m["tx_packets"] for m in group.as_dict()["members"]] == [len(payloads)] * len(members)


def test_one_call_serves_the_first_datagram_and_one_burst_then_yields(relay, receivers):
    instance, start, sender = relay
    members, port, socks = receivers
    group, group_port = start(members[:1], port)
    total = server.BATCH + 30
    queue(sender, group, group_port, [struct.pack("!I", index) for index in range(total)])
    reader = instance._make_reader(group)
    reader(group.sock)
    # The first alone, then one slot per queued datagram: the loop gets the rest on its next round.
    assert group.rx_packets == 1 + server.BATCH
    reader(group.sock)
    assert group.rx_packets == total
    received = [struct.unpack("!I", f.payload)[0] for f in read_frames(socks[0], total)]
    assert received == list(range(total))


def test_loop_guard_and_oversize_drop_inside_a_burst(relay, receivers):
    instance, start, sender = relay
    members, port, socks = receivers
    group, group_port = start(members[:2], port)
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # TTL 0: what a relay client's re-delivery on this host looks like.
        local.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        local.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        sender.sendto(b"first", (group.group_ip, group_port))
        sender.sendto(b"a", (group.group_ip, group_port))
        local.sendto(b"looped", (group.group_ip, group_port))
        sender.sendto(b"x" * (frame.MAX_PAYLOAD + 1), (group.group_ip, group_port))
        sender.sendto(b"b", (group.group_ip, group_port))
        local.sendto(b"looped again", (group.group_ip, group_port))
        sender.sendto(b"y" * frame.MAX_PAYLOAD, (group.group_ip, group_port))
        first_seq = group.seq + 1
        instance._make_reader(group)(group.sock)
    finally:
        local.close()
    expected = [b"first", b"a", b"b", b"y" * frame.MAX_PAYLOAD]
    for sock in socks[:2]:
        frames = read_frames(sock, len(expected))
        assert [f.payload for f in frames] == expected
        # Dropped datagrams take no sequence number: the receivers see no gap.
        assert [f.seq for f in frames] == list(range(first_seq, first_seq + len(expected)))
    assert group.drops["loop"] == 2 and group.drops["oversize"] == 1
    assert group.rx_packets == len(expected)


def test_a_burst_is_tagged_when_keys_are_loaded(relay, receivers):
    instance, start, sender = relay
    members, port, socks = receivers
    group, group_port = start(members[:2], port)
    instance.apply_auth({"send_key_id": 3, "keys": {3: SECRET}})
    verifier = auth.Verifier({"send_key_id": 3, "keys": {3: SECRET}})
    fits = b"z" * (frame.MAX_PAYLOAD - frame.TAG_LEN)
    payloads = [b"one", b"two", b"z" * (frame.MAX_PAYLOAD - frame.TAG_LEN + 1), fits, b"three"]
    queue(sender, group, group_port, payloads)
    instance._make_reader(group)(group.sock)
    expected = [b"one", b"two", fits, b"three"]
    for sock in socks[:2]:
        datagrams = [sock.recv(70000) for _frame in expected]
        assert [frame.decode(data).payload for data in datagrams] == expected
        for data in datagrams:
            flags, _p, _t, key_id, _g, _gp, _s, _sp, _seq, _start, end = frame.parse_from(data, len(data))
            assert (flags, key_id) == (frame.FLAG_TAG, 3)
            window = replay.ReplayWindow()
            assert verifier.check(memoryview(data), flags, key_id, end, auth.server_identity("127.0.0.1"), window) is None
            assert window.bound
    # The datagram that leaves no room for the tag is refused, not truncated.
    assert group.drops["oversize"] == 1


def test_members_that_fail_in_a_burst_are_counted_per_datagram(relay, receivers, monkeypatch):
    instance, start, sender = relay
    members, port, socks = receivers
    group, group_port = start(members, port)
    real = instance.fan_out.send_rows

    def second_member_refused(member_set, addresses, lengths):
        failed = real(member_set, addresses, lengths)
        return failed + [(row, 1, errno.EPERM) for row in range(len(addresses))]
    monkeypatch.setattr(instance.fan_out, "send_rows", second_member_refused)
    payloads = [b"p%d" % index for index in range(6)]
    queue(sender, group, group_port, payloads)
    instance._make_reader(group)(group.sock)
    # The first datagram went the one-datagram way; the five behind it failed for member 1.
    by_ip = dict((m["member_ip"], m) for m in group.as_dict()["members"])
    assert by_ip[members[1]]["send_errors"] == 5
    assert by_ip[members[1]]["tx_packets"] == 1
    assert by_ip[members[1]]["tx_bytes"] == len(payloads[0])
    assert by_ip[members[1]]["last_error"] == "Operation not permitted"
    assert by_ip[members[0]]["tx_packets"] == by_ip[members[2]]["tx_packets"] == 6


def test_without_recvmmsg_the_relay_reads_one_datagram_per_call(relay, receivers, monkeypatch):
    monkeypatch.setattr(server_fastpath, "libc_recvmmsg", lambda: None)
    instance, start, sender = relay
    members, port, socks = receivers
    group, group_port = start(members[:1], port)
    assert instance.receiver is None
    payloads = [b"%d" % index for index in range(20)]
    queue(sender, group, group_port, payloads)
    instance._make_reader(group)(group.sock)
    assert [f.payload for f in read_frames(socks[0], len(payloads))] == payloads


def cmsg(level, kind, data):
    header = mmsg.CMSG_HEADER
    length = header.size + len(data)
    padded = (length + mmsg.CMSG_ALIGN - 1) // mmsg.CMSG_ALIGN * mmsg.CMSG_ALIGN
    return header.pack(length, level, kind) + data + bytes(padded - length)


def test_control_messages_in_any_order_or_truncated_are_parsed_safely():
    ttl = cmsg(socket.IPPROTO_IP, socket.IP_TTL, struct.pack("=i", 64))
    tos = cmsg(socket.IPPROTO_IP, socket.IP_TOS, b"\xb8")
    other = cmsg(socket.SOL_SOCKET, 29, struct.pack("=qq", 1, 2))
    for control, expected in ((ttl + tos, (64, 0xb8)), (tos + ttl, (64, 0xb8)), (other + ttl, (64, 0)),
                              (tos, (-1, 0xb8)), (b"", (-1, 0)), (ttl[:10], (-1, 0)),
                              # A length field pointing past the end stops the walk.
                              (mmsg.CMSG_HEADER.pack(500, 0, socket.IP_TTL) + bytes(8), (-1, 0))):
        buffer = b"\xff" * 8 + control
        assert mmsg.parse_ttl_tos(buffer, 8, len(control)) == expected, control


class ScriptedSendmmsg:
    """Stands in for libc's sendmmsg: scripted results; records (first entry, count) and the entries' targets."""

    def __init__(self, fan_out, results):
        self.fan_out = fan_out
        self.results = list(results)
        self.calls = []

    def __call__(self, fd, headers, count, flags):
        first = (headers - self.fan_out._scratch_address) // ctypes.sizeof(mmsg.MMsgHdr)
        self.calls.append((first, count))
        result, code = self.results.pop(0)
        ctypes.set_errno(code)
        return result


def scripted(sender, results, member_count):
    fan_out = server_fastpath.SendmmsgFanOut(sender, bytearray(64), None)
    fake = ScriptedSendmmsg(fan_out, results)
    fan_out._sendmmsg = fake
    ips = tuple("10.9.%d.%d" % (index // 250, index % 250 + 1) for index in range(member_count))
    return fan_out, fake, fan_out.member_set(ips, 5000)


def test_rows_are_split_at_the_kernels_limit_of_messages_per_call(sender):
    fan_out, fake, targets = scripted(sender, [(900, 0)] * 3 + [(300, 0)], 300)
    assert fan_out.send_rows(targets, [0] * 10, [100] * 10) == []
    assert fake.calls == [(0, 900), (0, 900), (0, 900), (0, 300)]
    fan_out, fake, targets = scripted(sender, [(1024, 0)] * 2, 1024)
    assert fan_out.send_rows(targets, [0, 0], [10, 10]) == []
    assert fake.calls == [(0, 1024), (0, 1024)]
    fan_out, fake, targets = scripted(sender, [(64 * 3, 0)], 3)
    assert fan_out.send_rows(targets, [0] * 64, [10] * 64) == []
    assert fake.calls == [(0, 192)]


def test_a_failed_copy_names_its_row_and_member_and_the_rest_go_on(sender):
    # 3 rows x 3 members: entries 0-3 sent, entry 4 (row 1, member 1) full, the rest sent.
    fan_out, fake, targets = scripted(sender, [(4, 0), (-1, errno.EAGAIN), (4, 0)], 3)
    assert fan_out.send_rows(targets, [0] * 3, [10] * 3) == [(1, 1, errno.EAGAIN)]
    assert fake.calls == [(0, 9), (4, 5), (5, 4)]


def test_send_rows_points_every_copy_at_its_member_and_row(sender, receivers):
    members, port, socks = receivers
    fan_out = server_fastpath.fan_out(sender, bytearray(64))
    targets = fan_out.member_set(members, port)
    rows = [b"row %d " % index + b"." * index for index in range(5)]
    buffers = [ctypes.create_string_buffer(data, len(data)) for data in rows]
    assert fan_out.send_rows(targets, [ctypes.addressof(b) for b in buffers], [len(data) for data in rows]) == []
    for sock in socks:
        assert [sock.recv(4096) for _row in rows] == rows
    # A member set of one takes the same path.
    single = fan_out.member_set(members[:1], port)
    assert fan_out.send_rows(single, [ctypes.addressof(buffers[0])], [3]) == []
    assert socks[0].recv(4096) == rows[0][:3]
    fan_out.close()
