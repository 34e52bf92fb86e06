"""Unit tests of the pure parts of the probe tools tests/tools/mcsend.py and mcrecv.py.

The tools are standalone scripts (copied into containers as single files), so
they are loaded from their paths rather than imported as a package.
"""

import importlib.util
import json
import pathlib
import struct

import pytest

TOOLS = pathlib.Path(__file__).resolve().parents[2] / "tools"


def load_tool(name):
    spec = importlib.util.spec_from_file_location("probe_" + name, TOOLS / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mcsend = load_tool("mcsend")
mcrecv = load_tool("mcrecv")

SOURCE = ("10.77.0.1", 40000)


def payload(seq, stream_id=1, size=100, send_ns=1_000_000_000):
    return mcsend.build_payload(stream_id, seq, size, send_ns)


def test_both_tools_share_one_payload_layout():
    assert mcsend.MAGIC == mcrecv.MAGIC == b"MCPT"
    assert mcsend.HEADER.format == mcrecv.HEADER.format
    assert mcsend.HEADER_SIZE == 28
    assert mcsend.filler(7, 12345, 200) == mcrecv.filler(7, 12345, 200)


def test_payload_header_fields_are_big_endian_at_documented_offsets():
    data = mcsend.build_payload(0x01020304, 0x1122334455667788, 64, 0x0A0B0C0D0E0F1011)
    assert data[0:4] == b"MCPT"
    assert data[4:8] == bytes([1, 2, 3, 4])
    assert struct.unpack(">I", data[8:12])[0] == 64
    assert data[12:20] == bytes.fromhex("1122334455667788")
    assert data[20:28] == bytes.fromhex("0a0b0c0d0e0f1011")
    assert len(data) == 64


@pytest.mark.parametrize("size", [28, 29, 60, 61, 1400, 65507])
def test_build_then_parse_round_trips_at_every_size(size):
    probe = mcrecv.parse_payload(payload(41, stream_id=9, size=size, send_ns=123))
    assert (probe.stream_id, probe.seq, probe.send_ns, probe.intact) == (9, 41, 123, True)


@pytest.mark.parametrize("size", [27, 65508])
def test_build_refuses_sizes_outside_header_and_udp_limits(size):
    with pytest.raises(ValueError, match="size must be between 28 and 65507"):
        payload(0, size=size)


def test_filler_differs_between_sequences_and_streams():
    assert mcsend.filler(1, 1, 64) != mcsend.filler(1, 2, 64)
    assert mcsend.filler(1, 1, 64) != mcsend.filler(2, 1, 64)


def test_flipped_filler_byte_is_detected_as_damage():
    data = bytearray(payload(5, size=300))
    data[200] ^= 0x01
    assert mcrecv.parse_payload(bytes(data)).intact is False


def test_truncated_payload_is_detected_as_damage():
    assert mcrecv.parse_payload(payload(5, size=300)[:299]).intact is False


def test_payload_of_another_sequence_is_detected_as_damage():
    # Header of seq 5 with the filler of seq 6: a relay mixing up buffers.
    data = payload(5, size=100)[:28] + payload(6, size=100)[28:]
    assert mcrecv.parse_payload(data).intact is False


@pytest.mark.parametrize("data", [b"", b"MCP", b"hello world, not a probe at all", b"XCPT" + bytes(40)])
def test_foreign_datagrams_are_not_probes(data):
    assert mcrecv.parse_payload(data) is None


def test_statistics_of_a_clean_stream():
    stats = mcrecv.ReceiverStats(expect=5)
    for seq in range(5):
        stats.add(payload(seq, send_ns=1_000_000), SOURCE, 1_000_000 + (seq + 1) * 1000, "eth0")
    summary = stats.summary()
    assert stats.done()
    assert summary["received"] == summary["unique"] == 5
    assert summary["lost"] == summary["lost_vs_expect"] == 0
    assert (summary["duplicates"], summary["reordered"], summary["corrupt"], summary["foreign"]) == (0, 0, 0, 0)
    assert (summary["first_seq"], summary["last_seq"]) == (0, 4)
    assert summary["sources"] == ["10.77.0.1:40000"]
    assert summary["interfaces"] == ["eth0"]
    assert summary["latency_us"] == {"p50": 3.0, "p99": 5.0}


def test_statistics_count_gaps_duplicates_reordering_damage_and_strangers():
    stats = mcrecv.ReceiverStats(expect=10)
    for seq in (0, 1, 3, 2, 3, 6):
        stats.add(payload(seq), SOURCE, 2_000_000_000)
    damaged = bytearray(payload(7))
    damaged[-1] ^= 0xFF
    stats.add(bytes(damaged), SOURCE, 2_000_000_000)
    stats.add(b"iperf says hello", ("10.77.0.9", 5001), 2_000_000_000)
    summary = stats.summary()
    assert summary["received"] == 8
    assert summary["unique"] == 5  # 0 1 2 3 6
    assert summary["duplicates"] == 1  # the second 3
    assert summary["reordered"] == 1  # 2 after 3
    assert summary["lost"] == 2  # 4 and 5 between first 0 and last 6
    assert summary["lost_vs_expect"] == 5
    assert summary["corrupt"] == 1
    assert summary["foreign"] == 1
    assert summary["sources"] == ["10.77.0.1:40000", "10.77.0.9:5001"]
    assert not stats.done()


def test_statistics_keep_streams_apart():
    stats = mcrecv.ReceiverStats()
    for seq in (0, 1, 2):
        stats.add(payload(seq, stream_id=1), SOURCE, 2_000_000_000)
        stats.add(payload(seq, stream_id=2), SOURCE, 2_000_000_000)
    summary = stats.summary()
    assert summary["unique"] == 6
    assert summary["duplicates"] == 0
    assert summary["streams"] == {
        "1": {"unique": 3, "first_seq": 0, "last_seq": 2, "lost": 0},
        "2": {"unique": 3, "first_seq": 0, "last_seq": 2, "lost": 0},
    }
    assert summary["lost_vs_expect"] is None


def test_empty_statistics_are_reported_not_invented():
    summary = mcrecv.ReceiverStats(expect=3).summary()
    assert summary["unique"] == 0
    assert summary["lost_vs_expect"] == 3
    assert summary["first_seq"] is None
    assert summary["latency_us"] == {"p50": None, "p99": None}
    json.dumps(summary)


@pytest.mark.parametrize(
    "values, percent, expected",
    [
        ([], 50, None),
        ([7], 99, 7),
        ([1, 2, 3, 4], 50, 2),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 100, 100),
    ],
)
def test_nearest_rank_percentile(values, percent, expected):
    assert mcrecv.percentile(values, percent) == expected


def test_pacer_follows_an_absolute_schedule():
    clock = {"now": 100.0}
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(round(seconds, 6))
        clock["now"] += seconds

    pacer = mcsend.Pacer(rate=10, clock=lambda: clock["now"], sleep=fake_sleep)
    pacer.wait_turn(0)
    pacer.wait_turn(1)
    clock["now"] += 0.15  # the process was late: datagram 2 is already due
    pacer.wait_turn(2)
    pacer.wait_turn(3)
    assert sleeps == [0.1, 0.05]


def test_unpaced_sender_never_sleeps():
    pacer = mcsend.Pacer(rate=0, clock=lambda: 0.0, sleep=lambda seconds: pytest.fail("slept"))
    for index in range(3):
        pacer.wait_turn(index)


def test_membership_request_layouts():
    by_address = mcrecv.membership_request("239.1.2.3", interface_ip="10.0.0.5")
    assert by_address == bytes([239, 1, 2, 3, 10, 0, 0, 5])
    assert mcrecv.membership_request("239.1.2.3") == bytes([239, 1, 2, 3, 0, 0, 0, 0])
    by_index = mcrecv.membership_request("239.1.2.3", interface="lo")
    assert by_index[:8] == bytes([239, 1, 2, 3, 0, 0, 0, 0])
    assert struct.unpack("=i", by_index[8:])[0] == 1  # lo is interface 1 in every namespace


@pytest.mark.parametrize(
    "tool, argv, message",
    [
        ("mcsend", ["--group", "10.0.0.1", "--port", "5000"], "not a multicast group"),
        ("mcsend", ["--group", "239.1.1.1", "--port", "70000"], "outside 1..65535"),
        ("mcsend", ["--group", "239.1.1.1", "--port", "5000", "--size", "10"], "outside 28..65507"),
        ("mcsend", ["--group", "239.1.1.1", "--port", "5000", "--rate", "-1"], "--rate must be 0"),
        ("mcsend", ["--group", "239.1.1.1", "--port", "5000", "--interface-ip", "239.1.1.1"],
         "not the address of an interface"),
        ("mcrecv", ["--group", "239.1.1.300", "--port", "5000"], "not an IPv4 address"),
        ("mcrecv", ["--group", "239.1.1.1", "--port", "5000", "--interface-ip", "0.0.0.0"],
         "not the address of an interface"),
        ("mcrecv", ["--group", "239.1.1.1", "--port", "5000", "--expect", "0"], "must be positive"),
        ("mcrecv", ["--group", "239.1.1.1", "--port", "5000", "--interface", "a", "--interface-ip", "10.0.0.1"],
         "not allowed with argument"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(tool, argv, message, capsys):
    module = mcsend if tool == "mcsend" else mcrecv
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
