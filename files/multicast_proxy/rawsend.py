"""Re-delivery with the original sender's address: a raw socket with our own IP header.

A UDP socket can only send from an address of this host, so receivers that
filter or answer by source, or joined source-specifically, would see the
relay client instead of the sender.  An IP_HDRINCL socket sends the header
we build: source = the original sender (address and port), TOS as it
arrived, a correct UDP checksum.  VRRP advertisements go out the same way,
with TTL 255 (keepalived drops anything else) and the peer's address (a
VRRPv3 checksum covers it).

Where the packets go: multicast loopback is on, so the kernel hands a copy
to local sockets joined on the delivery interface.  UDP is sent with TTL 0:
the kernel then delivers the looped copy and sends nothing on the wire.  A
VRRP advertisement must keep TTL 255, so it also leaves the host on the
interface; a VPC drops it, and the server on this host ignores it (its
source is not local, see capture.py).

Which local sockets get the looped copy: the kernel decides at the route
lookup, from the group and the source the lookup is given, whether the
interface's source filter (the union of the local joins) admits the packet,
and loops it back only then.  A raw send names no source of its own, so the
lookup would use an address of this host: an interface whose only members of
the group joined for one source S (IP_ADD_SOURCE_MEMBERSHIP, as ssmping does)
would never see the packet, although its header says S.  Every packet is
therefore sent with an IP_PKTINFO control message whose ipi_spec_dst is the
original source, the address the lookup then uses (an IP_HDRINCL socket may
name any source, the lookup does not require it to be local).
"""

import fcntl
import socket
import struct

from . import frame, netinfo, packet

_SIOCGIFMTU = 0x8921
# Python < 3.7 has no socket.IP_PKTINFO; the Linux value.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
# struct in_pktinfo: ipi_ifindex (0: the socket's IP_MULTICAST_IF), ipi_spec_dst, ipi_addr (unused on send).
_IN_PKTINFO = struct.Struct("=i4s4x")
# UDP re-delivery never leaves the host (see the module docstring).
UDP_TTL = 0


def interface_mtu(name):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        reply = fcntl.ioctl(probe.fileno(), _SIOCGIFMTU, struct.pack("16si", name.encode("utf-8")[:15], 0))
        return struct.unpack("16si", reply)[1]
    finally:
        probe.close()


def source_control(src_addr):
    """The sendmsg ancillary data that has the kernel route a packet as sent from ``src_addr`` (an int)."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, src_addr.to_bytes(4, "big")))]


class RawDelivery(object):
    """A raw IP_HDRINCL socket that re-delivers frames on one interface."""

    def __init__(self, interface):
        self.interface = interface
        # IPPROTO_RAW implies IP_HDRINCL and receives nothing.
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            mreqn = socket.inet_aton("0.0.0.0") + socket.inet_aton("0.0.0.0") + struct.pack(
                "=i", netinfo.interface_index(interface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setblocking(False)
            self.mtu = interface_mtu(interface)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        # IP identification for packets we fragment ourselves; unfragmented
        # packets carry 0 and the kernel picks one.
        self._ident = 0

    def close(self):
        self.sock.close()

    def send(self, proto, tos, src_addr, src_port, group_addr, group_port, payload):
        """Send one relayed datagram; raises OSError (send failed) or ValueError (not deliverable)."""
        if proto == packet.PROTO_UDP:
            ip_payload = packet.udp_segment(src_addr, src_port, group_addr, group_port, payload)
            ttl = UDP_TTL
        elif proto == packet.PROTO_VRRP:
            ip_payload = bytes(payload)
            ttl = packet.VRRP_TTL
        else:
            raise ValueError("frame carries IP protocol %d; only UDP (17) and VRRP (112) are relayed" % proto)
        ident = 0
        if packet.IP_HEADER_LEN + len(ip_payload) > self.mtu:
            self._ident = self._ident % 0xFFFF + 1
            ident = self._ident
        destination = (frame.int_to_ip(group_addr), 0)
        control = source_control(src_addr)
        for datagram in packet.ip_packets(src_addr, group_addr, proto, ip_payload, tos, ttl, ident, self.mtu):
            self.sock.sendmsg([datagram], control, 0, destination)
