"""The server's fan-out (server_fastpath.py, on mmsg.py): sendmmsg through ctypes and the sendto fallback.

Real sends go to sockets this test binds on loopback addresses only.
"""

import ctypes
import errno
import os
import random

import pytest

from multicast_proxy import capture, relay_config as config, daemon, mmsg, server, server_fastpath

MEMBERS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def fan_outs(sock, buffer):
    yield server_fastpath.fan_out(sock, buffer)
    yield server_fastpath.fan_out(sock, buffer, use_sendmmsg=False)


def test_sendmmsg_is_used_where_libc_has_it(sender):
    assert server_fastpath.fan_out(sender, bytearray(64)).name == "sendmmsg"
    assert server_fastpath.fan_out(sender, bytearray(64), use_sendmmsg=False).name == "sendto"


@pytest.mark.parametrize("use_sendmmsg", [True, False])
def test_every_member_gets_the_current_buffer_prefix(receivers, sender, use_sendmmsg):
    ips, port, socks = receivers
    buffer = bytearray(2048)
    fan_out = server_fastpath.fan_out(sender, buffer, use_sendmmsg)
    members = fan_out.member_set(ips, port)
    for payload in (b"first datagram", b"x" * 1400, b"3"):
        buffer[:len(payload)] = payload
        assert fan_out.send(members, len(payload)) in ((), [])
        # Every member gets exactly the length asked for, not the whole buffer.
        assert [sock.recvfrom(4096)[0] for sock in socks] == [payload] * len(socks)
    fan_out.close()


def test_member_sets_are_shared_while_a_group_uses_them(sender):
    fan_out = server_fastpath.fan_out(sender, bytearray(64))
    first = fan_out.member_set(MEMBERS, 5000)
    assert fan_out.member_set(tuple(MEMBERS), 5000) is first
    assert fan_out.member_set(MEMBERS, 5001) is not first
    assert fan_out.member_set(MEMBERS[:2], 5000) is not first
    assert fan_out.send(fan_out.member_set((), 5000), 10) == ()


class ScriptedSendmmsg:
    """Stands in for libc's sendmmsg: returns scripted results, records (first entry, count) per call."""

    def __init__(self, stride, results):
        self.stride = stride
        self.results = list(results)
        self.calls = []
        self.base = None

    def __call__(self, fd, headers, count, flags):
        if self.base is None:
            self.base = headers
        self.calls.append(((headers - self.base) // self.stride, count))
        result, code = self.results.pop(0)
        ctypes.set_errno(code)
        return result


def scripted_fan_out(sender, results):
    stride = ctypes.sizeof(mmsg.MMsgHdr)
    fake = ScriptedSendmmsg(stride, results)
    return server_fastpath.SendmmsgFanOut(sender, bytearray(64), fake), fake


def test_partial_send_counts_the_failed_member_and_goes_on_with_the_next(sender):
    members = tuple("10.9.0.%d" % i for i in range(1, 7))
    # 2 sent, then member 2 full, then 1 sent, then member 4 refused, then the rest.
    fan_out, fake = scripted_fan_out(sender, [(2, 0), (-1, errno.EAGAIN), (1, 0), (-1, errno.EPERM), (1, 0)])
    failed = fan_out.send(fan_out.member_set(members, 5000), 100)
    assert failed == [(2, errno.EAGAIN), (4, errno.EPERM)]
    assert fake.calls == [(0, 6), (2, 4), (3, 3), (4, 2), (5, 1)]


def test_interrupted_call_is_retried_not_counted(sender):
    fan_out, fake = scripted_fan_out(sender, [(-1, errno.EINTR), (3, 0)])
    assert fan_out.send(fan_out.member_set(MEMBERS, 5000), 100) == []
    assert fake.calls == [(0, 3), (0, 3)]


def test_one_member_is_sent_to_with_sendto_not_sendmmsg(sender, receivers):
    ips, port, socks = receivers
    fan_out, fake = scripted_fan_out(sender, [])
    fan_out.buffer[:5] = b"frame"
    assert fan_out.send(fan_out.member_set(ips[:1], port), 5) == ()
    assert socks[0].recv(64) == b"frame"
    # Port 0 is refused by the kernel: the failure is reported for member 0.
    assert fan_out.send(fan_out.member_set(ips[:1], 0), 5) == [(0, errno.EINVAL)]
    assert fake.calls == []
    fan_out.close()


def test_every_member_failing_costs_one_call_each(sender):
    fan_out, fake = scripted_fan_out(sender, [(-1, errno.EAGAIN)] * 3)
    assert fan_out.send(fan_out.member_set(MEMBERS, 5000), 100) == [(i, errno.EAGAIN) for i in range(3)]
    assert len(fake.calls) == 3


def test_error_messages():
    assert mmsg.error_message(errno.EAGAIN) == "send buffer full (EAGAIN)"
    assert mmsg.error_message(errno.ENETUNREACH) == "Network is unreachable"


class OneFanOut:
    def member_set(self, ips, port):
        return (ips, port)


def test_member_counters_derive_from_the_group_and_its_exceptions():
    group = server.Group("239.1.2.3", 5000, "lo", 0)
    fan_out = OneFanOut()
    assert group.set_members(["10.0.0.1", "10.0.0.2"], 7000, fan_out)
    group.rx_packets, group.rx_bytes = 10, 1000
    assert group.member_failed(1, 100, "send buffer full (EAGAIN)") == "10.0.0.2"
    # 10.0.0.3 joins after 10 datagrams; 10.0.0.1 leaves; nothing changes for 10.0.0.2.
    assert group.set_members(["10.0.0.2", "10.0.0.3"], 7000, fan_out)
    assert not group.set_members(["10.0.0.2", "10.0.0.3"], 7000, fan_out)
    group.rx_packets, group.rx_bytes = 15, 1500
    assert [group.member_dict(ip) for ip in group.members] == [
        {"member_ip": "10.0.0.2", "tx_packets": 14, "tx_bytes": 1400, "send_errors": 1,
         "last_error": "send buffer full (EAGAIN)"},
        {"member_ip": "10.0.0.3", "tx_packets": 5, "tx_bytes": 500, "send_errors": 0, "last_error": ""}]
    # A port change keeps the counters and points the group at a new member set.
    assert group.set_members(["10.0.0.2", "10.0.0.3"], 7001, fan_out)
    assert group.targets == (("10.0.0.2", "10.0.0.3"), 7001)
    assert group.member_dict("10.0.0.2")["tx_packets"] == 14
    # A member that leaves and comes back starts again from 0.
    group.set_members(["10.0.0.3"], 7001, fan_out)
    group.set_members(["10.0.0.3", "10.0.0.2"], 7001, fan_out)
    assert group.member_dict("10.0.0.2")["tx_packets"] == 0


def started_server(tmp_path):
    relay = server.ServerDaemon(str(tmp_path))
    relay.log = daemon.setup_logging("server", str(tmp_path))
    relay.drop_log = daemon.DropLog(relay.log)
    return relay


def group_config(count, first_port):
    # 239.194/16: organisation-local scope, joined on lo only.
    return config.validate_server_config({"multi_group_array": [
        {"group_ip": "239.194.%d.%d" % (random.randint(0, 255), index + 1), "server_port": 7000,
         "group_port": first_port + index, "member_array": ["127.0.0.1"], "interface": "lo"}
        for index in range(count)]})


def joined_lines(tmp_path):
    with open(os.path.join(str(tmp_path), "server_log.txt")) as handle:
        return [line for line in handle if "joined" in line]


def test_a_few_joined_groups_get_a_line_each(tmp_path):
    relay = started_server(tmp_path)
    try:
        relay.apply_config(group_config(server.JOIN_LOG_LINES, random.randint(20000, 30000)))
        assert len(joined_lines(tmp_path)) == server.JOIN_LOG_LINES
    finally:
        relay.close_data_sockets()


def test_many_joined_groups_get_one_summary_line(tmp_path):
    relay = started_server(tmp_path)
    try:
        relay.apply_config(group_config(server.JOIN_LOG_LINES + 1, random.randint(20000, 30000)))
        lines = joined_lines(tmp_path)
        count = server.JOIN_LOG_LINES + 1
        assert len(lines) == 1 and "%d groups joined: %d on lo (%s)" % (
            count, count, capture.MODE_SOCKET) in lines[0], lines
        assert all(not group.error for group in relay.groups.values())
    finally:
        relay.close_data_sockets()
