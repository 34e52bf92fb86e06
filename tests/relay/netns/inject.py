#!/usr/bin/env python3
"""Attacker tools for tests/relay/netns/test_auth.py, run inside a test namespace.

    inject.py capture --ifname IF --dst-ip IP --port PORT --count N --ready FILE [--timeout S]
        Sniff IPv4/UDP packets to IP:PORT on interface IF (a bridge port: what an
        on-path attacker in the VPC sees) and print {"frames": [hex UDP payloads]}.
    inject.py send --src IP --dst IP --sport PORT --dport PORT   (stdin: {"frames": [hex, ...]})
        Send each frame as one UDP datagram with an arbitrary (spoofed) source
        address, through a raw socket, and print {"sent": N}.

Standard library only; needs CAP_NET_RAW (the tests run as root).  It only
ever sends to the address given, which the tests set to a namespace they built.
"""

import argparse
import json
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
UDP_HEADER = struct.Struct("!HHHH")


def capture(args):
    # ETH_P_ALL: a socket bound to one protocol sees only received packets,
    # and on a bridge port the frames towards the member are transmitted.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    sock.bind((args.ifname, ETH_P_ALL))
    wanted = socket.inet_aton(args.dst_ip)
    with open(args.ready, "w"):
        pass
    frames = []
    deadline = time.monotonic() + args.timeout
    while len(frames) < args.count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([sock], [], [], left)[0]:
            break
        packet, address = sock.recvfrom(70000)
        if address[1] != ETH_P_IP or len(packet) < 28:
            continue
        version_ihl, _tos, _total, _id, _frag, _ttl, proto, _csum, _src, dst = IP_HEADER.unpack_from(packet)
        header_len = (version_ihl & 0x0F) * 4
        if proto != socket.IPPROTO_UDP or dst != wanted:
            continue
        _sport, dport, udp_len, _ucsum = UDP_HEADER.unpack_from(packet, header_len)
        if dport != args.port:
            continue
        frames.append(packet[header_len + 8:header_len + udp_len].hex())
    print(json.dumps({"frames": frames}))


def send(args):
    frames = [bytes.fromhex(item) for item in json.load(sys.stdin)["frames"]]
    # IPPROTO_RAW implies IP_HDRINCL: we write the IP header, source address included.
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    source, destination = socket.inet_aton(args.src), socket.inet_aton(args.dst)
    for payload in frames:
        udp_len = UDP_HEADER.size + len(payload)
        # UDP checksum 0 means "none" in IPv4, so a tampered payload is not
        # dropped by the receiving kernel before the relay can judge it.
        udp = UDP_HEADER.pack(args.sport, args.dport, udp_len, 0)
        # The kernel fills in the IP checksum and identification.
        ip = IP_HEADER.pack(0x45, 0, IP_HEADER.size + udp_len, 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                            source, destination)
        sock.sendto(ip + udp + payload, (args.dst, 0))
    print(json.dumps({"sent": len(frames)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    sniff = commands.add_parser("capture")
    sniff.add_argument("--ifname", required=True)
    sniff.add_argument("--dst-ip", required=True)
    sniff.add_argument("--port", type=int, required=True)
    sniff.add_argument("--count", type=int, required=True)
    sniff.add_argument("--ready", required=True)
    sniff.add_argument("--timeout", type=float, default=30.0)
    spoof = commands.add_parser("send")
    spoof.add_argument("--src", required=True)
    spoof.add_argument("--dst", required=True)
    spoof.add_argument("--sport", type=int, required=True)
    spoof.add_argument("--dport", type=int, required=True)
    args = parser.parse_args()
    if args.command == "capture":
        capture(args)
    elif args.command == "send":
        send(args)
    else:
        parser.error("give a command: capture or send")


if __name__ == "__main__":
    main()
