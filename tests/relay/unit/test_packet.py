"""Hand-built IPv4/UDP/VRRP packets and the capture filters (packet.py, capture.py).

The BPF programs are run here by a small interpreter of the classic BPF
instructions they use, over packets built by packet.py, so a wrong jump
offset or field offset fails a test rather than silently capturing nothing.
"""

import os
import re
import struct

import pytest

from multicast_proxy import capture, frame, packet

GROUP = frame.ip_to_int("239.1.2.3")
SOURCE = frame.ip_to_int("10.0.0.7")


def test_checksum_rfc1071_example():
    # RFC 1071 section 3: the one's complement sum of these words is 0xddf2.
    assert packet.checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_ipv4_header_matches_a_known_header():
    # A classic worked example: 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7.
    header = packet.ipv4_header(frame.ip_to_int("192.168.0.1"), frame.ip_to_int("192.168.0.199"), 17,
                                0x73 - 20, tos=0, ttl=64, ident=0, frag_field=0x4000)
    assert header.hex() == "45000073000040004011b861c0a80001c0a800c7"


def test_udp_segment_checksum_verifies_and_odd_lengths_pad():
    for payload in (b"", b"x", b"hello", bytes(range(256)) * 5):
        segment = packet.udp_segment(SOURCE, 40123, GROUP, 5000, payload)
        src_port, dst_port, length, value = struct.unpack("!HHHH", segment[:8])
        assert (src_port, dst_port, length) == (40123, 5000, 8 + len(payload))
        assert value != 0
        pseudo = struct.pack("!IIBBH", SOURCE, GROUP, 0, 17, len(segment))
        # What a receiver computes over pseudo-header and segment: 0 when the sum is right.
        assert packet.checksum(pseudo + segment) == 0
        assert segment[8:] == payload


def test_udp_checksum_zero_is_sent_as_all_ones():
    # Find a payload whose checksum computes to 0; it must go out as 0xffff.
    base = packet.udp_segment(SOURCE, 1, GROUP, 2, b"\x00\x00")
    wanted = struct.unpack("!H", base[6:8])[0]
    payload = struct.pack("!H", wanted)
    assert struct.unpack("!H", packet.udp_segment(SOURCE, 1, GROUP, 2, payload)[6:8])[0] == 0xFFFF


def test_parse_round_trip_of_a_built_packet_with_padding():
    segment = packet.udp_segment(SOURCE, 40123, GROUP, 5000, b"abc")
    (datagram,) = packet.ip_packets(SOURCE, GROUP, 17, segment, tos=0xB8, ttl=0, ident=0, mtu=1500)
    assert packet.checksum(datagram[:20]) == 0
    padded = bytearray(datagram + b"\x00" * 17)  # Ethernet minimum-frame padding
    ip = packet.parse_ipv4(padded, len(padded))
    assert (ip.tos, ip.ttl, ip.proto, ip.src_addr, ip.dst_addr, ip.fragment) == (0xB8, 0, 17, SOURCE, GROUP, False)
    assert packet.parse_udp(padded, ip) == (40123, 5000, 28, 31)


def test_fragments_fit_the_mtu_and_reassemble():
    payload = bytes(range(256)) * 16
    segment = packet.udp_segment(SOURCE, 1, GROUP, 2, payload)
    fragments = packet.ip_packets(SOURCE, GROUP, 17, segment, tos=0, ttl=0, ident=77, mtu=1500)
    assert len(fragments) == 3
    rebuilt = b""
    for index, fragment in enumerate(fragments):
        assert len(fragment) <= 1500
        assert packet.checksum(fragment[:20]) == 0
        ident, field = struct.unpack("!HH", fragment[4:8])
        assert ident == 77
        assert field & packet.IP_FLAG_MF == (packet.IP_FLAG_MF if index < 2 else 0)
        assert (field & packet.IP_OFFSET_MASK) * 8 == len(rebuilt)
        assert packet.parse_ipv4(fragment, len(fragment)).fragment
        rebuilt += fragment[20:]
    assert rebuilt == segment
    assert all(len(f[20:]) % 8 == 0 for f in fragments[:-1])


@pytest.mark.parametrize("data, words", [
    (b"\x45" * 10, "shorter"),
    (bytes.fromhex("65000014000000004011000000000000ef010203"), "version"),
    (bytes.fromhex("45000064000000004011000000000000ef010203"), "total length"),
])
def test_parse_refuses_broken_headers(data, words):
    with pytest.raises(packet.PacketError) as info:
        packet.parse_ipv4(data, len(data))
    assert info.value.reason == "malformed" and words in str(info.value)


def test_parse_udp_refuses_a_length_beyond_the_packet():
    segment = bytearray(packet.udp_segment(SOURCE, 1, GROUP, 2, b"abcd"))
    segment[4:6] = struct.pack("!H", 40)
    (datagram,) = packet.ip_packets(SOURCE, GROUP, 17, bytes(segment), 0, 1, 0, 1500)
    ip = packet.parse_ipv4(datagram, len(datagram))
    with pytest.raises(packet.PacketError):
        packet.parse_udp(datagram, ip)


def run_bpf(program, data, ethertype=0x0800):
    """Classic BPF over ``data`` (starting at the IP header): returns the accepted length."""
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == packet.BPF_LD_H_ABS and k == packet.SKF_AD_PROTOCOL:
            a = ethertype
        elif code == packet.BPF_LD_W_ABS:
            a = struct.unpack_from("!I", data, k)[0]
        elif code == packet.BPF_LD_H_ABS:
            a = struct.unpack_from("!H", data, k)[0]
        elif code == packet.BPF_LD_B_ABS:
            a = data[k]
        elif code == packet.BPF_LDX_MSH:
            x = (data[k] & 0x0F) * 4
        elif code == packet.BPF_LD_H_IND:
            a = struct.unpack_from("!H", data, x + k)[0]
        elif code == packet.BPF_JEQ_K:
            pc += jt if a == k else jf
        elif code == packet.BPF_JSET_K:
            pc += jt if a & k else jf
        elif code == packet.BPF_RET_K:
            return k
        else:
            raise AssertionError("unexpected BPF instruction %r" % (program[pc - 1],))


def udp_packet(dst=GROUP, port=5000, proto=17, frag_field=0):
    segment = packet.udp_segment(SOURCE, 1234, dst, port, b"data")
    if proto != 17:
        segment = b"\x21\x4d\x64\x01" + b"\x00" * 16
    return packet.ipv4_header(SOURCE, dst, proto, len(segment), frag_field=frag_field) + segment


def test_udp_filter_accepts_only_the_group_and_port():
    program = packet.bpf_udp_filter(GROUP, 5000)
    assert run_bpf(program, udp_packet()) == packet.BPF_ACCEPT
    assert run_bpf(program, udp_packet(port=5001)) == 0
    assert run_bpf(program, udp_packet(dst=frame.ip_to_int("239.1.2.4"))) == 0
    assert run_bpf(program, udp_packet(proto=112)) == 0
    assert run_bpf(program, udp_packet(), ethertype=0x86DD) == 0
    # The first fragment has the UDP header and is checked; later ones cannot be.
    assert run_bpf(program, udp_packet(port=5001, frag_field=packet.IP_FLAG_MF)) == 0
    later = udp_packet(port=5001, frag_field=185)
    assert run_bpf(program, later) == packet.BPF_ACCEPT
    # A longer IP header (options) moves the UDP header: the filter follows it.
    options = bytearray(udp_packet()[:20])
    options[0] = 0x46
    with_options = bytes(options) + b"\x01\x01\x01\x00" + udp_packet()[20:]
    assert run_bpf(program, with_options) == packet.BPF_ACCEPT


def test_udp_filter_with_port_0_takes_every_port():
    program = packet.bpf_udp_filter(GROUP, 0)
    assert run_bpf(program, udp_packet(port=1)) == packet.BPF_ACCEPT
    assert run_bpf(program, udp_packet(port=65535)) == packet.BPF_ACCEPT
    assert run_bpf(program, udp_packet(proto=112)) == 0


def test_vrrp_filter():
    vrrp_group = frame.ip_to_int(packet.VRRP_GROUP)
    program = packet.bpf_protocol_filter(vrrp_group, packet.PROTO_VRRP)
    assert run_bpf(program, udp_packet(dst=vrrp_group, proto=112)) == packet.BPF_ACCEPT
    assert run_bpf(program, udp_packet(dst=vrrp_group, proto=17)) == 0
    assert run_bpf(program, udp_packet(dst=GROUP, proto=112)) == 0


def test_bpf_program_bytes():
    program = packet.bpf_protocol_filter(frame.ip_to_int("224.0.0.18"), 112)
    assert program == [
        (0x28, 0, 0, 0xFFFFF000), (0x15, 0, 5, 0x0800),
        (0x20, 0, 0, 16), (0x15, 0, 3, 0xE0000012),
        (0x30, 0, 0, 9), (0x15, 0, 1, 112),
        (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0),
    ]
    code = packet.bpf_bytes(program)
    assert len(code) == 8 * len(program)
    # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;} in host byte order.
    assert code[8 * 3:8 * 4] == struct.pack("=HBBI", 0x15, 0, 3, 0xE0000012)


def test_local_addresses_from_fib_trie():
    text = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.77.0.0/24 2 0 2
        |-- 10.77.0.11
           /32 host LOCAL
        |-- 10.77.0.200
           /32 host LOCAL
        |-- 10.77.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.0
           /8 host LOCAL
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.77.0.11
           /32 host LOCAL
"""
    assert capture.parse_local_addresses(text) == frozenset(
        frame.ip_to_int(a) for a in ("10.77.0.11", "10.77.0.200", "127.0.0.1"))


def test_group_mode():
    assert capture.group_mode({"group_ip": "224.1.2.3"}) == "udp"
    assert capture.group_mode({"capture": True}) == "capture"
    assert capture.group_mode({"protocol": "vrrp"}) == "vrrp"


def test_documented_vrrp_frame():
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "frame-format.md")
    with open(doc, encoding="utf-8") as handle:
        (block,) = re.findall(r"```vrrp-frame\n(.*?)```", handle.read(), re.S)
    fields = dict(line.split(":", 1) for line in block.strip().splitlines())
    data = bytes.fromhex(fields["frame"].replace(" ", ""))
    expected = dict(item.split("=", 1) for item in fields["decodes"].split())
    decoded = frame.decode(data)
    assert "%s:%d" % (decoded.group_ip, decoded.group_port) == expected["group"]
    assert "%s:%d" % (decoded.src_ip, decoded.src_port) == expected["source"]
    assert (decoded.proto, decoded.tos, decoded.seq) == (112, 192, int(expected["seq"], 16))
    assert decoded.payload.hex() == expected["payload"]
    # The payload is a VRRP packet with a valid checksum, exactly as the server packs it.
    assert packet.checksum(decoded.payload) == 0
    header = bytearray(frame.HEADER_LEN)
    frame.pack_header_into(header, frame.ip_to_int("224.0.0.18"), 0, frame.ip_to_int("10.0.0.11"), 0,
                           decoded.seq, 0xC0, proto=packet.PROTO_VRRP)
    assert bytes(header) + decoded.payload == data
