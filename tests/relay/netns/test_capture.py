"""Capture mode and preserve_source across hosts of a VPC that drops multicast.

- A sender with IP_MULTICAST_LOOP off is invisible to the server's group
  socket (socket mode relays nothing) and relayed in capture mode.
- A capture group with group port 0 relays every port of the group; each
  datagram is re-delivered to the port it was sent to.
- With preserve_source a receiver sees the original sender's address, port
  and TOS, also for a datagram bigger than the interface MTU; without it, it
  sees the relay client's address.
- Capture mode counts IP fragments as drops (it does not reassemble).
- Two hosts that both send and receive a group in capture mode with
  preserve_source do not relay each other's re-deliveries back (loop guard).
"""

import json
import sys

from vpc import TOOLS
from vpc import wait_until

GROUP = "239.77.8.1"
SERVER_PORT = 6801
LOOP_OFF_PORT = 5801
ANY_PORTS = (5811, 5812)
PRESERVE_PORT = 5821
SENDER_PORT = 40123
DSCP_EF_TOS = 0xB8

# A sender bound to a fixed source port with a TOS byte, and a receiver that
# reports the source and TOS of every datagram: what a receiver filtering by
# source would look at.  Payload: 4-byte index, then the index repeated as
# filler so the receiver can check every byte.
SENDER = r"""
import socket, struct, sys, json
source, port, group, group_port, tos, sizes = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), \
    int(sys.argv[5]), [int(size) for size in sys.argv[6].split(",")]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, port))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
for index, size in enumerate(sizes):
    sock.sendto(struct.pack(">I", index) + bytes([index % 256]) * (size - 4), (group, group_port))
print(json.dumps({"sent": len(sizes)}))
"""

RECEIVER = r"""
import json, os, select, socket, struct, sys, time
group, port, expect, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
sock.bind(("0.0.0.0", port))
mreqn = socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("=i", socket.if_nametoindex("eth0"))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
open(ready, "w").close()
seen = []
while len(seen) < expect and select.select([sock], [], [], 5.0)[0]:
    data, ancdata, _flags, source = sock.recvmsg(65535, 64)
    tos = [item[2][0] for item in ancdata if item[0] == socket.IPPROTO_IP and item[1] == socket.IP_TOS]
    index = struct.unpack(">I", data[:4])[0]
    intact = data[4:] == bytes([index % 256]) * (len(data) - 4)
    seen.append({"source": list(source), "tos": tos[0] if tos else None, "size": len(data),
                 "index": index, "intact": intact})
print(json.dumps(seen))
"""


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=4) + "\n")


def server_group(vpc, members, capture, group_port):
    group = {"group_ip": GROUP, "server_port": SERVER_PORT, "group_port": group_port,
             "member_array": [m.ip for m in members]}
    if capture:
        group["capture"] = True
    write_json(vpc["src"].conf_dir / "server_cfg.json.txt", {"multi_group_array": [group]})


def client_entry(vpc, member, group_port, preserve_source=False):
    cfg = {"multi_server_info_array": [{"server_ip": vpc["src"].ip, "server_port": SERVER_PORT,
                                        "group_ip": GROUP, "group_port": group_port}]}
    if preserve_source:
        cfg["preserve_source"] = True
    write_json(member.conf_dir / "client_cfg.json.txt", cfg)


def reload(host, side):
    reply = host.control(side, {"cmd": "reload"})
    assert reply["ok"], reply
    return reply


def group_stats(host):
    (group,) = host.control("server", {"cmd": "stats"})["groups"]
    return group


def send_loop_off(host, port, count, stream_id):
    argv = [sys.executable, TOOLS / "mcsend.py", "--group", GROUP, "--port", port, "--count", count,
            "--rate", 2000, "--size", 200, "--stream-id", stream_id, "--loop", 0]
    return json.loads(host.run(argv).stdout.strip().splitlines()[-1])


def test_sender_with_loopback_off_needs_capture_mode(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    server_group(vpc, [member], capture=False, group_port=LOOP_OFF_PORT)
    client_entry(vpc, member, LOOP_OFF_PORT)
    member.start_relay("client")
    source.start_relay("server")

    # Socket mode: the kernel never loops the datagrams back to the server's socket.
    drops_before = vpc.multicast_drops()
    receiver = member.start_receiver("socket-mode", GROUP, LOOP_OFF_PORT, idle_timeout=2)
    sent = send_loop_off(source, LOOP_OFF_PORT, 300, stream_id=1)
    assert sent["sent"] == 300
    assert receiver.json_result()["received"] == 0
    assert group_stats(source)["rx_packets"] == 0
    # They were sent: the VPC dropped them on the wire.
    assert vpc.multicast_drops() - drops_before >= 300

    server_group(vpc, [member], capture=True, group_port=LOOP_OFF_PORT)
    changes = reload(source, "server")["changes"]
    assert changes["rejoined"] == [GROUP], changes
    assert group_stats(source)["mode"] == "capture"
    receiver = member.start_receiver("capture-mode", GROUP, LOOP_OFF_PORT, expect=300, idle_timeout=5)
    send_loop_off(source, LOOP_OFF_PORT, 300, stream_id=2)
    summary = receiver.json_result()
    assert summary["unique"] == 300 and summary["corrupt"] == 0 and summary["duplicates"] == 0, summary
    stats = group_stats(source)
    assert stats["rx_packets"] == 300, stats
    assert stats["members"][0]["tx_packets"] == 300, stats


def test_capture_with_group_port_0_relays_every_port_to_its_own_port(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    server_group(vpc, [member], capture=True, group_port=0)
    client_entry(vpc, member, 0)
    member.start_relay("client")
    source.start_relay("server")
    receivers = [member.start_receiver("port-%d" % port, GROUP, port, expect=200, idle_timeout=5)
                 for port in ANY_PORTS]
    for stream_id, port in enumerate(ANY_PORTS, start=1):
        sent = send_loop_off(source, port, 200, stream_id)
        assert sent["sent"] == 200
    for stream_id, receiver in enumerate(receivers, start=1):
        summary = receiver.json_result()
        assert summary["unique"] == 200 and summary["foreign"] == 0 and summary["corrupt"] == 0, summary
        # Only its own port's stream: the frame carried the real group port.
        assert list(summary["streams"]) == [str(stream_id)], summary
    assert group_stats(source)["rx_packets"] == 400


def receive_from(vpc, member, sizes, label):
    """Send `sizes` from src:SENDER_PORT with TOS EF; return what a receiver on `member` saw."""
    source = vpc["src"]
    ready = member.workdir / ("%s.ready" % label)
    receiver = member.start(label, [sys.executable, "-c", RECEIVER, GROUP, PRESERVE_PORT, len(sizes), ready])
    wait_until(ready.exists, "the receiver to join")
    sent = source.run([sys.executable, "-c", SENDER, source.ip, SENDER_PORT, GROUP, PRESERVE_PORT, DSCP_EF_TOS,
                       ",".join(str(size) for size in sizes)])
    assert json.loads(sent.stdout)["sent"] == len(sizes)
    receiver.wait()
    return json.loads(receiver.stdout())


def test_preserve_source_delivers_with_the_original_address_port_and_tos(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    server_group(vpc, [member], capture=False, group_port=PRESERVE_PORT)
    client_entry(vpc, member, PRESERVE_PORT)
    member.start_relay("client")
    source.start_relay("server")
    # The 4000-byte datagram does not fit eth0's 1500-byte MTU: the client
    # fragments its raw packet itself.
    sizes = [100] * 20 + [4000, 1472, 1473]

    # Control: without preserve_source the receiver sees the relay client.
    seen = receive_from(vpc, member, sizes, "plain")
    assert len(seen) == len(sizes)
    assert all(item["source"][0] == member.ip for item in seen), seen[:3]

    client_entry(vpc, member, PRESERVE_PORT, preserve_source=True)
    reload(member, "client")
    seen = receive_from(vpc, member, sizes, "preserved")
    assert sorted(item["index"] for item in seen) == list(range(len(sizes))), seen
    for item in seen:
        assert item["source"] == [source.ip, SENDER_PORT], item
        assert item["tos"] == DSCP_EF_TOS, item
        assert item["intact"] and item["size"] == sizes[item["index"]], item
    (entry,) = member.control("client", {"cmd": "stats"})["entries"]
    assert entry["preserve_source"] is True
    assert entry["delivered_packets"] == 2 * len(sizes)
    assert member.control("client", {"cmd": "stats"})["drops"]["deliver_error"] == 0


def test_two_way_capture_with_preserve_source_does_not_loop(make_vpc):
    """Both hosts send and receive the group: each re-delivery carries the other
    host's address, and neither server relays it back."""
    vpc = make_vpc({"a": 1, "b": 1})
    a, b = vpc["a"], vpc["b"]
    for host, peer in ((a, b), (b, a)):
        write_json(host.conf_dir / "server_cfg.json.txt", {"multi_group_array": [
            {"group_ip": GROUP, "server_port": SERVER_PORT, "group_port": PRESERVE_PORT, "capture": True,
             "member_array": [peer.ip]}]})
        write_json(host.conf_dir / "client_cfg.json.txt", {"multi_server_info_array": [
            {"server_ip": peer.ip, "server_port": SERVER_PORT, "group_ip": GROUP, "group_port": PRESERVE_PORT,
             "preserve_source": True}]})
        host.start_relay("client")
        host.start_relay("server")
    ready = b.workdir / "two-way.ready"
    receiver = b.start("two-way", [sys.executable, "-c", RECEIVER, GROUP, PRESERVE_PORT, 50, ready])
    wait_until(ready.exists, "the receiver to join")
    a.run([sys.executable, "-c", SENDER, a.ip, SENDER_PORT, GROUP, PRESERVE_PORT, 0, ",".join(["300"] * 50)])
    receiver.wait()
    seen = json.loads(receiver.stdout())
    assert len(seen) == 50 and all(item["source"] == [a.ip, SENDER_PORT] for item in seen), seen[:3]
    assert group_stats(a)["rx_packets"] == 50

    # Barrier: b's own datagrams take the same path to a (b's server, a's
    # client) as any re-relayed one would have, and after them.
    b.run([sys.executable, "-c", SENDER, b.ip, SENDER_PORT, GROUP, PRESERVE_PORT, 0, ",".join(["300"] * 5)])

    def a_entry():
        (entry,) = a.control("client", {"cmd": "stats"})["entries"]
        return entry
    wait_until(lambda: a_entry()["rx_packets"] >= 5, "b's datagrams to reach a")
    # Nothing came back: b's server relayed only b's own 5 datagrams.
    assert a_entry()["rx_packets"] == 5, a_entry()
    assert group_stats(b)["rx_packets"] == 5, group_stats(b)


def test_capture_counts_and_drops_ip_fragments(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1})
    source, member = vpc["src"], vpc["m1"]
    server_group(vpc, [member], capture=True, group_port=PRESERVE_PORT)
    client_entry(vpc, member, PRESERVE_PORT)
    member.start_relay("client")
    source.start_relay("server")
    # 4000 bytes + UDP header leave eth0 (MTU 1500) as 3 fragments each.
    sizes = [4000, 100, 4000, 100, 100]
    seen = receive_from(vpc, member, sizes, "fragments")
    assert sorted(item["size"] for item in seen) == [100, 100, 100], seen
    stats = group_stats(source)
    assert stats["rx_packets"] == 3, stats
    assert stats["drops"]["fragment"] == 6, stats
