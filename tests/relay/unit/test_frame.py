"""Frame codec: the documented vectors, round trips, and garbage input."""

import os
import re
import struct

import pytest
from hypothesis import given, settings, strategies as st

from multicast_proxy import frame

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "frame-format.md")


def documented_vectors():
    with open(DOC) as handle:
        text = handle.read()
    vectors = []
    for block in re.findall(r"```frame\n(.*?)```", text, re.S):
        fields = dict(line.split(":", 1) for line in block.strip().splitlines())
        data = bytes.fromhex(fields["frame"].replace(" ", ""))
        expected = dict(item.split("=", 1) for item in fields["decodes"].split())
        vectors.append((data, expected))
    return vectors


VECTORS = documented_vectors()


def test_the_document_has_valid_and_invalid_vectors():
    assert sum(1 for _d, e in VECTORS if "error" not in e) == 3
    assert sum(1 for _d, e in VECTORS if "error" in e) == 7


@pytest.mark.parametrize("data, expected", VECTORS)
def test_documented_vector(data, expected):
    if "error" in expected:
        with pytest.raises(frame.FrameError) as info:
            frame.decode(data)
        assert info.value.reason == expected["error"]
        return
    decoded = frame.decode(data)
    assert "%s:%d" % (decoded.group_ip, decoded.group_port) == expected["group"]
    assert "%s:%d" % (decoded.src_ip, decoded.src_port) == expected["source"]
    assert decoded.seq == int(expected["seq"], 16)
    assert (decoded.proto, decoded.tos, decoded.key_id) == (
        int(expected["proto"]), int(expected["tos"]), int(expected["key_id"]))
    assert decoded.payload == bytes.fromhex(expected["payload"])
    assert decoded.tag == (None if expected["tag"] == "none" else bytes.fromhex(expected["tag"]))


@pytest.mark.parametrize("data, expected", [v for v in VECTORS if "error" not in v[1] and v[0][4] == 28])
def test_encoder_produces_the_documented_bytes(data, expected):
    decoded = frame.decode(data)
    assert frame.encode(decoded.group_ip, decoded.group_port, decoded.src_ip, decoded.src_port, decoded.seq,
                        decoded.payload, tos=decoded.tos, key_id=decoded.key_id, tag=decoded.tag) == data


def test_pack_header_into_writes_in_place_before_the_payload():
    buffer = bytearray(frame.HEADER_LEN + 5)
    buffer[frame.HEADER_LEN:] = b"hello"
    frame.pack_header_into(buffer, frame.ip_to_int("224.1.2.3"), 65535, frame.ip_to_int("192.168.1.10"), 40000,
                           (1700000000 << 32) | 1)
    assert bytes(buffer) == VECTORS[0][0]


def test_parse_from_reads_only_nbytes_of_a_bigger_buffer():
    data = VECTORS[0][0]
    buffer = bytearray(data) + bytearray(b"\xff" * 100)
    parsed = frame.parse_from(buffer, len(data))
    assert parsed[-2:] == (28, len(data))
    assert frame.int_to_ip(parsed[4]) == "224.1.2.3"


def test_sequence_base_puts_start_time_in_upper_half():
    assert frame.sequence_base(1700000000.9) == 1700000000 << 32


def test_encode_refuses_oversize_payload_and_bad_tag():
    with pytest.raises(ValueError):
        frame.encode("224.1.2.3", 1, "10.0.0.1", 1, 1, b"x" * (frame.MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        frame.encode("224.1.2.3", 1, "10.0.0.1", 1, 1, b"", tag=b"short")


def test_decode_refuses_non_bytes():
    with pytest.raises(frame.FrameError):
        frame.decode(12345)


ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "%d.%d.%d.%d" % t)


@settings(max_examples=300, deadline=None)
@given(group=ipv4, group_port=st.integers(0, 65535), src=ipv4, src_port=st.integers(0, 65535),
       seq=st.integers(0, 2 ** 64 - 1), payload=st.binary(max_size=300), tos=st.integers(0, 255),
       tag=st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
def test_round_trip(group, group_port, src, src_port, seq, payload, tos, tag):
    decoded = frame.decode(frame.encode(group, group_port, src, src_port, seq, payload, tos=tos, tag=tag))
    assert (decoded.group_ip, decoded.group_port, decoded.src_ip, decoded.src_port, decoded.seq,
            decoded.payload, decoded.tos, decoded.tag) == (group, group_port, src, src_port, seq, payload, tos, tag)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=80))
def test_garbage_never_raises_anything_but_frame_error(data):
    try:
        frame.decode(data)
    except frame.FrameError as exc:
        assert exc.reason in ("malformed", "bad_version")


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, len(VECTORS[1][0]) - 1))
def test_every_truncation_of_a_valid_frame_is_handled(cut):
    data = VECTORS[1][0][:cut]
    try:
        decoded = frame.decode(data)
    except frame.FrameError:
        return
    # Only a cut that still leaves a well-formed frame may decode.
    assert len(data) >= frame.HEADER_LEN


def test_header_struct_is_28_bytes_big_endian():
    assert struct.calcsize(">2sBBBBBBIHIHQ") == frame.HEADER_LEN == 28
