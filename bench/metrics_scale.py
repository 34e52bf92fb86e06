#!/usr/bin/env python3
"""Metrics scale of the server relay: series, body size and scrape time of large configs.

For each size (256 groups x 256 members, 1024 x 1024) and each
``metrics_detail`` (group, member), a real ``multis_admin -R --metrics
127.0.0.1:9471`` runs in a throw-away network namespace (mcpb-met, a veth
pair with a route for 224.0.0.0/4, as bench/config_scale.py builds it, so
every group is really joined) and is scraped over HTTP from inside that
namespace, one scrape after another, each a full render (more than the
endpoint's 1 s cache apart).  Figures per case:

- samples (series) and body bytes of one exposition;
- scrape wall time: connect to the last byte, as a scraper sees it;
- render time: the daemon's own ``multicast_proxy_metrics_render_seconds``
  (the processing time of its render steps, not the waits between them);
- control ping: round trips to the daemon's control socket every 10 ms during
  the scrapes; its maximum is how long the event loop, which also relays the
  datagrams, was kept from a socket by a scrape;
- the daemon's resident memory after the scrapes (VmRSS, VmHWM).

Run as root from the repository root:

    .venv/bin/python bench/metrics_scale.py [--json docs/performance/metrics-scale.json]

Nothing is sent to any member (no datagram is sent at all); the namespace is
removed on exit.
"""

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import config_scale  # noqa: E402  (bench/ on the path above): the large configs

NAMESPACE = "mcpb-met"
METRICS_ADDRESS = "127.0.0.1:9471"
SIZES = ((256, 256), (1024, 1024))
DETAILS = ("group", "member")
SCRAPES = 3
# More than the endpoint's CACHE_SECONDS (1 s): every scrape renders anew.
SCRAPE_GAP = 1.2
PING_EVERY = 0.01
START_TIMEOUT = 120
RENDER_SECONDS = re.compile(rb'^multicast_proxy_metrics_render_seconds\{side="server"\} (\S+)$', re.M)
GROUP_UP = re.compile(rb'^multicast_proxy_server_group_up\{[^}]*\} 1$', re.M)


class ScaleError(Exception):
    """The measurement cannot go on; the message says why."""


def run(cmd, check=True, timeout=120):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise ScaleError("%s failed (exit %d): %s" % (" ".join(cmd[:8]), result.returncode,
                                                      result.stderr.strip()[-3000:]))
    return result


# --------------------------------------------------------------------------
# Child side: the scraper, run inside the namespace.

def scrape_once(address):
    """One GET /metrics: (wall seconds connect..last byte, body bytes)."""
    host, port = address.rsplit(":", 1)
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=600) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: text/plain\r\n\r\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    seconds = time.perf_counter() - started
    reply = b"".join(chunks)
    head, _separator, body = reply.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 "):
        raise ScaleError("scrape of %s answered %r" % (address, head[:200]))
    return seconds, body


def child_scrape(address, count):
    scrapes = []
    for index in range(count):
        if index:
            time.sleep(SCRAPE_GAP)
        seconds, body = scrape_once(address)
        render = RENDER_SECONDS.search(body)
        lines = body.count(b"\n")
        comments = body.count(b"\n#") + (1 if body.startswith(b"#") else 0)
        scrapes.append({"wall_seconds": seconds, "bytes": len(body), "samples": lines - comments,
                        "groups_up": len(GROUP_UP.findall(body)),
                        # The previous scrape's render time, as the daemon measured it.
                        "previous_render_seconds": float(render.group(1)) if render else None})
    return scrapes


# --------------------------------------------------------------------------
# Parent side: namespace, daemon, pings, report.

def create_namespace():
    if NAMESPACE in run(["ip", "netns", "list"]).stdout.split():
        # Left by an interrupted run of this script (nobody else uses the name).
        run(["ip", "netns", "del", NAMESPACE])
    run(["ip", "netns", "add", NAMESPACE])
    for cmd in (["link", "set", "lo", "up"],
                # An Ethernet interface to join the groups on that leads nowhere.
                ["link", "add", "mcpbmet0", "type", "veth", "peer", "name", "mcpbmet1"],
                ["addr", "add", "10.214.255.1/16", "dev", "mcpbmet0"],
                ["link", "set", "mcpbmet0", "up"],
                ["link", "set", "mcpbmet1", "up"],
                ["route", "add", "224.0.0.0/4", "dev", "mcpbmet0"]):
        run(["ip", "-n", NAMESPACE] + cmd)


def control_ping(path):
    """Round-trip seconds of one ping on the daemon's control socket, or None when it failed."""
    started = time.perf_counter()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(path)
            sock.sendall(b'{"cmd": "ping"}\n')
            reply = sock.recv(4096)
        if json.loads(reply.decode("utf-8").split("\n", 1)[0]).get("ok") is not True:
            return None
    except (OSError, ValueError):
        return None
    return time.perf_counter() - started


class Pinger(threading.Thread):
    """Pings the control socket every PING_EVERY seconds until stopped."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.times = []
        self.failures = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(PING_EVERY):
            seconds = control_ping(self.path)
            if seconds is None:
                self.failures += 1
            else:
                self.times.append(seconds)


def raise_file_limit():
    """1024 groups are 1024 sockets: more than the usual soft limit (the unit sets LimitNOFILE)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def memory_kib(pid):
    figures = {}
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            name = line.split(":", 1)[0]
            if name in ("VmRSS", "VmHWM"):
                figures[name] = int(line.split()[1])
    return figures


def measure(args, workdir, groups, members, detail):
    conf_dir = os.path.join(workdir, "%dx%d-%s" % (groups, members, detail))
    os.makedirs(conf_dir)
    config_scale.write_config(conf_dir, config_scale.server_config(groups, members))
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "files"), MULTICAST_CONF_DIR=conf_dir)
    log_path = os.path.join(conf_dir, "daemon.log")
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(["ip", "netns", "exec", NAMESPACE, args.relay_python, "-m", "multicast_proxy",
                                   "multis_admin", "-R", "--metrics", METRICS_ADDRESS, "--metrics-detail", detail],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    control = os.path.join(conf_dir, "multis.sock")
    # ``ip netns exec`` execs the relay: daemon.pid is the relay's own pid (memory_kib).
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while control_ping(control) is None:
            if daemon.poll() is not None or time.monotonic() > deadline:
                with open(log_path) as handle:
                    raise ScaleError("the daemon did not start (%dx%d): %s" % (groups, members,
                                                                               handle.read()[-3000:]))
            time.sleep(0.1)
        memory_before = memory_kib(daemon.pid)
        pinger = Pinger(control)
        pinger.start()
        try:
            scraped = run(["ip", "netns", "exec", NAMESPACE, sys.executable, os.path.abspath(__file__),
                           "--child-scrape", METRICS_ADDRESS, str(args.scrapes)], timeout=3600)
        finally:
            pinger.stopping.set()
            pinger.join()
        scrapes = json.loads(scraped.stdout.strip().splitlines()[-1])
        memory_after = memory_kib(daemon.pid)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    walls = [scrape["wall_seconds"] for scrape in scrapes]
    renders = [scrape["previous_render_seconds"] for scrape in scrapes[1:]]
    return {"groups": groups, "members": members, "detail": detail, "scrapes": len(scrapes),
            "samples": scrapes[-1]["samples"], "bytes": scrapes[-1]["bytes"],
            "groups_up": scrapes[-1]["groups_up"],
            "wall_seconds": walls, "wall_seconds_median": statistics.median(walls),
            "render_seconds": renders, "render_seconds_median": statistics.median(renders) if renders else None,
            "ping_count": len(pinger.times), "ping_failures": pinger.failures,
            "ping_max_ms": 1000 * max(pinger.times) if pinger.times else None,
            "ping_p99_ms": 1000 * sorted(pinger.times)[int(0.99 * (len(pinger.times) - 1))]
            if pinger.times else None,
            "rss_kib_before": memory_before.get("VmRSS"), "rss_kib_after": memory_after.get("VmRSS"),
            "hwm_kib_after": memory_after.get("VmHWM")}


def print_report(rows):
    print()
    print("%-11s %-6s %9s %11s %10s %10s %10s %8s %9s" % (
        "groups x mb", "detail", "samples", "body bytes", "scrape s", "render s", "ping max", "RSS MiB",
        "peak MiB"))
    for row in rows:
        print("%-11s %-6s %9d %11d %10.3f %10s %8sms %8.1f %9.1f" % (
            "%dx%d" % (row["groups"], row["members"]), row["detail"], row["samples"], row["bytes"],
            row["wall_seconds_median"],
            "%.3f" % row["render_seconds_median"] if row["render_seconds_median"] is not None else "-",
            "%.1f" % row["ping_max_ms"] if row["ping_max_ms"] is not None else "-",
            row["rss_kib_after"] / 1024.0, row["hwm_kib_after"] / 1024.0))
    print("scrape s: median wall time of %d scrapes (connect to last byte); render s: the daemon's own\n"
          "multicast_proxy_metrics_render_seconds; ping max: longest control-socket round trip during the\n"
          "scrapes (how long the event loop that relays datagrams was held); RSS/peak: VmRSS/VmHWM after"
          % rows[0]["scrapes"])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--scrapes", type=int, default=SCRAPES,
                        help="scrapes per case, each a full render (default %d; at least 2)" % SCRAPES)
    parser.add_argument("--sizes", nargs="+", metavar="GROUPSxMEMBERS",
                        help="cases to measure (default: %s)" % " ".join("%dx%d" % size for size in SIZES))
    parser.add_argument("--relay-python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                        else sys.executable, help="interpreter that runs the relay (default: %(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    parser.add_argument("--child-scrape", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_scrape:
        return args
    if args.scrapes < 2:
        parser.error("--scrapes must be at least 2: a render time is read from the scrape after it")
    sizes = []
    for text in args.sizes or ["%dx%d" % size for size in SIZES]:
        match = re.match(r"^(\d+)x(\d+)$", text)
        if not match or not all(1 <= int(value) <= 1024 for value in match.groups()):
            parser.error("--sizes takes GROUPSxMEMBERS with both within 1..1024 (the relay's limits), got %r"
                         % text)
        sizes.append((int(match.group(1)), int(match.group(2))))
    args.sizes = sizes
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child_scrape:
        print(json.dumps(child_scrape(args.child_scrape[0], int(args.child_scrape[1]))))
        return 0
    if os.geteuid() != 0:
        raise ScaleError("run as root: the relay joins its groups in a network namespace created for the test")
    raise_file_limit()   # inherited by every daemon started below
    workdir = tempfile.mkdtemp(prefix="mcpb-met-")
    rows = []
    try:
        create_namespace()
        for groups, members in args.sizes:
            for detail in DETAILS:
                print("scraping %d groups x %d members, detail %s ..." % (groups, members, detail), flush=True)
                rows.append(measure(args, workdir, groups, members, detail))
    finally:
        run(["ip", "netns", "del", NAMESPACE], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    problems = ["%dx%d %s: %d of %d groups up" % (r["groups"], r["members"], r["detail"], r["groups_up"], r["groups"])
                for r in rows if r["groups_up"] != r["groups"]]
    problems += ["%dx%d %s: %d control pings failed" % (r["groups"], r["members"], r["detail"], r["ping_failures"])
                 for r in rows if r["ping_failures"]]
    print_report(rows)
    if args.json:
        relay_version = run([args.relay_python, "--version"], check=False)
        report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "relay_python": (relay_version.stdout or relay_version.stderr).strip(),
                  "cpus": os.cpu_count(), "cases": rows, "problems": problems}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2, sort_keys=True)
            handle.write("\n")
        print("wrote %s" % args.json)
    for problem in problems:
        print("problem: %s" % problem)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ScaleError as exc:
        sys.stderr.write("metrics_scale: %s\n" % exc)
        sys.exit(1)
