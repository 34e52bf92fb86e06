#!/usr/bin/env python3
"""Probe receiver: join a multicast group, count and check what arrives.

Single file, standard library only, Python 3.8+, so that it can be copied
into any test host or container as is.  Its partner is mcsend.py; the
payload layout is described there and repeated here (HEADER, filler), and
tests/relay/unit/test_probe_tools.py checks that the two copies agree.

The receiver behaves like an ordinary multicast application: a UDP socket
bound to 0.0.0.0:PORT with SO_REUSEADDR that joined GROUP, on an explicit
interface when --interface or --interface-ip is given.  It stops when
--expect distinct datagrams arrived, after --idle-timeout seconds without
traffic (counted from the last datagram, or from the start when none came),
or after --duration seconds, and then prints its statistics (one JSON line
with --json).  Exit code 0, or 1 when --expect was given and not reached.

Statistics: received (every datagram), unique, duplicates, reordered (came
after a higher sequence of the same stream), lost (gaps between the first
and last sequence of each stream) and lost_vs_expect, corrupt (an mcsend
payload that fails its integrity check), foreign (not an mcsend payload),
first_seq/last_seq, streams (the same per stream id), sources (ip:port),
interfaces (where datagrams came in) and latency_us p50/p99 computed from
the send time in the payload.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import time

MAGIC = b"MCPT"
HEADER = struct.Struct(">4sIIQQ")
HEADER_SIZE = HEADER.size

# Not exported by the socket module on every Python version.
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024
PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


def filler(stream_id, seq, length):
    """Deterministic bytes that follow the header of datagram `seq`."""
    block = hashlib.blake2b(struct.pack(">IQ", stream_id, seq), digest_size=32).digest()
    repeats = length // len(block) + 1
    return (block * repeats)[:length]


class Probe:
    """One parsed mcsend datagram."""

    __slots__ = ("stream_id", "seq", "send_ns", "intact")

    def __init__(self, stream_id, seq, send_ns, intact):
        self.stream_id = stream_id
        self.seq = seq
        self.send_ns = send_ns
        self.intact = intact


def parse_payload(data):
    """Return a Probe for an mcsend payload, or None for anything else.

    A datagram that starts with the magic but whose length or filler does
    not match is returned with intact=False: it was ours and got damaged.
    """
    if len(data) < HEADER_SIZE or data[:4] != MAGIC:
        return None
    _magic, stream_id, length, seq, send_ns = HEADER.unpack_from(data)
    intact = length == len(data) and data[HEADER_SIZE:] == filler(stream_id, seq, length - HEADER_SIZE)
    return Probe(stream_id, seq, send_ns, intact)


def percentile(sorted_values, percent):
    """Nearest-rank percentile (integer percent) of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, (len(sorted_values) * percent + 99) // 100)
    return sorted_values[rank - 1]


class StreamStats:
    __slots__ = ("seen", "first", "last")

    def __init__(self):
        self.seen = set()
        self.first = None
        self.last = None


class ReceiverStats:
    """Everything mcrecv reports, fed one datagram at a time (no I/O)."""

    def __init__(self, expect=None):
        self.expect = expect
        self.received = 0
        self.duplicates = 0
        self.reordered = 0
        self.corrupt = 0
        self.foreign = 0
        self.sources = set()
        self.interfaces = set()
        self.latencies_ns = []
        self.streams = {}

    @property
    def unique(self):
        return sum(len(stream.seen) for stream in self.streams.values())

    def done(self):
        return self.expect is not None and self.unique >= self.expect

    def add(self, data, source, receive_ns, interface=None):
        self.received += 1
        self.sources.add("%s:%d" % source)
        if interface is not None:
            self.interfaces.add(interface)
        probe = parse_payload(data)
        if probe is None:
            self.foreign += 1
            return
        if not probe.intact:
            self.corrupt += 1
            return
        stream = self.streams.setdefault(probe.stream_id, StreamStats())
        if probe.seq in stream.seen:
            self.duplicates += 1
            return
        stream.seen.add(probe.seq)
        if stream.last is None:
            stream.first = stream.last = probe.seq
        elif probe.seq < stream.last:
            self.reordered += 1
            stream.first = min(stream.first, probe.seq)
        else:
            stream.last = probe.seq
        self.latencies_ns.append(receive_ns - probe.send_ns)

    def summary(self):
        streams = self.streams
        unique = self.unique
        lost_in_range = sum(s.last - s.first + 1 - len(s.seen) for s in streams.values())
        latencies = sorted(self.latencies_ns)
        p50 = percentile(latencies, 50)
        p99 = percentile(latencies, 99)
        return {
            "received": self.received,
            "unique": unique,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "lost": lost_in_range,
            "lost_vs_expect": max(0, self.expect - unique) if self.expect is not None else None,
            "expect": self.expect,
            "corrupt": self.corrupt,
            "foreign": self.foreign,
            "first_seq": min((s.first for s in streams.values()), default=None),
            "last_seq": max((s.last for s in streams.values()), default=None),
            "streams": {
                str(sid): {
                    "unique": len(s.seen),
                    "first_seq": s.first,
                    "last_seq": s.last,
                    "lost": s.last - s.first + 1 - len(s.seen),
                }
                for sid, s in sorted(streams.items())
            },
            "sources": sorted(self.sources),
            "interfaces": sorted(self.interfaces),
            "latency_us": {
                "p50": None if p50 is None else round(p50 / 1000.0, 1),
                "p99": None if p99 is None else round(p99 / 1000.0, 1),
            },
        }


def multicast_group(text):
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an IPv4 address" % text)
    if not address.is_multicast:
        raise argparse.ArgumentTypeError("%s is not a multicast group (224.0.0.0/4)" % text)
    return str(address)


def unicast_ip(text):
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an IPv4 address" % text)
    if address.is_multicast or address.is_unspecified:
        raise argparse.ArgumentTypeError("%s is not the address of an interface" % text)
    return str(address)


def port_number(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a port number" % text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("port %d is outside 1..65535" % value)
    return value


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number" % text)
    if value <= 0:
        raise argparse.ArgumentTypeError("%s must be positive" % text)
    return value


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an integer" % text)
    if value <= 0:
        raise argparse.ArgumentTypeError("%d must be positive" % value)
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Join a multicast group and count/check mcsend.py datagrams."
    )
    parser.add_argument("--group", required=True, type=multicast_group, help="multicast group to join")
    parser.add_argument("--port", required=True, type=port_number, help="UDP port to bind (on 0.0.0.0)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--interface", help="join on this interface (by name, e.g. eth1)")
    where.add_argument("--interface-ip", type=unicast_ip, help="join on the interface with this address")
    parser.add_argument("--expect", type=positive_int, help="stop after this many distinct datagrams")
    parser.add_argument(
        "--idle-timeout", type=positive_number, default=5.0,
        help="stop after this many seconds without a datagram (default 5)",
    )
    parser.add_argument("--duration", type=positive_number, help="stop after this many seconds in any case")
    parser.add_argument("--ready-file", help="file created once the group is joined")
    parser.add_argument("--json", action="store_true", help="print the statistics as one JSON line")
    return parser.parse_args(argv)


def membership_request(group, interface=None, interface_ip=None):
    """Bytes for IP_ADD_MEMBERSHIP: struct ip_mreqn by index or ip_mreq by address."""
    if interface is not None:
        return struct.pack("=4s4si", socket.inet_aton(group), socket.inet_aton("0.0.0.0"),
                           socket.if_nametoindex(interface))
    return socket.inet_aton(group) + socket.inet_aton(interface_ip or "0.0.0.0")


def open_socket(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    # Receive only the groups this socket joined, as a careful application
    # does; otherwise any group joined by anyone on this host would count.
    sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", args.port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    membership_request(args.group, args.interface, args.interface_ip))
    return sock


def write_ready_file(path):
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w") as handle:
        handle.write("%d\n" % os.getpid())
    os.replace(temporary, path)


def interface_name(ancillary):
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= PKTINFO.size:
            index = PKTINFO.unpack_from(data)[0]
            try:
                return socket.if_indextoname(index)
            except OSError:
                return "ifindex%d" % index
    return None


def receive(sock, args, stats):
    started = time.monotonic()
    last_activity = started
    ancillary_space = socket.CMSG_SPACE(PKTINFO.size)
    while not stats.done():
        now = time.monotonic()
        deadline = last_activity + args.idle_timeout
        if args.duration is not None:
            deadline = min(deadline, started + args.duration)
        if now >= deadline:
            return
        readable, _, _ = select.select([sock], [], [], deadline - now)
        if not readable:
            continue
        data, ancillary, _flags, source = sock.recvmsg(65536, ancillary_space)
        stats.add(data, source, time.time_ns(), interface_name(ancillary))
        last_activity = time.monotonic()


def print_summary(summary, as_json):
    if as_json:
        print(json.dumps(summary, sort_keys=True), flush=True)
        return
    for key in sorted(summary):
        print("%s: %s" % (key, summary[key]))
    sys.stdout.flush()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sock = open_socket(args)
    except OSError as error:
        print("mcrecv: cannot join %s on port %d: %s" % (args.group, args.port, error), file=sys.stderr)
        return 1
    # A test harness stops a receiver with SIGTERM and still wants the figures.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stats = ReceiverStats(args.expect)
    with sock:
        if args.ready_file:
            write_ready_file(args.ready_file)
        try:
            receive(sock, args, stats)
        except KeyboardInterrupt:
            pass
    print_summary(stats.summary(), args.json)
    return 1 if args.expect is not None and not stats.done() else 0


if __name__ == "__main__":
    sys.exit(main())
