"""Capture mode of the server: a group's traffic picked up from the interface.

A UDP socket only sees what the kernel loops back to it, so it misses an
application that turned IP_MULTICAST_LOOP off, and it is bound to one port.
Keepalived sends its VRRP advertisements with loopback off as well.  An
AF_PACKET socket sees the host's own packets as they leave (pkttype
PACKET_OUTGOING) and what arrives from the wire, whatever the sender's socket
options; a classic BPF program in the kernel passes only the group's packets.

Loop guard: a relay client on this host re-delivers with the original
sender's address (preserve_source, VRRP), so an outgoing packet whose source
is not an address of this host is a re-delivery and is dropped as ``loop``;
VRRP is relayed only from local addresses (the local keepalived).  TTL 0
packets (a client's local-only re-delivery) are dropped as ``loop`` too.

IP fragments are counted and dropped (reason ``fragment``): reassembling them
would need a timed reassembly queue in user space; capture mode is for
datagrams that fit the interface MTU.
"""

import errno
import select
import socket
import struct
import time

from . import frame, netinfo, packet

# Outgoing packets are passed only to sockets of every protocol.
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
FIB_TRIE_FILE = "/proc/net/fib_trie"

BATCH = 64
RECV_BUFFER = 32 << 20
# One whole IPv4 packet; a longer one would be truncated and fail the length check.
CAPTURE_BUFFER = packet.MAX_IP_PACKET

MODE_SOCKET = "udp"
MODE_CAPTURE = "capture"
MODE_VRRP = "vrrp"


def group_mode(group_cfg):
    """How the server picks up a configured group: "udp" (socket), "capture" or "vrrp"."""
    if group_cfg.get("protocol") == "vrrp":
        return MODE_VRRP
    return MODE_CAPTURE if group_cfg.get("capture") else MODE_SOCKET


def parse_local_addresses(fib_trie_text):
    """Every local IPv4 address (primary and secondary) as integers, from /proc/net/fib_trie."""
    addresses = set()
    last = None
    for line in fib_trie_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:]
        elif stripped.startswith("/32 host LOCAL") and last is not None:
            addresses.add(frame.ip_to_int(last))
    return frozenset(addresses)


def read_local_addresses():
    try:
        return parse_local_addresses(netinfo.read_text(FIB_TRIE_FILE))
    except OSError:
        return frozenset()


def attach_filter(sock, program):
    """SO_ATTACH_FILTER with a struct sock_fprog pointing at the program; the kernel copies it."""
    try:
        # Imported here: only capture mode needs ctypes, and the relay must run
        # where it cannot be loaded (no libffi, or an old one that fails with MemoryError).
        import ctypes
    except (ImportError, MemoryError):
        raise OSError(errno.ENOSYS, "capture mode needs Python's ctypes module, which this interpreter cannot "
                                    "load; install it (libffi) or send this group without capture")
    code = packet.bpf_bytes(program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_capture_socket(interface, group_ip, group_port, mode, set_buffer):
    """An AF_PACKET socket on ``interface`` that passes only the group's packets."""
    group_addr = frame.ip_to_int(group_ip)
    if mode == MODE_VRRP:
        program = packet.bpf_protocol_filter(group_addr, packet.PROTO_VRRP)
    else:
        program = packet.bpf_udp_filter(group_addr, group_port)
    # Protocol 0 receives nothing until bind, so no unfiltered packet is
    # queued between socket() and SO_ATTACH_FILTER.
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    except PermissionError:
        raise PermissionError(errno.EPERM, "%s needs CAP_NET_RAW, which this daemon lacks; give it to the service "
                                           "(the roles do for a host with such a group: re-run them) or use socket "
                                           "mode" % ("VRRP" if mode == MODE_VRRP else "capture mode"))
    try:
        attach_filter(sock, program)
        set_buffer(sock, socket.SO_RCVBUF, RECV_BUFFER)
        sock.bind((interface, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def relay_captured(daemon, group, sock):
    """Read up to BATCH captured packets of ``group`` and hand each to the daemon's fan-out."""
    buf = daemon.capture_buffer
    drops = group.drops
    vrrp = group.mode == MODE_VRRP
    only_outgoing = group.interface == "lo"
    for _attempt in range(BATCH):
        try:
            nbytes, address = sock.recvfrom_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            daemon.drop_receive_error(group, exc)
            return
        outgoing = address[2] == PACKET_OUTGOING
        if only_outgoing and not outgoing:
            # On lo every sent packet comes back in as well: count it once.
            continue
        try:
            ip = packet.parse_ipv4(buf, nbytes)
        except packet.PacketError as exc:
            drops[exc.reason] += 1
            daemon.drop_log.drop(exc.reason, "group %s: %s" % (group.group_ip, exc))
            continue
        local = ip.src_addr in daemon.local_addresses
        if ip.ttl == 0 or (not local and (vrrp or outgoing)):
            drops["loop"] += 1
            continue
        if ip.fragment:
            drops["fragment"] += 1
            daemon.drop_log.drop("fragment", "group %s: IP fragment from %s; capture mode drops fragments, "
                                 "keep datagrams within the MTU or use socket mode"
                                 % (group.group_ip, frame.int_to_ip(ip.src_addr)))
            continue
        if vrrp:
            src_port, group_port, start, end = 0, 0, ip.payload_start, ip.payload_end
        else:
            try:
                src_port, group_port, start, end = packet.parse_udp(buf, ip)
            except packet.PacketError as exc:
                drops[exc.reason] += 1
                continue
        length = end - start
        if length > frame.MAX_PAYLOAD:
            drops["oversize"] += 1
            continue
        daemon.payload_view[:length] = buf[start:end]
        daemon.send_frame(group, length, ip.src_addr, src_port, ip.tos, group_port, ip.proto)


def observe_outgoing(groups, seconds, clock=time.monotonic):
    """{group_ip: {interface: datagrams}}: which interfaces the ``groups`` [(group_ip, group_port)] left this
    host by within ``seconds`` (the doctor's look at the source, docs/diagnose.md).

    One packet socket per group on every interface, filtered in the kernel;
    only PACKET_OUTGOING with TTL above 0 counts (a relay client's host-local
    re-delivery has TTL 0).  Raises OSError when packet sockets cannot be
    opened (not root, no ctypes).
    """
    sockets = {}
    seen = {}
    try:
        for group_ip, group_port in groups:
            # Every interface: a packet socket that is never bound.  What arrives before the filter is
            # attached is unfiltered, so it is read away unseen.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            sockets[sock] = group_ip
            attach_filter(sock, packet.bpf_udp_filter(frame.ip_to_int(group_ip), group_port))
            sock.setblocking(False)
            _drain(sock)
            seen[group_ip] = {}
        buf = bytearray(CAPTURE_BUFFER)
        deadline = clock() + seconds
        while sockets:
            left = deadline - clock()
            if left <= 0:
                break
            readable, _w, _x = select.select(list(sockets), [], [], left)
            for sock in readable:
                _count_outgoing(sock, buf, seen[sockets[sock]])
    finally:
        for sock in sockets:
            sock.close()
    return seen


def _drain(sock):
    try:
        while True:
            sock.recv(1)
    except (BlockingIOError, InterruptedError):
        pass


def _count_outgoing(sock, buf, counts):
    """Count what ``sock`` holds by interface: outgoing, TTL above 0."""
    for _attempt in range(BATCH):
        try:
            nbytes, address = sock.recvfrom_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        if address[2] != PACKET_OUTGOING:
            continue
        try:
            ip = packet.parse_ipv4(buf, nbytes)
        except packet.PacketError:
            continue
        if ip.ttl > 0:
            counts[address[0]] = counts.get(address[0], 0) + 1
