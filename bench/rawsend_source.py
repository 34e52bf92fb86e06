"""Cost of the preserve_source send path: ``RawDelivery.send`` per datagram.

The raw re-delivery names the original source in an IP_PKTINFO control
message on every packet (``sendmsg`` instead of ``sendto``, issue 14 item 11).
This measures what one call of ``RawDelivery.send`` costs, for the relay
package given with ``--relay-files`` (default: this checkout's ``files/``) and,
with ``--baseline-files``, for another checkout's package (the relay before a
change) in the same process, the two taking turns run by run so that other
load on the machine weighs on both alike; as a breakdown, the bare socket
calls with and without the control message.

Everything happens in a throw-away network namespace (mcpb-ssm: a veth pair,
the route for 224.0.0.0/4 on one end, one any-source receiver joined there so
the kernel really loops each packet back to it; the receiver is never read,
its queue overflows, which costs the sender the same).  TTL 0: nothing leaves
the namespace.  The plain (non-preserve_source) path does not use rawsend and
is not measured here.

Run as root from the repository root:

    git worktree add /tmp/relay-before 67d802d
    .venv/bin/python bench/rawsend_source.py --baseline-files /tmp/relay-before/files
                                              # writes docs/performance/rawsend-source.json
"""

import argparse
import importlib
import importlib.util
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


def interleaved(functions, count, repeats):
    """{name: microseconds per call}: the median of ``repeats`` runs of ``count`` calls of each function,
    the functions taking turns run by run, so that other load on the machine weighs on all of them alike."""
    times = dict((name, []) for name in functions)
    for dummy_run in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            for dummy in range(count):
                function()
            times[name].append((time.perf_counter() - start) / count * 1e6)
    return dict((name, statistics.median(values)) for name, values in times.items())


def load_rawsend(directory, name):
    """The rawsend module of the multicast_proxy package in ``directory``, imported as package ``name``
    (so that two versions of the relay live in one process)."""
    package_dir = os.path.join(directory, "multicast_proxy")
    spec = importlib.util.spec_from_file_location(name, os.path.join(package_dir, "__init__.py"),
                                                  submodule_search_locations=[package_dir])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(name + ".rawsend")


def child(relay_files, baseline_files, count, repeats):
    """Inside the namespace: the figures, as JSON on stdout."""
    import socket
    import struct

    rawsend = load_rawsend(relay_files, "relay_measured")
    frame, packet = sys.modules["relay_measured.frame"], sys.modules["relay_measured.packet"]
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("0.0.0.0", 5499))
    receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(GROUP) + socket.inet_aton(
        "10.98.0.1"))
    target = rawsend.RawDelivery(INTERFACE)
    baseline = load_rawsend(baseline_files, "relay_baseline").RawDelivery(INTERFACE) if baseline_files else None
    src, group = frame.ip_to_int(SOURCE), frame.ip_to_int(GROUP)
    control = [(socket.IPPROTO_IP, 8, struct.pack("=i4s4x", 0, socket.inet_aton(SOURCE)))]
    results = {"pktinfo": hasattr(rawsend, "source_control"), "sizes": {}}
    for size in SIZES:
        payload = memoryview(bytes(size))
        datagram = packet.ip_packets(src, group, packet.PROTO_UDP, packet.udp_segment(src, 4000, group, 5499, payload),
                                     0, 0, 0, 65535)[0]
        destination = (GROUP, 0)
        functions = {"send_us": lambda: target.send(packet.PROTO_UDP, 0, src, 4000, group, 5499, payload)}
        if baseline is not None:
            functions["baseline_send_us"] = lambda: baseline.send(packet.PROTO_UDP, 0, src, 4000, group, 5499, payload)
        if size <= 1400:
            functions["sendto_us"] = lambda: target.sock.sendto(datagram, destination)
            functions["sendmsg_pktinfo_us"] = lambda: target.sock.sendmsg([datagram], control, 0, destination)
        if results["pktinfo"]:
            functions["source_control_us"] = lambda: rawsend.source_control(src)
        results["sizes"][str(size)] = interleaved(functions, count, repeats)
    target.close()
    if baseline is not None:
        baseline.close()
    receiver.close()
    return results


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--relay-files", default=os.path.join(REPO, "files"),
                        help="the directory holding the multicast_proxy package (default: this checkout's files/)")
    parser.add_argument("--baseline-files",
                        help="another checkout's files/ (the relay before a change): its RawDelivery.send is timed "
                        "in the same process, taking turns with the measured one")
    parser.add_argument("--relay-python", default=sys.executable, help="interpreter to measure (default: this one)")
    parser.add_argument("--count", type=int, default=20000, help="calls per run (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure, the median is kept (default 5)")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "performance", "rawsend-source.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        print(json.dumps(child(args.relay_files, args.baseline_files, args.count, args.repeats)))
        return 0
    if os.geteuid() != 0:
        raise SystemExit("run as root: the raw socket and the namespace need it")
    try:
        create_namespace()
        result = run(["ip", "netns", "exec", NAMESPACE, args.relay_python, os.path.abspath(__file__), "--child",
                      "--relay-files", os.path.abspath(args.relay_files), "--count", str(args.count),
                      "--repeats", str(args.repeats)]
                     + (["--baseline-files", os.path.abspath(args.baseline_files)] if args.baseline_files else []))
    finally:
        run(["ip", "netns", "del", NAMESPACE], check=False)
    figures = json.loads(result.stdout)
    version = run([args.relay_python, "--version"]).stdout.strip()
    report = dict(figures, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), relay_python=version,
                  relay_files=os.path.abspath(args.relay_files), count=args.count, repeats=args.repeats,
                  baseline_files=os.path.abspath(args.baseline_files) if args.baseline_files else None)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")
    method = "IP_PKTINFO" if figures["pktinfo"] else "sendto, no IP_PKTINFO"
    print("%s, relay package %s (%s)" % (version, report["relay_files"], method))
    if args.baseline_files:
        print("baseline (baseline_send_us): %s" % report["baseline_files"])
    columns = ("send_us", "baseline_send_us", "sendto_us", "sendmsg_pktinfo_us", "source_control_us")
    print("%8s %12s %17s %12s %18s %17s" % (("payload",) + columns))
    for size, row in sorted(figures["sizes"].items(), key=lambda item: int(item[0])):
        print("%8s %12s %17s %12s %18s %17s" % tuple([size] + ["%.2f" % row[k] if k in row else "-"
                                                               for k in columns]))
    print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
