"""Frame format v1: the unicast envelope that carries one multicast datagram.

Big-endian, 28-byte header, payload, optional 16-byte tag (see
docs/frame-format.md for the byte layout and test vectors).

The hot path works on preallocated buffers: the server reserves HEADER_LEN
bytes in front of the receive buffer and packs the header in place with
``pack_header_into``; the client parses with ``parse_from`` which returns plain
integers and the payload bounds, without copying the payload.
"""

import socket
import struct
from collections import namedtuple

MAGIC = b"MC"
VERSION = 1
HEADER_LEN = 28
TAG_LEN = 16
FLAG_TAG = 0x01
KNOWN_FLAGS = FLAG_TAG
PROTO_UDP = 17
# Largest UDP payload of an IPv4 datagram; a group datagram bigger than this
# minus the header cannot be relayed in one frame.
MAX_UDP_PAYLOAD = 65507
MAX_PAYLOAD = MAX_UDP_PAYLOAD - HEADER_LEN

# magic, version, flags, header length, protocol, tos, key id,
# group address, group port, source address, source port, sequence
_HEADER = struct.Struct(">2sBBBBBBIHIHQ")
assert _HEADER.size == HEADER_LEN


class FrameError(ValueError):
    """A datagram that is not a valid v1 frame; ``reason`` is the drop counter to bump."""

    def __init__(self, reason, detail):
        self.reason = reason
        super(FrameError, self).__init__(detail)


Frame = namedtuple("Frame", "version flags header_len proto tos key_id group_ip group_port "
                            "src_ip src_port seq payload tag")


def ip_to_int(address):
    return struct.unpack("!I", socket.inet_aton(address))[0]


def int_to_ip(value):
    return socket.inet_ntoa(struct.pack("!I", value))


def pack_header_into(buf, group_addr, group_port, src_addr, src_port, seq, tos=0,
                     flags=0, proto=PROTO_UDP, key_id=0):
    """Write a v1 header at offset 0 of ``buf``; addresses are 32-bit integers."""
    _HEADER.pack_into(buf, 0, MAGIC, VERSION, flags, HEADER_LEN, proto, tos, key_id,
                      group_addr, group_port, src_addr, src_port, seq)


def encode(group_ip, group_port, src_ip, src_port, seq, payload, tos=0, key_id=0, tag=None):
    """Build a whole frame as bytes (tests, tools; the relay uses pack_header_into)."""
    if tag is not None and len(tag) != TAG_LEN:
        raise ValueError("tag must be %d bytes" % TAG_LEN)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload of %d bytes exceeds the maximum of %d" % (len(payload), MAX_PAYLOAD))
    header = bytearray(HEADER_LEN)
    pack_header_into(header, ip_to_int(group_ip), group_port, ip_to_int(src_ip), src_port, seq,
                     tos=tos, flags=FLAG_TAG if tag is not None else 0, key_id=key_id)
    return bytes(header) + bytes(payload) + (bytes(tag) if tag is not None else b"")


def parse_from(buf, nbytes):
    """Parse the first ``nbytes`` of ``buf``.

    Returns ``(flags, proto, tos, key_id, group_addr, group_port, src_addr,
    src_port, seq, payload_start, payload_end)`` with addresses as integers.
    Raises FrameError (reason "malformed" or "bad_version") and nothing else.
    """
    if nbytes < 4:
        raise FrameError("malformed", "frame of %d bytes is shorter than the %d-byte header" % (nbytes, HEADER_LEN))
    if buf[0] != 0x4D or buf[1] != 0x43:
        raise FrameError("malformed", "bad magic, not a relay frame")
    if buf[2] != VERSION:
        raise FrameError("bad_version", "frame version %d; this relay speaks version %d" % (buf[2], VERSION))
    if nbytes < HEADER_LEN:
        raise FrameError("malformed", "frame of %d bytes is shorter than the %d-byte header" % (nbytes, HEADER_LEN))
    (_magic, _version, flags, header_len, proto, tos, key_id, group_addr, group_port,
     src_addr, src_port, seq) = _HEADER.unpack_from(buf, 0)
    if flags & ~KNOWN_FLAGS:
        raise FrameError("malformed", "unknown flag bits 0x%02x" % (flags & ~KNOWN_FLAGS))
    if header_len < HEADER_LEN or header_len > nbytes:
        raise FrameError("malformed", "header length %d outside %d..%d" % (header_len, HEADER_LEN, nbytes))
    payload_end = nbytes
    if flags & FLAG_TAG:
        payload_end -= TAG_LEN
        if payload_end < header_len:
            raise FrameError("malformed", "tag flag set but the frame is too short to hold a tag")
    return (flags, proto, tos, key_id, group_addr, group_port, src_addr, src_port, seq,
            header_len, payload_end)


def decode(data):
    """Decode a whole frame (bytes-like) into a Frame; raises only FrameError."""
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise FrameError("malformed", "frame must be bytes-like, not %s" % type(data).__name__)
    (flags, proto, tos, key_id, group_addr, group_port, src_addr, src_port, seq,
     start, end) = parse_from(view, len(view))
    tag = bytes(view[end:end + TAG_LEN]) if flags & FLAG_TAG else None
    return Frame(VERSION, flags, view[4], proto, tos, key_id, int_to_ip(group_addr), group_port,
                 int_to_ip(src_addr), src_port, seq, bytes(view[start:end]), tag)


def sequence_base(start_time):
    """First sequence number of a server started at ``start_time`` (epoch seconds)."""
    return (int(start_time) & 0xFFFFFFFF) << 32
