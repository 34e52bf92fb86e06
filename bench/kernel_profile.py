#!/usr/bin/env python3
"""Where the relay's CPU goes per copy: perf on the relay's CPU at a fixed offered rate.

Builds bench/run.py's topology (same namespaces, CPUs, sinks and load
generator), starts one implementation per member count, offers the same
number of copies per second to each and samples the relay's CPU (CPU 1)
with ``perf record -g`` during the trial. Prints, per member count, the CPU
time per copy delivered: in total, per process, and inclusive of a fixed
set of kernel functions that split the path of a copy (the send, the
bridge, the member's receive, the wake-up of the receiving socket). Same
rate, same payload, only N changes, so a function whose time per copy
grows with N is where flatness is lost.

``--forward-cpu harness`` sets receive packet steering on the bridge port
of the source host, so the bridge's and the members' part of every copy
runs on the harness CPU (0) instead of the relay's: what is left on the
relay's CPU is what a relay would spend on a real host, up to handing the
copy to its network device. That CPU then carries the load generator, the
sinks and the whole forwarding, so use it to compare CPU per copy, not
copies per second.

Run as root from the repository root (needs perf, Debian: linux-perf):

    .venv/bin/python bench/kernel_profile.py --members 8 256 --copies 40000

Writes ``<out>/<name>.json`` (default /tmp/mcpb-kernel-profile) and keeps
the perf data next to it.
"""

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench_run  # noqa: E402  (the harness next to this file)

# Kernel functions whose inclusive time splits a copy's path (names of Linux 6.x; a function
# the compiler inlined on another kernel shows as not sampled).
PATH_FUNCTIONS = (
    ("do_syscall_64", "system calls (all of the relay's kernel work starts here)"),
    ("ip_finish_output2", "after the relay's IP layer: device, bridge, member"),
    ("br_handle_frame", "bridge"),
    ("ip_route_input_slow", "member's input route lookup"),
    ("ip_local_deliver_finish", "member's UDP delivery"),
    ("sock_def_readable", "wake-up of the receiving socket (sink's epoll)"),
)
IMPLEMENTATIONS = {cls.name: cls for cls in (bench_run.RelayC, bench_run.RelayPython)}


class Args:
    """What bench_run.Bench reads from its command line."""

    profile_relay = False

    def __init__(self, nice, relay_python):
        self.nice = nice
        self.relay_python = relay_python


def perf_report(data, extra):
    result = subprocess.run(["perf", "report", "-i", data, "--cpu", bench_run.RELAY_CPU, "--stdio", "-g", "none",
                             "--percent-limit", "0"] + extra,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300,
                            check=False)
    if result.returncode != 0:
        raise bench_run.BenchError("perf report on %s failed: %s" % (data, result.stderr.strip()))
    return result.stdout


def per_copy(data, copies):
    """CPU microseconds per copy on the relay's CPU: total, by process, by path function."""
    by_comm = perf_report(data, ["--no-children", "--sort", "comm"])
    found = re.search(r"Event count \(approx\.\): (\d+)", by_comm)
    if not found:
        raise bench_run.BenchError("perf recorded no samples on CPU %s (%s)" % (bench_run.RELAY_CPU, data))
    total_ns = float(found.group(1))

    def micros(percent):
        return round(total_ns * percent / 100.0 / 1000.0 / copies, 2)

    processes = {}
    for match in re.finditer(r"^\s+([\d.]+)%\s+(\S.*?)\s*$", by_comm, re.M):
        if float(match.group(1)) >= 1.0:
            processes[match.group(2)] = micros(float(match.group(1)))
    by_symbol = perf_report(data, ["--children", "--sort", "symbol"])
    functions = {}
    for name, _meaning in PATH_FUNCTIONS:
        match = re.search(r"^\s+([\d.]+)%\s+[\d.]+%\s+\[k\] " + re.escape(name) + r"\s", by_symbol, re.M)
        functions[name] = micros(float(match.group(1))) if match else None
    return {"total_us": micros(100.0), "processes_us": processes, "functions_us": functions}


def warm_up(bench, impl, feed, rate):
    """Like bench_run's warm-up, at the profiled rate: its fixed 2000 datagrams/s are 512,000
    copies/s at N = 256, more than the harness CPU forwards with --forward-cpu harness."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last = bench.trial(impl, feed, rate, 0.25)
        if last["loss"] < 0.05:
            return
    raise bench_run.BenchError("%s delivers nothing usable at %.0f datagrams/s (loss %.1f%%); its output:\n%s"
                               % (impl.name, rate, 100 * last["loss"], impl.log_tail()))


def profile(bench, impl_class, members, args, perf_dir):
    impl = impl_class(bench)
    feed = impl.feed(members, args.payload)
    rate = args.copies / float(members)
    impl.start(members)
    try:
        warm_up(bench, impl, feed, rate)
        data = os.path.join(perf_dir, "%s-%s-N%d.data" % (args.name, impl.name, members))
        recorder = subprocess.Popen(["perf", "record", "-q", "-g", "-C", bench_run.RELAY_CPU, "-o", data],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        try:
            time.sleep(0.3)   # perf is sampling before the first datagram
            if recorder.poll() is not None:
                raise bench_run.BenchError("perf record exited: %s" % recorder.stderr.read().strip())
            trial = bench.trial(impl, feed, rate, args.seconds)
        finally:
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)
    finally:
        impl.stop()
    if not trial["received"]:
        raise bench_run.BenchError("%s at N = %d delivered nothing" % (impl.name, members))
    result = {"impl": impl.name, "members": members, "offered_copies_per_s": trial["offered_pps"] * members,
              "copies_per_s": trial["copies_per_s"], "loss": trial["loss"],
              "backlog_seconds": trial["backlog_seconds"], "received": trial["received"],
              "relay_core": trial["relay_core"], "harness_core": trial["harness_core"], "perf_data": data}
    result.update(per_copy(data, trial["received"]))
    return result


def print_table(results):
    columns = ["%s N=%d" % (r["impl"], r["members"]) for r in results]
    print("\nrelay CPU (%s), microseconds per copy delivered" % bench_run.RELAY_CPU)
    print("%-26s" % "" + "".join("%16s" % c for c in columns))
    print("%-26s" % "total" + "".join("%16.2f" % r["total_us"] for r in results))
    for name, meaning in PATH_FUNCTIONS:
        cells = ["%16s" % ("-" if r["functions_us"][name] is None else "%.2f" % r["functions_us"][name])
                 for r in results]
        print("%-26s" % name + "".join(cells) + "   " + meaning)
    print("%-26s" % "offered copies/s" + "".join("%16.0f" % r["offered_copies_per_s"] for r in results))
    print("%-26s" % "loss %" + "".join("%16.2f" % (100 * r["loss"]) for r in results))
    print("%-26s" % "relay CPU busy %" + "".join("%16.0f" % r["relay_core"]["busy_percent"] for r in results))
    print("%-26s" % "harness CPU busy %" + "".join("%16.0f" % r["harness_core"]["busy_percent"] for r in results))
    for r in results:
        print("processes on the relay's CPU, %s N=%d: %s" % (r["impl"], r["members"], ", ".join(
            "%s %.2f" % item for item in sorted(r["processes_us"].items(), key=lambda item: -item[1]))))


def steer_forwarding_to_harness_cpu():
    """Receive packet steering on the source's bridge port: the relay's copies are queued to
    the harness CPU as they enter the bridge, so bridge and members run there."""
    mask = "%x" % (1 << int(bench_run.HARNESS_CPU))
    path = "/sys/class/net/mcpb-src/queues/rx-0/rps_cpus"
    bench_run.run(["ip", "netns", "exec", bench_run.BRIDGE_NS, "sh", "-c", 'echo "$1" > "$2"', "sh", mask, path])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--impl", choices=sorted(IMPLEMENTATIONS), default="relay-c")
    parser.add_argument("--members", type=int, nargs="+", default=[8, 256], help="member counts (default 8 256)")
    parser.add_argument("--ports", type=int,
                        help="member namespaces on the bridge (default: the largest member count)")
    parser.add_argument("--copies", type=int, default=40000,
                        help="offered copies per second, the same at every N (default 40000: below what "
                             "either relay reaches at N = 256 here)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the measured trial (default 3)")
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--forward-cpu", choices=("relay", "harness"), default="relay",
                        help="where the bridge and the members process the relay's copies (default: the "
                             "relay's CPU, as in bench/run.py)")
    parser.add_argument("--nice", type=int, default=0)
    parser.add_argument("--relay-python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                        else sys.executable)
    parser.add_argument("--out", default="/tmp/mcpb-kernel-profile")
    parser.add_argument("--name", default="kernel-profile")
    args = parser.parse_args(argv)
    for value in args.members:
        if not 1 <= value <= 1024:
            parser.error("member counts must be within 1..1024, got %d" % value)
    args.ports = args.ports or max(args.members)
    if args.ports < max(args.members):
        parser.error("--ports %d is fewer than the largest member count %d" % (args.ports, max(args.members)))
    if args.copies < max(args.members) or args.seconds <= 0:
        parser.error("--copies must be at least the largest member count, --seconds above 0")
    if not 16 <= args.payload <= 1444:
        parser.error("--payload must be within 16..1444 bytes")
    if not -20 <= args.nice <= 19:
        parser.error("--nice must be within -20..19")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not shutil.which("perf"):
        raise bench_run.BenchError("perf is missing (Debian package linux-perf)")
    bench_run.check_prerequisites()
    signal.signal(signal.SIGTERM, bench_run.raise_on_signal)
    os.makedirs(args.out, exist_ok=True)
    with open(bench_run.LOCK_PATH, "w", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise bench_run.BenchError("a benchmark is running (lock %s)" % bench_run.LOCK_PATH) from None
        with tempfile.TemporaryDirectory(prefix="mcpb-") as workdir:
            bench = bench_run.Bench(Args(args.nice, args.relay_python), workdir)
            bench.build()
            bench_run.Topology.remove_stale()
            topology = bench_run.Topology(args.ports)
            bench.topology = topology
            results = []
            try:
                bench.say("building %d member namespaces" % args.ports)
                topology.create()
                bench.verify_topology()
                if args.forward_cpu == "harness":
                    steer_forwarding_to_harness_cpu()
                for members in args.members:
                    bench.say("%s N=%d at %d copies/s ..." % (args.impl, members, args.copies))
                    results.append(profile(bench, IMPLEMENTATIONS[args.impl], members, args, args.out))
            finally:
                bench.processes.stop_all()
                topology.destroy()
    path = os.path.join(args.out, args.name + ".json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": os.getloadavg(),
                   "forward_cpu": args.forward_cpu, "payload": args.payload, "results": results},
                  handle, indent=2, sort_keys=True)
        handle.write("\n")
    print_table(results)
    bench.say("wrote %s" % path)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench_run.BenchError as exc:
        sys.stderr.write("kernel_profile: %s\n" % exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("kernel_profile: interrupted; namespaces and processes were removed\n")
        sys.exit(130)
