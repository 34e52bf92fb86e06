#!/usr/bin/env python3
"""Where the latency goes: each implementation's system calls at light load, timed by perf.

Runs ``bench/run.py --latency-only`` (1000 datagrams/s, N = 1, 100 bytes) and
records the ``raw_syscalls`` tracepoints of every relay process the harness
starts (only processes inside its ``mcpb-*`` namespaces). For every datagram
that woke a relay from an idle wait, it takes from the trace:

- wake -> send: from the return of the call that was waiting (``epoll_wait``
  for our daemons, ``recvmmsg`` for the C programs) to the entry of the call
  that sends the copy: the relay's own work before the copy leaves, system
  calls in between included;
- send: how long the sending call ran (the kernel forwards the copy inside it);
- calls: how many system calls the relay made from the wake to the send.

The tracepoints cost every system call a little, the same for each
implementation, so the figures compare implementations; they are not the
latency without tracing. Writes ``<out>/<name>.json`` and prints a table.
Needs root and perf (Debian: linux-perf).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The call a relay waits in, and the calls that send a copy (x86_64 numbers).
WAIT_CALLS = {232: "epoll_wait", 281: "epoll_pwait", 299: "recvmmsg"}
SEND_CALLS = {44: "sendto", 46: "sendmsg", 307: "sendmmsg"}
# A wait shorter than this did not idle the CPU: not a wake-up from idle.
IDLE_GAP = 200e-6
PROGRAMS = (("relay_ref", "relay-c"), ("client_ref", "client-c"), ("multis_admin", "relay-py"),
            ("multic_admin", "client-py"))


def bench_namespaces():
    inodes = set()
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
        if name.startswith("mcpb-"):
            try:
                inodes.add(os.stat(os.path.join("/run/netns", name)).st_ino)
            except OSError:
                pass
    return inodes


def relay_processes(namespaces):
    """(pid, implementation) of the relays running in the harness's namespaces."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                argv = handle.read().split(b"\0")
            with open("/proc/%s/comm" % entry) as handle:
                comm = handle.read().strip()
            net = os.stat("/proc/%s/ns/net" % entry).st_ino
        except OSError:
            continue
        if net not in namespaces or comm in ("ip", "taskset", "nice"):
            continue
        words = [os.path.basename(word.decode("utf-8", "replace")) for word in argv]
        for program, impl in PROGRAMS:
            # Our daemons: "-m multicast_proxy multis_admin -R"; not the admin calls that configure them.
            if program in words and (program.endswith("_ref") or "-R" in words):
                found.append((int(entry), impl))
    return found


def parse_trace(path):
    output = subprocess.run(["perf", "script", "-i", path, "-F", "time,event,trace"], check=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
    events = []
    for line in output.splitlines():
        fields = line.split()
        # "1234.567890: raw_syscalls:sys_enter: NR 47 (...)" / "...: raw_syscalls:sys_exit: NR 47 = 100"
        if len(fields) < 4 or fields[2] != "NR":
            continue
        events.append((float(fields[0].rstrip(":")), "sys_enter" in fields[1], int(fields[3]),
                       None if "sys_enter" in fields[1] else int(fields[-1])))
    return events


def wake_to_send(events):
    """Per wake-up from idle: (seconds to the send's entry, seconds in the send, calls in between)."""
    samples = []
    wake = None
    calls = 0
    for index, (stamp, enter, number, result) in enumerate(events):
        if not enter and number in WAIT_CALLS and result is not None and result > 0:
            waited = stamp - events[index - 1][0] if index else 0.0
            wake, calls = (stamp, 0) if waited > IDLE_GAP else (None, 0)
        elif enter and wake is not None:
            if number in SEND_CALLS:
                done = next((e for e in events[index + 1:index + 3] if not e[1] and e[2] == number), None)
                if done is not None:
                    samples.append((stamp - wake, done[0] - stamp, calls))
                wake = None
            else:
                calls += 1
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--only", nargs="+", default=["relay-c", "relay-py", "client-c", "client-py"],
                        choices=[impl for _program, impl in PROGRAMS])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--nice", type=int, default=-10)
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "performance"))
    parser.add_argument("--name", default="latency-trace")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("perf"):
        sys.exit("latency_trace: run as root with perf installed (Debian package linux-perf)")
    os.makedirs(args.out, exist_ok=True)
    traces = os.path.join(args.out, args.name + "-data")
    os.makedirs(traces, exist_ok=True)
    bench = subprocess.Popen([sys.executable, os.path.join(REPO, "bench", "run.py"), "--latency-only",
                              "--runs", str(args.runs), "--nice", str(args.nice), "--only", "direct"] + args.only +
                             ["--out", args.out, "--name", args.name + "-bench"])
    recorders = {}
    try:
        while bench.poll() is None:
            for pid, impl in relay_processes(bench_namespaces()):
                if pid not in recorders:
                    path = os.path.join(traces, "%s-%d.data" % (impl, pid))
                    recorders[pid] = (impl, path, subprocess.Popen(
                        ["perf", "record", "-q", "-e", "raw_syscalls:sys_enter,raw_syscalls:sys_exit", "-p",
                         str(pid), "-o", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.02)
    finally:
        if bench.poll() is None:
            bench.send_signal(signal.SIGINT)
            bench.wait()
        for _impl, _path, recorder in recorders.values():
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
        for _impl, _path, recorder in recorders.values():
            recorder.wait()
    if bench.returncode != 0:
        sys.exit("latency_trace: bench/run.py failed (exit %d)" % bench.returncode)
    by_impl = {}
    for impl, path, _recorder in recorders.values():
        by_impl.setdefault(impl, []).extend(wake_to_send(parse_trace(path)))
    rows = []
    print("%-10s %8s %16s %10s %14s" % ("impl", "wakes", "wake->send us", "send us", "calls between"))
    for impl in args.only:
        samples = by_impl.get(impl, [])
        if not samples:
            print("%-10s %8d %16s %10s %14s" % (impl, 0, "-", "-", "-"))
            continue
        row = {"impl": impl, "wakes": len(samples),
               "wake_to_send_us_p50": 1e6 * statistics.median(s[0] for s in samples),
               "send_us_p50": 1e6 * statistics.median(s[1] for s in samples),
               "calls_between_p50": statistics.median(s[2] for s in samples)}
        rows.append(row)
        print("%-10s %8d %16.1f %10.1f %14g" % (impl, row["wakes"], row["wake_to_send_us_p50"], row["send_us_p50"],
                                                row["calls_between_p50"]))
    with open(os.path.join(args.out, args.name + ".json"), "w") as handle:
        json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": os.getloadavg(),
                   "rows": rows}, handle, indent=2, sort_keys=True)
        handle.write("\n")
    shutil.rmtree(traces)
    return 0


if __name__ == "__main__":
    sys.exit(main())
