"""Timed probes for tests/relay/netns/test_dynamic.py, run inside a test namespace.

    dyn_probe.py send --group G --port P --rate N --duration S
        Send datagrams numbered 1, 2, ... (8 bytes, big-endian) at N a second
        for S seconds; prints {"sent": count}.
    dyn_probe.py recv --group G --port P --ready FILE --stop FILE
        Join G, write FILE once joined, receive until the stop file appears;
        prints {"joined": t, "left": t, "arrivals": [[t, number], ...]} with
        CLOCK_MONOTONIC times (one clock for every namespace of the machine).

Standard library only.
"""

import argparse
import json
import os
import socket
import struct
import time


def send(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    interval = 1.0 / args.rate
    start = time.monotonic()
    number = 0
    while time.monotonic() - start < args.duration:
        number += 1
        sock.sendto(struct.pack("!Q", number), (args.group, args.port))
        pause = start + number * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    print(json.dumps({"sent": number}))


def recv(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.group, args.port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton(args.group) + socket.inet_aton("0.0.0.0"))
    joined = time.monotonic()
    with open(args.ready, "w"):
        pass
    sock.settimeout(0.02)
    arrivals = []
    while not os.path.exists(args.stop):
        try:
            data = sock.recv(64)
        except socket.timeout:
            continue
        if len(data) == 8:
            arrivals.append([time.monotonic(), struct.unpack("!Q", data)[0]])
    left = time.monotonic()
    sock.close()
    print(json.dumps({"joined": joined, "left": left, "arrivals": arrivals}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    sender = commands.add_parser("send")
    receiver = commands.add_parser("recv")
    for sub in (sender, receiver):
        sub.add_argument("--group", required=True)
        sub.add_argument("--port", type=int, required=True)
    sender.add_argument("--rate", type=float, default=200.0)
    sender.add_argument("--duration", type=float, required=True)
    receiver.add_argument("--ready", required=True)
    receiver.add_argument("--stop", required=True)
    args = parser.parse_args()
    (send if args.command == "send" else recv)(args)


if __name__ == "__main__":
    main()
