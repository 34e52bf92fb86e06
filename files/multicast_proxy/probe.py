"""Probe streams: numbered, self-checking datagrams sent to a multicast group
and a receiver that joins the group, counts and checks what arrives.

``python3 -m multicast_proxy probe send ...`` and ``probe recv ...`` run them
on any relay host (playbooks/verify.yml does); tests/tools/mcsend.py and
mcrecv.py are the same commands for the test suites.  Standard library only,
Python 3.8+.

Payload layout (big-endian), HEADER_SIZE bytes of header then filler:

    0   4  magic b"MCPT"
    4   4  stream id
    8   4  total payload length in bytes
    12  8  sequence number (0, 1, 2, ...)
    20  8  send time, time.time_ns() (CLOCK_REALTIME: shared by every
           network namespace of one machine; between machines the latency
           includes the offset of their clocks)
    28  n  filler: the BLAKE2b digest of (stream id, sequence) repeated,
           so that any changed or truncated byte is detected

The receiver behaves like an ordinary multicast application: a UDP socket
bound to 0.0.0.0:PORT with SO_REUSEADDR that joined GROUP, on an explicit
interface when --interface or --interface-ip is given.  It stops when
--expect distinct datagrams arrived, after --idle-timeout seconds without
traffic (counted from the last datagram, or from the start when none came),
or after --duration seconds, and then prints its statistics (one JSON line
with --json).  Exit code 0, or 1 when --expect was given and not reached.

Receiver statistics: received (every datagram), unique, duplicates, reordered
(came after a higher sequence of the same stream), lost (gaps between the
first and last sequence of each stream) and lost_vs_expect, corrupt (a probe
payload that fails its integrity check), foreign (not a probe payload),
first_seq/last_seq, streams (the same per stream id), sources (ip:port),
interfaces (where datagrams came in) and latency_us p50/p99 computed from the
send time in the payload.
"""

import argparse
import errno
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
MAX_PAYLOAD = 65507  # largest UDP payload over IPv4

# Errors that mean "the socket buffer is full right now": wait and retry the
# same datagram, so that "sent" counts what really left the process.
RETRY_ERRNOS = (errno.ENOBUFS, errno.EAGAIN)

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


def build_payload(stream_id, seq, size, send_ns):
    """Return the `size`-byte payload of datagram `seq` of `stream_id`."""
    if not HEADER_SIZE <= size <= MAX_PAYLOAD:
        raise ValueError("size must be between %d and %d bytes, got %d" % (HEADER_SIZE, MAX_PAYLOAD, size))
    header = HEADER.pack(MAGIC, stream_id, size, seq, send_ns)
    return header + filler(stream_id, seq, size - HEADER_SIZE)


class Pacer:
    """Spread sends evenly at `rate` per second (0 = as fast as possible).

    Send times follow an absolute schedule, so a late wake-up is caught up on
    the next datagrams instead of lowering the average rate.
    """

    def __init__(self, rate, clock=time.perf_counter, sleep=time.sleep):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self.start = None

    def wait_turn(self, index):
        if self.interval == 0.0:
            return
        now = self.clock()
        if self.start is None:
            self.start = now
            return
        delay = self.start + index * self.interval - now
        if delay > 0:
            self.sleep(delay)


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


def checked_value(convert, noun, accept, problem):
    """An argparse type: ``convert`` the text (else "'x' is not <noun>"),
    then ``accept`` the value (else ``problem % value``)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (text, noun))
        if not accept(value):
            raise argparse.ArgumentTypeError(problem % value)
        return value

    return parse


def bounded_int(low, high):
    return checked_value(int, "an integer", lambda value: low <= value <= high,
                         "%%d is outside %d..%d" % (low, high))


def parse_send_args(argv, prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Send numbered, self-checking datagrams to a multicast group (partner: probe recv, mcrecv.py)."
    )
    parser.add_argument("--group", required=True, type=multicast_group, help="multicast group, e.g. 239.1.1.1")
    parser.add_argument("--port", required=True, type=bounded_int(1, 65535), help="destination UDP port")
    parser.add_argument("--count", type=bounded_int(0, 2**63), default=1000, help="datagrams to send (default 1000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="datagrams per second, 0 = unpaced (default 1000)")
    parser.add_argument(
        "--size", type=bounded_int(HEADER_SIZE, MAX_PAYLOAD), default=256, help="payload bytes (default 256)"
    )
    parser.add_argument(
        "--interface-ip", type=unicast_ip, help="address of the interface to send on (IP_MULTICAST_IF)"
    )
    parser.add_argument("--ttl", type=bounded_int(0, 255), default=1, help="multicast TTL (default 1)")
    parser.add_argument("--loop", type=bounded_int(0, 1), default=1, help="IP_MULTICAST_LOOP 0 or 1 (default 1)")
    parser.add_argument("--stream-id", type=bounded_int(0, 2**32 - 1), default=1, help="stream id (default 1)")
    parser.add_argument("--start-seq", type=bounded_int(0, 2**63), default=0, help="first sequence number")
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error("--rate must be 0 (unpaced) or positive")
    return args


def open_send_socket(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, args.ttl)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, args.loop)
    if args.interface_ip:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(args.interface_ip))
        sock.bind((args.interface_ip, 0))
    return sock


def send_all(sock, args):
    destination = (args.group, args.port)
    pacer = Pacer(args.rate)
    sent = 0
    retries = 0
    started = time.perf_counter()
    for index in range(args.count):
        pacer.wait_turn(index)
        payload = build_payload(args.stream_id, args.start_seq + index, args.size, time.time_ns())
        while True:
            try:
                sock.sendto(payload, destination)
                break
            except OSError as error:
                if error.errno not in RETRY_ERRNOS:
                    raise
                retries += 1
                time.sleep(0.0005)
        sent += 1
    elapsed = time.perf_counter() - started
    return {
        "sent": sent,
        "bytes": sent * args.size,
        "retries": retries,
        "first_seq": args.start_seq if sent else None,
        "last_seq": args.start_seq + sent - 1 if sent else None,
        "stream_id": args.stream_id,
        "group": args.group,
        "port": args.port,
        "source": "%s:%d" % sock.getsockname(),
        "elapsed_s": round(elapsed, 6),
        "rate_pps": round(sent / elapsed, 1) if elapsed > 0 else None,
    }


def send_main(argv, name="mcsend", prog=None):
    """Run the sender with `argv`; `name` starts error messages, `prog` names the command in --help."""
    args = parse_send_args(argv, prog)
    try:
        sock = open_send_socket(args)
        with sock:
            summary = send_all(sock, args)
    except OSError as error:
        print("%s: cannot send to %s:%d: %s" % (name, args.group, args.port, error), file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


class Probe:
    """One parsed probe datagram."""

    __slots__ = ("stream_id", "seq", "send_ns", "intact")

    def __init__(self, stream_id, seq, send_ns, intact):
        self.stream_id = stream_id
        self.seq = seq
        self.send_ns = send_ns
        self.intact = intact


def parse_payload(data):
    """Return a Probe for a probe payload, or None for anything else.

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
    """Everything the receiver reports, fed one datagram at a time (no I/O)."""

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


port_number = checked_value(int, "a port number", lambda value: 1 <= value <= 65535, "port %d is outside 1..65535")
positive_number = checked_value(float, "a number", lambda value: value > 0, "%g must be positive")
positive_int = checked_value(int, "an integer", lambda value: value > 0, "%d must be positive")


def parse_recv_args(argv, prog=None):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Join a multicast group and count/check probe send (mcsend.py) datagrams."
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


def open_recv_socket(args):
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
        readable = select.select([sock], [], [], deadline - now)[0]
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


def recv_main(argv, name="mcrecv", prog=None):
    """Run the receiver with `argv`; `name` starts error messages, `prog` names the command in --help."""
    args = parse_recv_args(argv, prog)
    try:
        sock = open_recv_socket(args)
    except OSError as error:
        print("%s: cannot join %s on port %d: %s" % (name, args.group, args.port, error), file=sys.stderr)
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


USAGE = "usage: python3 -m multicast_proxy probe {send,recv} [flags...]  ('probe send -h' for its flags)\n"


def main(argv):
    """``probe send ...`` or ``probe recv ...``; returns the exit code."""
    if not argv or argv[0] not in ("send", "recv"):
        sys.stderr.write(USAGE)
        return 2
    if argv[0] == "send":
        return send_main(argv[1:], name="probe send", prog="python3 -m multicast_proxy probe send")
    return recv_main(argv[1:], name="probe recv", prog="python3 -m multicast_proxy probe recv")
