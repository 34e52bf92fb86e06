"""IPv4 packets built and parsed by hand: what capture mode reads from an
AF_PACKET socket and what the client writes to a raw IP_HDRINCL socket.

Pure functions of bytes and integers (no sockets), so every byte can be
checked in unit tests.  Addresses are 32-bit integers, as in frame.py.
"""

import struct

PROTO_UDP = 17
PROTO_VRRP = 112
# RFC 5798: VRRP advertisements go to this group, and a receiver drops any
# advertisement whose TTL is not 255 (proof that it was not routed).
VRRP_GROUP = "224.0.0.18"
VRRP_TTL = 255

IP_HEADER_LEN = 20
UDP_HEADER_LEN = 8
MAX_IP_PACKET = 65535
# Flags/fragment-offset field: "more fragments" bit and the 13-bit offset.
IP_FLAG_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF

_IP_HEADER = struct.Struct("!BBHHHBBHII")
_UDP_HEADER = struct.Struct("!HHHH")


class PacketError(ValueError):
    """Bytes that are not a usable IPv4 packet; ``reason`` is the drop counter to bump."""

    def __init__(self, reason, detail):
        self.reason = reason
        super(PacketError, self).__init__(detail)


def checksum(data, initial=0):
    """RFC 1071 Internet checksum of ``data`` (odd length padded with a zero byte)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = initial + sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header(src_addr, dst_addr, proto, payload_len, tos=0, ttl=64, ident=0, frag_field=0):
    """A 20-byte IPv4 header with a correct header checksum."""
    total = IP_HEADER_LEN + payload_len
    if total > MAX_IP_PACKET:
        raise ValueError("IP packet of %d bytes exceeds %d" % (total, MAX_IP_PACKET))
    header = _IP_HEADER.pack(0x45, tos, total, ident, frag_field, ttl, proto, 0, src_addr, dst_addr)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:]


def udp_checksum(src_addr, dst_addr, segment):
    """UDP checksum over the pseudo-header and ``segment`` (UDP header with checksum 0, payload)."""
    pseudo = struct.pack("!IIBBH", src_addr, dst_addr, 0, PROTO_UDP, len(segment))
    value = checksum(pseudo + bytes(segment))
    # 0 means "no checksum" in UDP; a computed 0 is sent as all ones.
    return value or 0xFFFF


def udp_segment(src_addr, src_port, dst_addr, dst_port, payload):
    """UDP header (with checksum) followed by ``payload``."""
    length = UDP_HEADER_LEN + len(payload)
    header = _UDP_HEADER.pack(src_port, dst_port, length, 0)
    value = udp_checksum(src_addr, dst_addr, header + bytes(payload))
    return header[:6] + struct.pack("!H", value) + bytes(payload)


def ip_packets(src_addr, dst_addr, proto, ip_payload, tos, ttl, ident, mtu):
    """The IPv4 packet(s) carrying ``ip_payload``, fragmented to fit ``mtu``.

    A raw IP_HDRINCL send bigger than the interface MTU fails with EMSGSIZE
    (the kernel does not fragment it for us), so big datagrams are split
    here; the receiving stack reassembles them as it would from a wire.
    """
    if IP_HEADER_LEN + len(ip_payload) <= mtu:
        return [ipv4_header(src_addr, dst_addr, proto, len(ip_payload), tos, ttl, ident) + bytes(ip_payload)]
    # Every fragment but the last carries a multiple of 8 bytes.
    chunk = (mtu - IP_HEADER_LEN) // 8 * 8
    if chunk <= 0:
        raise ValueError("MTU %d is too small to carry an IPv4 fragment" % mtu)
    packets = []
    for offset in range(0, len(ip_payload), chunk):
        piece = ip_payload[offset:offset + chunk]
        more = IP_FLAG_MF if offset + chunk < len(ip_payload) else 0
        packets.append(ipv4_header(src_addr, dst_addr, proto, len(piece), tos, ttl, ident,
                                   more | (offset // 8)) + bytes(piece))
    return packets


class IPv4Packet(object):
    """The fields of a parsed IPv4 packet that the relay uses."""

    __slots__ = ("tos", "ttl", "proto", "src_addr", "dst_addr", "fragment", "payload_start", "payload_end")

    def __init__(self, tos, ttl, proto, src_addr, dst_addr, fragment, payload_start, payload_end):
        self.tos = tos
        self.ttl = ttl
        self.proto = proto
        self.src_addr = src_addr
        self.dst_addr = dst_addr
        self.fragment = fragment
        self.payload_start = payload_start
        self.payload_end = payload_end


def parse_ipv4(buf, nbytes):
    """Parse the IPv4 header at offset 0 of the first ``nbytes`` of ``buf``.

    The payload ends at the header's total length: frames shorter than the
    Ethernet minimum arrive padded, and the padding is not data.
    """
    if nbytes < IP_HEADER_LEN:
        raise PacketError("malformed", "packet of %d bytes is shorter than an IPv4 header" % nbytes)
    (version_ihl, tos, total, _ident, frag_field, ttl, proto, _sum, src_addr,
     dst_addr) = _IP_HEADER.unpack_from(buf, 0)
    header_len = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header_len < IP_HEADER_LEN or total < header_len or total > nbytes:
        raise PacketError("malformed", "bad IPv4 header (version/length byte 0x%02x, total length %d, %d bytes)"
                          % (version_ihl, total, nbytes))
    fragment = bool(frag_field & (IP_FLAG_MF | IP_OFFSET_MASK))
    return IPv4Packet(tos, ttl, proto, src_addr, dst_addr, fragment, header_len, total)


def parse_udp(buf, ip):
    """Return (source port, destination port, payload start, payload end) of the UDP datagram in ``ip``."""
    start = ip.payload_start
    if ip.payload_end - start < UDP_HEADER_LEN:
        raise PacketError("malformed", "UDP datagram shorter than its header")
    src_port, dst_port, length, _sum = _UDP_HEADER.unpack_from(buf, start)
    if length < UDP_HEADER_LEN or start + length > ip.payload_end:
        raise PacketError("malformed", "UDP length %d does not fit the IP packet" % length)
    return src_port, dst_port, start + UDP_HEADER_LEN, start + length


# Classic BPF (linux/filter.h).  On an AF_PACKET SOCK_DGRAM socket the filter
# sees the packet from its IP header on, so offsets below are IP offsets.
BPF_LD_W_ABS = 0x20    # A = 32-bit word at k
BPF_LD_H_ABS = 0x28    # A = 16-bit half word at k
BPF_LD_B_ABS = 0x30    # A = byte at k
BPF_LDX_MSH = 0xB1     # X = 4 * (byte at k & 0x0f): the IP header length
BPF_LD_H_IND = 0x48    # A = 16-bit half word at X + k
BPF_JEQ_K = 0x15       # if A == k skip jt else skip jf
BPF_JSET_K = 0x45      # if A & k skip jt else skip jf
BPF_RET_K = 0x06       # accept k bytes (0 = drop)
# Ancillary load: A = the packet's ethertype (SKF_AD_OFF + SKF_AD_PROTOCOL).
# Outgoing packets reach only ETH_P_ALL sockets, which see ARP and IPv6 too.
SKF_AD_PROTOCOL = 0xFFFFF000
ETH_P_IP = 0x0800
# Accept whole packets: an IPv4 packet is at most 65535 bytes.
BPF_ACCEPT = 0x40000


def _bpf_program(instructions):
    return [tuple(item) for item in instructions]


_IPV4_ONLY = [
    (BPF_LD_H_ABS, 0, 0, SKF_AD_PROTOCOL),
    (BPF_JEQ_K, 0, None, ETH_P_IP),
]


def bpf_udp_filter(group_addr, group_port):
    """Classic BPF program: IPv4 to ``group_addr``, UDP, destination port ``group_port`` (0 = any).

    Fragments other than the first carry no UDP header, so the port cannot be
    checked; they are passed up, where capture mode counts and drops them.
    Returns a list of (code, jt, jf, k).
    """
    program = _IPV4_ONLY + [
        (BPF_LD_W_ABS, 0, 0, 16),              # destination address
        (BPF_JEQ_K, 0, None, group_addr),
        (BPF_LD_B_ABS, 0, 0, 9),               # protocol
        (BPF_JEQ_K, 0, None, PROTO_UDP),
    ]
    if group_port:
        program += [
            (BPF_LD_H_ABS, 0, 0, 6),           # flags and fragment offset
            (BPF_JSET_K, None, 0, IP_OFFSET_MASK),
            (BPF_LDX_MSH, 0, 0, 0),            # X = IP header length
            (BPF_LD_H_IND, 0, 0, 2),           # UDP destination port
            (BPF_JEQ_K, 0, None, group_port),
        ]
    return _resolve_jumps(program)


def bpf_protocol_filter(group_addr, proto):
    """Classic BPF program: IPv4 to ``group_addr`` carrying IP protocol ``proto`` (VRRP: 112)."""
    return _resolve_jumps(_IPV4_ONLY + [
        (BPF_LD_W_ABS, 0, 0, 16),
        (BPF_JEQ_K, 0, None, group_addr),
        (BPF_LD_B_ABS, 0, 0, 9),
        (BPF_JEQ_K, 0, None, proto),
    ])


def _resolve_jumps(body):
    """Append accept and drop returns; a jump offset of None means "to drop", in a
    jset's jt "to accept"."""
    program = []
    accept_index = len(body)
    drop_index = accept_index + 1
    for index, (code, jt, jf, k) in enumerate(body):
        if jt is None:
            jt = accept_index - index - 1
        if jf is None:
            jf = drop_index - index - 1
        program.append((code, jt, jf, k))
    program.append((BPF_RET_K, 0, 0, BPF_ACCEPT))
    program.append((BPF_RET_K, 0, 0, 0))
    return program


def bpf_bytes(program):
    """The program as an array of struct sock_filter (native byte order, 8 bytes each)."""
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in program)
