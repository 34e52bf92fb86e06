#!/usr/bin/env python3
"""Cost of the preserve_source send path: ``RawDelivery.send`` per datagram.

The raw re-delivery names the original source in an IP_PKTINFO control
message on every packet (``sendmsg`` instead of ``sendto``, issue 14 item 11).
This measures what one call of ``RawDelivery.send`` costs, for the relay
package given with ``--relay-files`` (default: this checkout's ``files/``; point
it at an older checkout's ``files/`` for the figures before a change), and,
as a breakdown, the bare socket calls with and without the control message.

Everything happens in a throw-away network namespace (mcpb-ssm: a veth pair,
the route for 224.0.0.0/4 on one end, one any-source receiver joined there so
the kernel really loops each packet back to it; the receiver is never read,
its queue overflows, which costs the sender the same).  TTL 0: nothing leaves
the namespace.  The plain (non-preserve_source) path does not use rawsend and
is not measured here.

Run as root from the repository root:

    .venv/bin/python bench/rawsend_source.py --relay-files /path/to/old/files --out /tmp/before.json
    .venv/bin/python bench/rawsend_source.py                # writes docs/performance/rawsend-source.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMESPACE = "mcpb-ssm"
INTERFACE = "ssmb0"
GROUP = "232.77.14.99"
SOURCE = "10.77.0.10"
SIZES = (100, 1400, 4000)


def run(cmd, check=True):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            check=False)
    if check and result.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), result.stderr.strip()))
    return result


def create_namespace():
    if NAMESPACE in run(["ip", "netns", "list"]).stdout.split():
        run(["ip", "netns", "del", NAMESPACE])
    run(["ip", "netns", "add", NAMESPACE])
    for cmd in (["link", "set", "lo", "up"],
                ["link", "add", INTERFACE, "type", "veth", "peer", "name", INTERFACE + "p"],
                ["addr", "add", "10.98.0.1/24", "dev", INTERFACE],
                ["link", "set", INTERFACE, "up"], ["link", "set", INTERFACE + "p", "up"],
                ["route", "add", "224.0.0.0/4", "dev", INTERFACE]):
        run(["ip", "-n", NAMESPACE] + cmd)


def per_call(function, count, repeats):
    """The time of one call in microseconds, the median of ``repeats`` runs of ``count`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            function()
        times.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(times)


def child(count, repeats):
    """Inside the namespace: the figures, as JSON on stdout."""
    import socket
    import struct
    from multicast_proxy import frame, packet, rawsend

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("0.0.0.0", 5499))
    receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(
        "10.98.0.1"))
    target = rawsend.RawDelivery(INTERFACE)
    src, group = frame.ip_to_int(SOURCE), frame.ip_to_int(GROUP)
    control = [(socket.IPPROTO_IP, 8, struct.pack("=i4s4x", 0, socket.inet_aton(SOURCE)))]
    results = {"pktinfo": hasattr(rawsend, "source_control"), "sizes": {}}
    for size in SIZES:
        payload = memoryview(bytes(size))
        datagram = packet.ip_packets(src, group, packet.PROTO_UDP, packet.udp_segment(src, 4000, group, 5499, payload),
                                     0, 0, 0, 65535)[0]
        destination = (GROUP, 0)
        figures = {"send_us": per_call(lambda: target.send(packet.PROTO_UDP, 0, src, 4000, group, 5499, payload),
                                       count, repeats)}
        if size <= 1400:
            figures["sendto_us"] = per_call(lambda: target.sock.sendto(datagram, destination), count, repeats)
            figures["sendmsg_pktinfo_us"] = per_call(lambda: target.sock.sendmsg([datagram], control, 0, destination),
                                                     count, repeats)
        if results["pktinfo"]:
            figures["source_control_us"] = per_call(lambda: rawsend.source_control(src), count, repeats)
        results["sizes"][str(size)] = figures
    target.close()
    receiver.close()
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--relay-files", default=os.path.join(REPO, "files"),
                        help="the directory holding the multicast_proxy package (default: this checkout's files/)")
    parser.add_argument("--relay-python", default=sys.executable, help="interpreter to measure (default: this one)")
    parser.add_argument("--count", type=int, default=20000, help="calls per run (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure, the median is kept (default 5)")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "performance", "rawsend-source.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        sys.path.insert(0, args.relay_files)
        print(json.dumps(child(args.count, args.repeats)))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root: the raw socket and the namespace need it")
    try:
        create_namespace()
        result = run(["ip", "netns", "exec", NAMESPACE, args.relay_python, os.path.abspath(__file__), "--child",
                      "--relay-files", os.path.abspath(args.relay_files), "--count", str(args.count),
                      "--repeats", str(args.repeats)])
    finally:
        run(["ip", "netns", "del", NAMESPACE], check=False)
    figures = json.loads(result.stdout)
    version = run([args.relay_python, "--version"]).stdout.strip()
    report = dict(figures, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), relay_python=version,
                  relay_files=os.path.abspath(args.relay_files), count=args.count, repeats=args.repeats)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")
    method = "IP_PKTINFO" if figures["pktinfo"] else "sendto, no IP_PKTINFO"
    print("%s, relay package %s (%s)" % (version, report["relay_files"], method))
    columns = ("send_us", "sendto_us", "sendmsg_pktinfo_us", "source_control_us")
    print("%8s %12s %12s %18s %17s" % (("payload",) + columns))
    for size, row in sorted(figures["sizes"].items(), key=lambda item: int(item[0])):
        print("%8s %12s %12s %18s %17s" % tuple([size] + ["%.2f" % row[k] if k in row else "-" for k in columns]))
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
