"""Raw re-delivery (rawsend.py): the IP_PKTINFO control message and what RawDelivery.send hands the kernel.

The control message names the original source as ipi_spec_dst, so the
kernel's route lookup (which decides whether the looped copy reaches
source-specific joins) uses that source; tests/relay/netns/test_ssm.py shows
the effect on a real kernel.
"""

import ctypes
import socket
import struct

import pytest

from multicast_proxy import frame, packet, rawsend

SOURCE = frame.ip_to_int("10.77.0.10")
GROUP = frame.ip_to_int("232.77.14.11")


class InPktinfo(ctypes.Structure):
    """struct in_pktinfo as <netinet/in.h> declares it."""
    _fields_ = [("ipi_ifindex", ctypes.c_int), ("ipi_spec_dst", ctypes.c_uint8 * 4), ("ipi_addr", ctypes.c_uint8 * 4)]


def test_the_control_message_is_one_in_pktinfo_naming_the_source():
    ((level, kind, data),) = rawsend.source_control(SOURCE)
    assert (level, kind) == (socket.IPPROTO_IP, 8)
    assert len(data) == ctypes.sizeof(InPktinfo)
    info = InPktinfo.from_buffer_copy(data)
    # Interface 0: the socket's IP_MULTICAST_IF stays the delivery interface.
    assert info.ipi_ifindex == 0
    assert bytes(info.ipi_spec_dst) == socket.inet_aton("10.77.0.10")
    assert bytes(info.ipi_addr) == b"\x00" * 4


@pytest.mark.parametrize("address", ["0.0.0.1", "127.0.0.1", "192.168.255.254", "255.255.255.254"])
def test_the_source_is_in_network_byte_order(address):
    ((_level, _kind, data),) = rawsend.source_control(frame.ip_to_int(address))
    assert data[4:8] == socket.inet_aton(address)


def test_the_constant_is_the_kernels_where_python_names_it():
    if hasattr(socket, "IP_PKTINFO"):
        assert rawsend.IP_PKTINFO == socket.IP_PKTINFO
    assert rawsend.IP_PKTINFO == 8


class RecordingSocket(object):
    def __init__(self):
        self.sent = []

    def sendmsg(self, buffers, ancdata, flags, address):
        self.sent.append((b"".join(buffers), ancdata, flags, address))
        return sum(len(b) for b in buffers)

    def sendto(self, *args):
        raise AssertionError("every raw packet goes through sendmsg with the source's control message")


def delivery(mtu=1500):
    target = rawsend.RawDelivery.__new__(rawsend.RawDelivery)
    target.interface = "eth0"
    target.sock = RecordingSocket()
    target.mtu = mtu
    target._ident = 0
    return target


def test_a_udp_datagram_is_sent_with_its_source_in_the_header_and_the_control_message():
    target = delivery()
    target.send(packet.PROTO_UDP, 0xB8, SOURCE, 4000, GROUP, 5411, b"x" * 100)
    ((datagram, ancdata, flags, address),) = target.sock.sent
    assert ancdata == rawsend.source_control(SOURCE) and flags == 0 and address == ("232.77.14.11", 0)
    parsed = packet.parse_ipv4(datagram, len(datagram))
    assert (parsed.src_addr, parsed.dst_addr, parsed.ttl, parsed.tos) == (SOURCE, GROUP, rawsend.UDP_TTL, 0xB8)


def test_every_fragment_carries_the_control_message():
    target = delivery(mtu=1500)
    target.send(packet.PROTO_UDP, 0, SOURCE, 4000, GROUP, 5411, b"y" * 4000)
    assert len(target.sock.sent) == 3
    for datagram, ancdata, _flags, _address in target.sock.sent:
        assert ancdata == rawsend.source_control(SOURCE)
        assert struct.unpack_from("!I", datagram, 12)[0] == SOURCE


def test_a_vrrp_advertisement_names_the_peer_as_the_source():
    peer = frame.ip_to_int("10.77.0.11")
    target = delivery()
    target.send(packet.PROTO_VRRP, 0xC0, peer, 0, frame.ip_to_int(packet.VRRP_GROUP), 0, b"\x31" + b"\x00" * 19)
    ((datagram, ancdata, _flags, _address),) = target.sock.sent
    assert ancdata == rawsend.source_control(peer)
    assert packet.parse_ipv4(datagram, len(datagram)).ttl == packet.VRRP_TTL
