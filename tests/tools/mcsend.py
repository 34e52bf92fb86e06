#!/usr/bin/env python3
"""Probe sender: send numbered, self-checking datagrams to a multicast group.

Single file, standard library only, Python 3.8+, so that it can be copied
into any test host or container as is.  Its partner is mcrecv.py, which
counts what arrived and checks every payload.

Payload layout (big-endian), HEADER_SIZE bytes of header then filler:

    0   4  magic b"MCPT"
    4   4  stream id
    8   4  total payload length in bytes
    12  8  sequence number (0, 1, 2, ...)
    20  8  send time, time.time_ns() (CLOCK_REALTIME, shared by every
           network namespace of one machine, so the receiver can compute
           the latency)
    28  n  filler: the BLAKE2b digest of (stream id, sequence) repeated,
           so that any changed or truncated byte is detected

mcrecv.py carries its own copy of this layout; tests/relay/unit/
test_probe_tools.py checks that the two copies agree.

Example:
    mcsend.py --group 239.1.1.1 --port 5001 --count 10000 --rate 5000
prints one JSON line at the end, e.g. {"sent": 10000, ...}.
"""

import argparse
import errno
import hashlib
import ipaddress
import json
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


def bounded_int(low, high):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not an integer" % text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%d is outside %d..%d" % (value, low, high))
        return value

    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Send numbered, self-checking datagrams to a multicast group (partner: mcrecv.py)."
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


def open_socket(args):
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


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        sock = open_socket(args)
        with sock:
            summary = send_all(sock, args)
    except OSError as error:
        print("mcsend: cannot send to %s:%d: %s" % (args.group, args.port, error), file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
