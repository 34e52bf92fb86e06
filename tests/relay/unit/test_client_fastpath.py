"""The client's batched data path (client_fastpath.py): recvmmsg/sendmmsg and the per-frame fallback.

Real traffic goes to sockets this test binds on loopback addresses only.
"""

import errno
import socket

import pytest

from multicast_proxy import client_fastpath


def udp_socket(address="127.0.0.1", blocking=False):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.setblocking(blocking)
    return sock


@pytest.fixture
def sockets():
    opened = []

    def open_one(address="127.0.0.1", blocking=False):
        sock = udp_socket(address, blocking)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


@pytest.fixture(params=[True, False], ids=["mmsg", "fallback"])
def batch_io(request):
    receiver, sender = client_fastpath.batch_io(use_mmsg=request.param)
    yield receiver, sender
    sender.close()
    receiver.close()


def test_the_mmsg_pair_is_used_where_libc_has_it():
    receiver, sender = client_fastpath.batch_io()
    assert (receiver.name, sender.name) == ("recvmmsg", "sendmmsg")
    sender.close()
    receiver.close()
    receiver, sender = client_fastpath.batch_io(use_mmsg=False)
    assert (receiver.name, sender.name) == ("recvfrom", "sendto")
    sender.close()
    receiver.close()


def test_a_batch_is_what_is_queued(sockets, batch_io):
    receiver, _sender = batch_io
    listener = sockets()
    first, second = sockets("127.0.0.1"), sockets("127.0.0.2")
    frames = [(first, b"one"), (second, b"x" * 1400), (first, b"")]
    for sock, data in frames:
        sock.sendto(data, listener.getsockname())
    assert receiver.receive(listener) == 3
    assert receiver.lengths == [3, 1400, 0]
    assert receiver.sources == [client_fastpath.address_key("127.0.0.1"), client_fastpath.address_key("127.0.0.2"),
                                client_fastpath.address_key("127.0.0.1")]
    assert [receiver.source(i) for i in range(3)] == [sock.getsockname() for sock, _data in frames]
    assert bytes(receiver.slots[1][:1400]) == b"x" * 1400 and bytes(receiver.slots[0][:3]) == b"one"
    # Nothing queued: an empty batch, not an error and not a wait.
    assert receiver.receive(listener) == 0


def test_a_batch_stops_at_the_slot_count(sockets, batch_io):
    receiver, _sender = batch_io
    listener = sockets()
    source = sockets()
    for number in range(client_fastpath.BATCH + 5):
        source.sendto(b"%d" % number, listener.getsockname())
    assert receiver.receive(listener) == client_fastpath.BATCH
    assert receiver.receive(listener) == 5
    assert bytes(receiver.slots[4][:receiver.lengths[4]]) == b"%d" % (client_fastpath.BATCH + 4)


def test_a_receive_error_is_raised(sockets, batch_io):
    receiver, _sender = batch_io
    closed = sockets()
    port = closed.getsockname()[1]
    closed.close()
    connected = sockets()
    connected.connect(("127.0.0.1", port))
    connected.send(b"to nobody")
    # Loopback answers with ICMP port unreachable, reported by the next receive.
    with pytest.raises(OSError) as caught:
        receiver.receive(connected)
    assert caught.value.errno == errno.ECONNREFUSED


def test_copies_go_out_per_socket_in_order_from_the_slots(sockets, batch_io):
    receiver, sender = batch_io
    listener = sockets()
    feeder = sockets()
    destination = sockets(blocking=True)
    destination.settimeout(2)
    out_a, out_b = sockets(), sockets()
    for data in (b"alpha", b"bravo-payload", b"charlie"):
        feeder.sendto(b"HEADER" + data, listener.getsockname())
    assert receiver.receive(listener) == 3
    address = destination.getsockname()
    sockaddr = client_fastpath.sockaddr_in(*address)
    entry_a, entry_b = object(), object()
    # Frames 0 and 2 through out_a, frame 1 through out_b: three runs.
    for slot, target, entry in ((0, out_a, entry_a), (1, out_b, entry_b), (2, out_a, entry_a)):
        sender.add(target, entry, slot, 6, receiver.lengths[slot] - 6, address, sockaddr)
    assert sender.flush() == []
    got = [destination.recvfrom(2048) for dummy in range(3)]
    assert [data for data, _source in got] == [b"alpha", b"bravo-payload", b"charlie"]
    assert [source for _data, source in got] == [out_a.getsockname(), out_b.getsockname(), out_a.getsockname()]
    # Flushed means sent: a second flush sends nothing more.
    assert sender.flush() == []
    destination.setblocking(False)
    with pytest.raises(BlockingIOError):
        destination.recvfrom(2048)


def test_a_refused_copy_is_reported_and_the_others_go_out(sockets, batch_io):
    receiver, sender = batch_io
    listener = sockets()
    sockets().sendto(b"payload", listener.getsockname())
    assert receiver.receive(listener) == 1
    destination = sockets(blocking=True)
    destination.settimeout(2)
    good = destination.getsockname()
    out = sockets()
    entries = [object(), object(), object()]
    # Port 0 is not a destination: the kernel refuses that copy with EINVAL.
    for entry, address in zip(entries, (good, ("127.0.0.1", 0), good)):
        sender.add(out, entry, 0, 0, 7, address, client_fastpath.sockaddr_in(*address))
    assert sender.flush() == [(entries[1], 7, errno.EINVAL)]
    assert [destination.recvfrom(64)[0] for dummy in range(2)] == [b"payload", b"payload"]


def test_more_copies_than_records_are_all_sent(sockets):
    receiver, sender = client_fastpath.batch_io()
    try:
        listener = sockets()
        sockets().sendto(b"copy", listener.getsockname())
        assert receiver.receive(listener) == 1
        destination = sockets()
        address = destination.getsockname()
        out = sockets()
        copies = 2 * client_fastpath.BATCH + 3
        for _copy in range(copies):
            sender.add(out, None, 0, 0, 4, address, client_fastpath.sockaddr_in(*address))
        assert sender.flush() == []
        received = 0
        while True:
            try:
                assert destination.recv(64) == b"copy"
            except BlockingIOError:
                break
            received += 1
        assert received == copies
    finally:
        sender.close()
        receiver.close()


@pytest.mark.parametrize("use_mmsg", [True, False], ids=["mmsg", "fallback"])
def test_the_client_takes_back_copies_the_kernel_refused(tmp_path, sockets, use_mmsg):
    import logging

    from multicast_proxy import client, daemon, frame

    listener = sockets()
    port = listener.getsockname()[1]
    destination = sockets()
    good_port = destination.getsockname()[1]
    out = sockets()
    relay = client.ClientDaemon(str(tmp_path))
    relay.log = logging.getLogger("test_client_fastpath")
    relay.drop_log = daemon.DropLog(relay.log)
    relay.receiver, relay.sender = client_fastpath.batch_io(use_mmsg)
    # Group port 0: re-delivered to the frame's group port, so a frame for port 0 is refused (EINVAL).
    entry = client.Entry("127.0.0.1", port, "127.0.0.1", 0)
    entry.targets = (out,)
    relay.entries = {entry.key: entry}
    relay.routes = {entry.route: entry}
    relay.servers = {client_fastpath.address_key("127.0.0.1")}
    feeder = sockets()
    for sequence, group_port in ((1, good_port), (2, 0), (3, good_port)):
        feeder.sendto(frame.encode("127.0.0.1", group_port, "10.0.0.9", 1, sequence, b"data%d" % sequence),
                      ("127.0.0.1", port))
    relay._deliver(port, listener)
    assert (entry.rx_packets, entry.rx_bytes, entry.delivered_packets, entry.delivered_bytes) == (3, 15, 2, 10)
    assert relay.drops["deliver_error"] == 1
    assert [destination.recv(64) for dummy in range(2)] == [b"data1", b"data3"]
    relay.close_data_sockets()
    assert relay.receiver is None


def test_the_first_frame_is_read_alone(sockets, batch_io):
    receiver, _sender = batch_io
    listener = sockets()
    source = sockets("127.0.0.3")
    assert receiver.receive_first(listener) == 0
    for data in (b"first", b"second", b"third"):
        source.sendto(data, listener.getsockname())
    assert receiver.receive_first(listener) == 1
    assert (receiver.lengths, receiver.sources) == ([5], [client_fastpath.address_key("127.0.0.3")])
    assert receiver.source(0) == source.getsockname()
    assert bytes(receiver.slots[0][:5]) == b"first"
    # What queued behind it comes as one batch.
    assert receiver.receive(listener) == 2
    assert [bytes(receiver.slots[i][:receiver.lengths[i]]) for i in range(2)] == [b"second", b"third"]
    assert receiver.source(1) == source.getsockname()


def client_with_one_entry(tmp_path, listener_port, group_port, target, use_mmsg=True):
    """A ClientDaemon whose only entry takes frames from 127.0.0.1 on ``listener_port`` for 127.0.0.1:group_port."""
    import logging

    from multicast_proxy import client, daemon

    relay = client.ClientDaemon(str(tmp_path))
    relay.log = logging.getLogger("test_client_fastpath")
    relay.drop_log = daemon.DropLog(relay.log)
    relay.receiver, relay.sender = client_fastpath.batch_io(use_mmsg)
    entry = client.Entry("127.0.0.1", listener_port, "127.0.0.1", group_port)
    entry.targets = (target,)
    relay.entries = {entry.key: entry}
    relay.routes = {entry.route: entry}
    relay.servers = {client_fastpath.address_key("127.0.0.1")}
    return relay, entry


@pytest.mark.parametrize("use_mmsg", [True, False], ids=["mmsg", "fallback"])
def test_the_first_frame_takes_the_short_path_and_is_counted_once(tmp_path, sockets, use_mmsg):
    from multicast_proxy import frame

    listener = sockets()
    port = listener.getsockname()[1]
    destination = sockets()
    relay, entry = client_with_one_entry(tmp_path, port, destination.getsockname()[1], sockets(), use_mmsg)
    batches = []
    deliver_received = relay._deliver_received
    deliver_run = relay._deliver_run

    def recording(listen_port, count):
        batches.append(("general", count))
        deliver_received(listen_port, count)

    def recording_run(listen_port, count):
        taken = deliver_run(listen_port, count)
        if taken:
            batches.append(("run", count))
        return taken
    relay._deliver_received = recording
    relay._deliver_run = recording_run
    feeder = sockets()
    base = 7 << 32
    for sequence in (base + 1, base + 2, base + 3):
        feeder.sendto(frame.encode("127.0.0.1", destination.getsockname()[1], "10.0.0.9", 1, sequence,
                                   b"payload%d" % (sequence - base)), ("127.0.0.1", port))
    relay._deliver(port, listener)
    # The first frame never reached the batch paths; the two behind it came as one batch,
    # taken as a run where the receiver can check one (recvmmsg).
    assert batches == [("run" if use_mmsg else "general", 2)]
    assert [destination.recv(64) for dummy in range(3)] == [b"payload1", b"payload2", b"payload3"]
    assert (entry.rx_packets, entry.rx_bytes, entry.delivered_packets, entry.delivered_bytes) == (3, 24, 3, 24)
    assert (entry.tracker.highest, entry.tracker.lost, entry.tracker.duplicates) == (base + 3, 0, 0)
    relay.close_data_sockets()


def test_a_first_frame_the_kernel_refuses_is_counted_not_delivered(tmp_path, sockets):
    from multicast_proxy import frame

    listener = sockets()
    port = listener.getsockname()[1]
    # Group port 0: re-delivered to port 0, which the kernel refuses (EINVAL).
    relay, entry = client_with_one_entry(tmp_path, port, 0, sockets())
    sockets().sendto(frame.encode("127.0.0.1", 0, "10.0.0.9", 1, 5, b"data"), ("127.0.0.1", port))
    relay._deliver(port, listener)
    assert (entry.rx_packets, entry.rx_bytes, entry.delivered_packets, entry.delivered_bytes) == (1, 4, 0, 0)
    assert relay.drops["deliver_error"] == 1
    relay.close_data_sockets()


def test_frames_that_are_not_the_common_case_take_the_general_path(tmp_path, sockets):
    from multicast_proxy import frame

    listener = sockets()
    port = listener.getsockname()[1]
    destination = sockets()
    relay, entry = client_with_one_entry(tmp_path, port, destination.getsockname()[1], sockets())
    feeder = sockets()
    group_port = destination.getsockname()[1]
    cases = [
        frame.encode("127.0.0.1", group_port, "10.0.0.9", 1, 1, b"tagged", tag=b"t" * frame.TAG_LEN),
        b"MC\x02" + b"\x00" * 40,                                               # another version
        frame.encode("127.0.0.1", group_port + 1, "10.0.0.9", 1, 2, b"other"),  # no entry for this port
    ]
    for data in cases:
        feeder.sendto(data, ("127.0.0.1", port))
        relay._deliver(port, listener)
    # The general path's decisions: without keys a tagged frame's payload is delivered without
    # its tag; a bad version and an unknown group are dropped with their reasons.
    assert destination.recv(64) == b"tagged"
    assert (entry.rx_packets, entry.delivered_packets) == (1, 1)
    assert (relay.drops["bad_version"], relay.drops["unknown_group"]) == (1, 1)
    relay.close_data_sockets()


def queue_frames(feeder, port, frames):
    """Send each (group port, sequence, payload) as a v1 frame for group 127.0.0.1 to the listener."""
    from multicast_proxy import frame

    for group_port, sequence, payload in frames:
        feeder.sendto(frame.encode("127.0.0.1", group_port, "10.0.0.9", 1, sequence, payload), ("127.0.0.1", port))


def test_a_uniform_burst_is_recognised_column_by_column(sockets):
    from multicast_proxy import frame

    receiver, sender = client_fastpath.batch_io()
    listener = sockets()
    port = listener.getsockname()[1]
    feeder = sockets()
    base = (9 << 32) + 100
    try:
        queue_frames(feeder, port, [(5000, base + i, b"p" * i) for i in range(5)])
        assert receiver.receive(listener) == 5
        assert receiver.uniform_run(5) == (client_fastpath.address_key("127.0.0.1"), frame.ip_to_int("127.0.0.1"), 5000,
                                           base)
        # The counter's low word crossing a byte boundary is still consecutive.
        queue_frames(feeder, port, [(5000, (9 << 32) + 255 + i, b"q") for i in range(3)])
        assert receiver.receive(listener) == 3
        assert receiver.uniform_run(3)[3] == (9 << 32) + 255
        not_runs = [
            [(5000, base, b"a"), (5000, base + 2, b"b")],                 # a gap
            [(5000, base + 1, b"a"), (5000, base, b"b")],                 # out of order
            [(5000, base, b"a"), (5001, base + 1, b"b")],                 # another group port
            [(5000, base, b"a"), (5000, base + 1 + (1 << 32), b"b")],     # another server run
            [(5000, base, b"a"), (5000, base + 2, b"b"), (5000, base + 2, b"c")],  # ends fit, middle does not
        ]
        for frames in not_runs:
            queue_frames(feeder, port, frames)
            assert receiver.receive(listener) == len(frames)
            assert receiver.uniform_run(len(frames)) is None, frames
        other = sockets("127.0.0.2")
        feeder.sendto(frame.encode("127.0.0.1", 5000, "10.0.0.9", 1, 1, b"a"), ("127.0.0.1", port))
        other.sendto(frame.encode("127.0.0.1", 5000, "10.0.0.9", 1, 2, b"b"), ("127.0.0.1", port))
        assert receiver.receive(listener) == 2
        assert receiver.uniform_run(2) is None          # another sender
        feeder.sendto(frame.encode("127.0.0.1", 5000, "10.0.0.9", 1, 1, b"a"), ("127.0.0.1", port))
        feeder.sendto(frame.encode("127.0.0.1", 5000, "10.0.0.9", 1, 2, b"b", tag=b"t" * frame.TAG_LEN),
                      ("127.0.0.1", port))
        assert receiver.receive(listener) == 2
        assert receiver.uniform_run(2) is None          # a tagged frame
        feeder.sendto(frame.encode("127.0.0.1", 5000, "10.0.0.9", 1, 1, b"a"), ("127.0.0.1", port))
        feeder.sendto(b"MC\x01", ("127.0.0.1", port))
        assert receiver.receive(listener) == 2
        assert receiver.uniform_run(2) is None          # too short for a header
        feeder.sendto(frame.encode("127.0.0.1", 5000, "10.0.0.9", 1, 1, b"a"), ("127.0.0.1", port))
        assert receiver.receive(listener) == 1
        assert receiver.uniform_run(1) is None          # one frame is no run
    finally:
        sender.close()
        receiver.close()


def test_a_run_is_delivered_whole_with_its_counters(tmp_path, sockets):
    listener = sockets()
    port = listener.getsockname()[1]
    destination = sockets()
    group_port = destination.getsockname()[1]
    relay, entry = client_with_one_entry(tmp_path, port, group_port, sockets())
    base = 3 << 32
    payloads = [b"frame %02d " % i + b"x" * (i * 31) for i in range(40)]
    queue_frames(sockets(), port, [(group_port, base + 1 + i, data) for i, data in enumerate(payloads)])
    general = []
    relay._deliver_received = lambda listen_port, count: general.append(count)
    relay._deliver(port, listener)
    assert general == []
    assert [destination.recv(2048) for dummy in payloads] == payloads
    size = sum(map(len, payloads))
    assert (entry.rx_packets, entry.rx_bytes, entry.delivered_packets, entry.delivered_bytes) == (40, size, 40, size)
    assert (entry.tracker.highest, entry.tracker.lost, entry.tracker.duplicates) == (base + 40, 0, 0)
    relay.close_data_sockets()


def test_copies_of_a_run_the_kernel_refuses_are_taken_back(tmp_path, sockets):
    import errno as errors

    listener = sockets()
    port = listener.getsockname()[1]
    destination = sockets()
    group_port = destination.getsockname()[1]
    relay, entry = client_with_one_entry(tmp_path, port, group_port, sockets())
    send_run = relay.sender.send_run

    def third_refused(target, lengths, start, sockaddr):
        return [item for item in send_run(target, lengths, start, sockaddr) if item[0] != 2] + [(2, errors.EPERM)]
    relay.sender.send_run = third_refused
    payloads = [b"aa", b"bbb", b"cccc", b"ddddd"]
    queue_frames(sockets(), port, [(group_port, 10 + i, data) for i, data in enumerate(payloads)])
    relay._deliver(port, listener)
    # Frame 0 went alone; frames 1-3 were one run, and its third copy (frame 3) was refused.
    assert (entry.rx_packets, entry.rx_bytes) == (4, 14)
    assert (entry.delivered_packets, entry.delivered_bytes) == (3, 9)
    assert relay.drops["deliver_error"] == 1
    relay.close_data_sockets()


def test_a_run_is_sent_with_one_call_and_failures_name_their_slot(sockets):
    import ctypes
    import errno as errors

    receiver, sender = client_fastpath.batch_io()
    calls = []
    results = [(2, 0), (-1, errors.EAGAIN), (1, 0)]

    def scripted(fd, headers, count, flags):
        calls.append(count)
        result, code = results.pop(0)
        ctypes.set_errno(code)
        return result
    sender._sendmmsg = scripted
    try:
        target = sockets()
        failed = sender.send_run(target, [30, 40, 50, 60], 28, client_fastpath.sockaddr_in("127.0.0.1", 9))
        assert failed == [(2, errors.EAGAIN)]
        assert calls == [4, 2, 1]
        # The records point at each slot's payload, with each frame's payload length.
        words = sender._record_words
        assert [words[4 * i + 1] for i in range(4)] == [2, 12, 22, 32]
        assert [words[4 * i] - receiver.addresses[i] for i in range(4)] == [28] * 4
    finally:
        sender.close()
        receiver.close()
