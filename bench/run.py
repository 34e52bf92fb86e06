#!/usr/bin/env python3
"""Relay benchmark: our relay against a C reference and socat, side by side.

Builds a small VPC in network namespaces (a bridge that drops multicast, one
source host, N member hosts), runs each implementation in turn under the same
conditions and finds, for each, the highest offered rate that loses less than
1% of the copies. Figures are written as JSON and a PNG plot to
docs/performance/ (see docs/performance.md for the method).

Run as root from the repository root:

    .venv/bin/python bench/run.py            # full sweep, about 20 minutes
    .venv/bin/python bench/run.py --quick    # smoke run, about a minute

Every namespace is named mcpb-*, and every address used is inside those
namespaces; all of it is removed on exit, also after an error or Ctrl-C.
"""

import argparse
import datetime
import fcntl
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C_SOURCES = os.path.join(REPO, "bench", "c")
C_PROGRAMS = ("blast", "sink", "relay_ref", "client_ref")
DEFAULT_OUT = os.path.join(REPO, "docs", "performance")
LOCK_PATH = "/run/mcpb-bench.lock"

PREFIX = "mcpb"
BRIDGE_NS = PREFIX + "-br"
SOURCE_NS = PREFIX + "-src"
SOURCE_IP = "10.213.0.1"
GROUP_IP = "239.77.0.1"
GROUP_PORT = 5600
SERVER_PORT = 5500
# The relay server's copies and the frame feed leave from this port, and our
# client's entry requires it, as a fleet deployed by the roles does (issue 14.7).
COPY_SOURCE_PORT = 868
FRAME_HEADER = 28
SOCKET_BUFFER = 4 << 20   # what the Python relay asks for; the references get the same

# Cores: the load generator and the sinks share one, the relay under test
# gets the other to itself, so the harness is not what is measured.
HARNESS_CPU = "0"
RELAY_CPU = "1"

# --scrape-interval: our daemons serve /metrics on loopback in their own namespace (the
# collection's default ports), scraped from inside it by this script's --scraper.
METRICS_PORTS = {"multis_admin": 9471, "multic_admin": 9472}
SCRAPE_TIMEOUT_CAP = 10.0    # seconds; a scrape never waits longer than this (or the interval)

LOSS_LIMIT = 0.01
# The flat-out probe offers at most this many copies per second (several times what one
# core can push through a bridge): at N = 256 an uncapped probe would queue minutes of work.
PROBE_COPIES_CAP = 800000
LATENCY_RATE = 1000          # datagrams/s: light load for the latency probe
IDLE_POLL = 0.1              # seconds; a relay that used no CPU tick in one poll has drained its queue
DRAIN_LIMIT = 10.0           # seconds a relay may take to empty its socket buffer after a trial
PROBE_DRAIN_LIMIT = 3.0      # the same after the flat-out probe, after which the relay is restarted
IGMP_REPORT_ALLOWANCE = 16   # reports a joining sink sends, counted by the bridge's multicast drop rule
WIRE_DRAIN = 0.05            # seconds for the last copies to cross the bridge to the sinks
# Copies may still arrive this long after the last send (the larger of the two): enough for
# a relay that was descheduled for a moment, far too little to hide a slow one.
BACKLOG_SHARE = 0.03         # of the trial's length
BACKLOG_FLOOR = 0.05         # seconds


def member_ns(index):
    return "%s-m%d" % (PREFIX, index)


def member_ip(index):
    return "10.213.%d.%d" % (10 + index // 200, 1 + index % 200)


def member_mac(index):
    return "02:6d:63:01:%02x:%02x" % (index >> 8, index & 0xFF)


def netns_path(name):
    return "/run/netns/" + name


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and what to check."""


def run(cmd, stdin_text=None, check=True, timeout=60, env=None):
    result = subprocess.run(cmd, input=stdin_text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=timeout, env=env, check=False)
    if check and result.returncode != 0:
        raise BenchError("%s failed (exit %d): %s" % (" ".join(cmd[:6]), result.returncode,
                                                      result.stderr.strip() or result.stdout.strip()))
    return result


# --------------------------------------------------------------------------
# Processes: every one the harness starts is tracked and stopped by its pid.

class Processes:
    def __init__(self):
        self.running = []

    def start(self, cmd, env=None, log_path=None):
        """Start a process. Its output goes to ``log_path`` (a long-running relay must never
        block on a full pipe), or else to pipes the caller reads."""
        if log_path:
            with open(log_path, "a") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env)
        else:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    universal_newlines=True, env=env)
        self.running.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, timeout=5.0):
        """Stop one process; returns its (stdout, stderr)."""
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc in self.running:
            self.running.remove(proc)
        return out or "", err or ""

    def stop_all(self):
        for proc in list(self.running):
            self.stop(proc)


def cpu_split(pid):
    """(utime, stime) of a process (all its threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14, stime 15 (1-based).
    return int(fields[11]), int(fields[12])


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    return sum(cpu_split(pid))


def sched_runtime(pid):
    """On-CPU time in seconds from /proc/<pid>/sched (nanosecond accounting, where
    utime+stime are sampled at clock ticks); None when the kernel does not offer it."""
    try:
        with open("/proc/%d/sched" % pid) as handle:
            for line in handle:
                if line.startswith("se.sum_exec_runtime"):
                    return float(line.split(":")[1]) / 1000.0
    except OSError:
        return None
    return None


def cpu_times(cpu):
    """(user, nice, system, idle, iowait, irq, softirq, steal) ticks of one CPU."""
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("cpu%s " % cpu):
                return [int(v) for v in line.split()[1:9]]
    raise BenchError("no cpu%s line in /proc/stat" % cpu)


def core_usage(before, after):
    """Busy and softirq share of a CPU between two cpu_times() readings, in percent."""
    delta = [b - a for a, b in zip(before, after)]
    total = float(sum(delta)) or 1.0
    return {"busy_percent": 100.0 * (total - delta[3] - delta[4]) / total,
            "softirq_percent": 100.0 * delta[6] / total,
            "steal_percent": 100.0 * delta[7] / total}


def udp_rcvbuf_errors(pid):
    """UDP datagrams dropped for a full receive buffer in the namespace of ``pid``."""
    with open("/proc/%d/net/snmp" % pid) as handle:
        lines = [line.split() for line in handle if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError("process %d has no VmRSS (did it exit?)" % pid)


# --------------------------------------------------------------------------
# Topology

class Topology:
    """Bridge namespace + source namespace + member namespaces."""

    def __init__(self, members):
        self.members = members
        self.names = [BRIDGE_NS, SOURCE_NS] + [member_ns(i) for i in range(members)]

    @staticmethod
    def remove_stale():
        """Namespaces left by a run that was killed (the lock says none is running)."""
        listing = run(["ip", "netns", "list"]).stdout
        names = [line.split()[0] for line in listing.splitlines() if line.split()]
        # Only this script's names: bench/config_scale.py's mcpb-cfg may be in use.
        stale = [name for name in names if re.match(r"^%s-(br|src|m[0-9]+)$" % PREFIX, name)]
        for name in stale:
            run(["ip", "netns", "del", name], check=False)
        return stale

    def create(self):
        run(["ip", "-batch", "-"], "".join("netns add %s\n" % name for name in self.names))
        hosts = [(SOURCE_NS, "mcpb-src", SOURCE_IP, "02:6d:63:00:00:01")]
        hosts += [(member_ns(i), "mcpbm%d" % i, member_ip(i), member_mac(i)) for i in range(self.members)]
        # No IPv6 addresses anywhere (addrgenmode none): the test traffic is IPv4, and each
        # interface coming up would otherwise send duplicate address detection, router
        # solicitations and MLD reports that the bridge floods to every port, for seconds
        # after the topology is built, on the CPUs that are being measured.
        bridge_cmds = ["link set lo up", "link add br0 type bridge", "link set br0 addrgenmode none",
                       "link set br0 up"]
        fdb_cmds = []
        for ns, port, _ip, mac in hosts:
            bridge_cmds.append("link add %s type veth peer name eth0 address %s netns %s" % (port, mac, ns))
            bridge_cmds.append("link set %s addrgenmode none" % port)
            bridge_cmds.append("link set %s master br0 up" % port)
            # A host that only receives never teaches the bridge its MAC, and
            # every copy to it would be flooded to all ports.
            fdb_cmds.append("fdb add %s dev %s master static" % (mac, port))
        run(["ip", "-n", BRIDGE_NS, "-batch", "-"], "\n".join(bridge_cmds) + "\n")
        run(["bridge", "-n", BRIDGE_NS, "-batch", "-"], "\n".join(fdb_cmds) + "\n")
        # A VPC's switch does not run the host firewall: with br_netfilter loaded (it is, on
        # these hosts) every bridged datagram also went through the iptables hooks, a fifth
        # of the load generator's CPU when it feeds a client and a share of every relay's
        # forwarding. The setting is per namespace; "-e": nothing to do without br_netfilter.
        run(["ip", "netns", "exec", BRIDGE_NS, "sysctl", "-q", "-e", "-w", "net.bridge.bridge-nf-call-iptables=0",
             "net.bridge.bridge-nf-call-ip6tables=0", "net.bridge.bridge-nf-call-arptables=0"])
        # The VPC drops multicast where it enters the switch. Dropped in the forward hook
        # instead, every datagram is first flooded (no IGMP querier, so no snooping) and one
        # clone per member port is dropped: 256 clones cost the source's CPU about 90 us per
        # datagram and capped the load generator at 8,500 to 11,000 multicast datagrams/s. The
        # filter priority runs before br_netfilter's own prerouting hook.
        run(["ip", "netns", "exec", BRIDGE_NS, "nft", "-f", "-"],
            "table bridge mcpb {\n"
            "  chain prerouting {\n"
            "    type filter hook prerouting priority filter; policy accept;\n"
            "    ip daddr 224.0.0.0/4 counter drop\n"
            "  }\n"
            "}\n")
        for ns, _port, ip, _mac in hosts:
            cmds = ["link set lo up", "addr add %s/16 dev eth0" % ip, "link set eth0 addrgenmode none",
                    "link set eth0 up",
                    "route add 224.0.0.0/4 dev eth0"]
            if ns == SOURCE_NS:
                # The relay never has to wait for ARP in the middle of a trial.
                cmds += ["neigh replace %s lladdr %s dev eth0 nud permanent" % (member_ip(i), member_mac(i))
                         for i in range(self.members)]
            else:
                cmds.append("neigh replace %s lladdr 02:6d:63:00:00:01 dev eth0 nud permanent" % SOURCE_IP)
            run(["ip", "-n", ns, "-batch", "-"], "\n".join(cmds) + "\n")

    def destroy(self):
        for name in self.names:
            run(["ip", "netns", "del", name], check=False)

    def multicast_drops(self):
        listing = run(["ip", "netns", "exec", BRIDGE_NS, "nft", "list", "table", "bridge", "mcpb"]).stdout
        for line in listing.splitlines():
            if "counter packets" in line:
                return int(line.split("counter packets")[1].split()[0])
        raise BenchError("the multicast drop rule has no counter:\n" + listing)


# --------------------------------------------------------------------------
# Implementations under test. Each says how it is started, how it is fed
# (blast options) and how its output is received (sink sockets and offsets).

class Feed:
    def __init__(self, blast_args, sink_socks, offset, datagram_len, copies):
        self.blast_args = blast_args
        self.sink_socks = sink_socks
        self.offset = offset
        self.datagram_len = datagram_len
        self.copies = copies          # copies the sinks receive per datagram sent


def multicast_feed(payload):
    return ["--netns", netns_path(SOURCE_NS), "--mode", "multicast", "--dst", GROUP_IP, "--port", str(GROUP_PORT),
            "--ifaddr", SOURCE_IP, "--size", str(payload)]


def relay_sinks(members):
    return ["%s,%d" % (netns_path(member_ns(i)), SERVER_PORT) for i in range(members)]


def redelivery_sinks(members):
    return ["%s,%d,%s,%s" % (netns_path(member_ns(i)), GROUP_PORT, GROUP_IP, member_ip(i)) for i in range(members)]


class Implementation:
    """Base: knows the harness tools; subclasses start their processes."""

    kind = None        # "relay", "client" or "path"
    name = None
    reference = None   # name of the C implementation its figures are divided by
    label = None

    def __init__(self, bench):
        self.bench = bench
        self.procs = []
        self.profiles = []   # cProfile outputs of our daemons (--profile-relay)
        self.scrapers = []   # --scrape-interval: (program, scraper process) of our running daemons
        self.scrape_summaries = []   # what each stopped scraper reported
        self.log_path = os.path.join(bench.workdir, self.name + ".log")

    def pids(self):
        return [proc.pid for proc in self.procs]

    def spawn(self, cmd, env=None):
        proc = self.bench.processes.start(cmd, env=env, log_path=self.log_path)
        self.procs.append(proc)
        return proc

    def log_tail(self, limit=2000):
        try:
            with open(self.log_path) as handle:
                return handle.read()[-limit:].strip()
        except FileNotFoundError:
            return ""

    def check_alive(self):
        for proc in self.procs:
            if proc.poll() is not None:
                self.bench.processes.stop(proc)
                raise BenchError("%s exited (code %s) during the run; its output:\n%s"
                                 % (self.name, proc.returncode, self.log_tail()))
        for program, proc in self.scrapers:
            if proc.poll() is not None:
                _out, err = self.bench.processes.stop(proc)
                raise BenchError("the /metrics scraper of %s (%s) exited (code %s): %s"
                                 % (self.name, program, proc.returncode, err.strip()))

    def stop(self):
        # The scrapers first: a daemon that is going away is not a failed scrape.
        for program, proc in self.scrapers:
            out, err = self.bench.processes.stop(proc)
            try:
                summary = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise BenchError("the /metrics scraper of %s (%s) printed no summary: %s"
                                 % (self.name, program, err.strip())) from None
            self.scrape_summaries.append(dict(summary, program=program))
        self.scrapers = []
        for proc in self.procs:
            self.bench.processes.stop(proc)
        self.procs = []

    def take_scrape_summary(self):
        """The scrapes since the last call, all daemons and restarts together (None without
        --scrape-interval); BenchError when none succeeded, for then nothing was compared."""
        summaries, self.scrape_summaries = self.scrape_summaries, []
        if self.bench.args.scrape_interval is None or not summaries:
            return None
        total = {"interval": self.bench.args.scrape_interval,
                 "ok": sum(s["ok"] for s in summaries), "failed": sum(s["failed"] for s in summaries),
                 "max_seconds": max(s["max_seconds"] for s in summaries),
                 "bytes_max": max(s["bytes_max"] for s in summaries),
                 "errors": sorted({error for s in summaries for error in s["errors"]})[:5]}
        if not total["ok"]:
            raise BenchError("%s: no /metrics scrape succeeded (%s)" % (self.name, "; ".join(total["errors"])))
        return total

    def pinned(self, ns, cmd):
        return ["ip", "netns", "exec", ns, "taskset", "-c", RELAY_CPU] + self.bench.niced(cmd)

    # Our relay, started the way a host runs it (architecture.md, "Running the relay").
    def python_env(self, conf_dir):
        return dict(os.environ, PYTHONPATH=os.path.join(REPO, "files"), MULTICAST_CONF_DIR=conf_dir,
                    PYTHONUNBUFFERED="1")

    def admin(self, program, conf_dir, args):
        result = run([self.bench.relay_python, "-m", "multicast_proxy", program] + args, check=False,
                     env=self.python_env(conf_dir))
        # 3: saved, applies when the daemon starts; the daemon is started next.
        if result.returncode not in (0, 3):
            raise BenchError("%s %s failed (exit %d): %s" % (program, " ".join(args[:4]), result.returncode,
                                                             result.stderr.strip()))

    def start_python_daemon(self, ns, program, conf_dir, control_socket):
        profiler = []
        if self.bench.args.profile_relay:
            # Written when the daemon exits cleanly on SIGTERM.
            path = os.path.join(conf_dir, "%s.prof" % program)
            self.profiles.append((program, path))
            profiler = ["-m", "cProfile", "-o", path]
        interval = self.bench.args.scrape_interval
        metrics = ["--metrics", "127.0.0.1:%d" % METRICS_PORTS[program]] if interval is not None else []
        proc = self.spawn(
            self.pinned(ns, [self.bench.relay_python] + profiler + ["-m", "multicast_proxy", program, "-R"] +
                        metrics),
            env=self.python_env(conf_dir))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.check_alive()
            if control_ping(os.path.join(conf_dir, control_socket)):
                if interval is not None:
                    self.start_scraper(ns, program)
                return proc
            time.sleep(0.05)
        raise BenchError("%s -R in %s did not answer on its control socket within 15 s" % (program, ns))

    def start_scraper(self, ns, program):
        """A scraper in the daemon's namespace, on the harness's core (where a Prometheus would not
        compete with the relay); it runs until the implementation is stopped."""
        url = "http://127.0.0.1:%d/metrics" % METRICS_PORTS[program]
        cmd = ["ip", "netns", "exec", ns, "taskset", "-c", HARNESS_CPU] + self.bench.niced(
            [sys.executable, os.path.abspath(__file__), "--scraper", url, str(self.bench.args.scrape_interval)])
        self.scrapers.append((program, self.bench.processes.start(cmd)))

    def configure_python_server(self, members):
        conf_dir = self.bench.conf_dir("server-%d" % members)
        members_arg = ",".join(member_ip(i) for i in range(members))
        self.admin("multis_admin", conf_dir, ["-A", "-m", GROUP_IP, "-j", members_arg, "-p", str(SERVER_PORT),
                                              "-g", str(GROUP_PORT)])
        self.admin("multis_admin", conf_dir, ["--set", "source_port=%d" % COPY_SOURCE_PORT])
        return conf_dir

    def configure_python_client(self, index):
        conf_dir = self.bench.conf_dir("client-m%d" % index)
        self.admin("multic_admin", conf_dir, ["-A", "-i", SOURCE_IP, "-g", str(GROUP_PORT), "-s",
                                              str(SERVER_PORT), "-m", GROUP_IP, "--source-port",
                                              str(COPY_SOURCE_PORT)])
        return conf_dir

    def start_c_relay(self, members):
        cmd = [self.bench.binary("relay_ref"), "--group", GROUP_IP, "--port", str(GROUP_PORT),
               "--ifaddr", SOURCE_IP, "--dport", str(SERVER_PORT), "--rcvbuf", str(SOCKET_BUFFER),
               "--members", ",".join(member_ip(i) for i in range(members))]
        self.spawn(self.pinned(SOURCE_NS, cmd))

    def start_c_client(self, index):
        cmd = [self.bench.binary("client_ref"), "--server-ip", SOURCE_IP, "--port", str(SERVER_PORT),
               "--group", GROUP_IP, "--group-port", str(GROUP_PORT), "--ifaddr", member_ip(index),
               "--rcvbuf", str(SOCKET_BUFFER)]
        self.spawn(self.pinned(member_ns(index), cmd))


def control_ping(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    try:
        sock.connect(path)
        sock.sendall(b'{"cmd": "ping"}\n')
        reply = sock.recv(4096)
        return json.loads(reply.decode("utf-8").split("\n", 1)[0]).get("ok") is True
    except (OSError, ValueError):
        return False
    finally:
        sock.close()


class RelayC(Implementation):
    kind, name, label = "relay", "relay-c", "C reference relay (sendmmsg)"

    def start(self, members):
        self.start_c_relay(members)

    def feed(self, members, payload):
        return Feed(multicast_feed(payload), relay_sinks(members), FRAME_HEADER, FRAME_HEADER + payload, members)


class RelayPython(Implementation):
    kind, name, reference, label = "relay", "relay-py", "relay-c", "our server relay (multis_admin -R)"

    def start(self, members):
        conf_dir = self.configure_python_server(members)
        self.start_python_daemon(SOURCE_NS, "multis_admin", conf_dir, "multis.sock")

    def feed(self, members, payload):
        return Feed(multicast_feed(payload), relay_sinks(members), FRAME_HEADER, FRAME_HEADER + payload, members)


class Socat(Implementation):
    kind, name, reference, label = "relay", "socat", "relay-c", "socat one-to-one forwarder"

    def start(self, members):
        if members != 1:
            raise BenchError("socat forwards to one address; it is only measured at N = 1")
        cmd = ["socat", "-u",
               "UDP4-RECV:%d,bind=%s,ip-add-membership=%s:%s,reuseaddr,rcvbuf=%d"
               % (GROUP_PORT, GROUP_IP, GROUP_IP, SOURCE_IP, SOCKET_BUFFER),
               "UDP4-SENDTO:%s:%d" % (member_ip(0), SERVER_PORT)]
        self.spawn(self.pinned(SOURCE_NS, cmd))

    def feed(self, members, payload):
        # socat forwards the bare payload, without the relay's frame header.
        return Feed(multicast_feed(payload), relay_sinks(1), 0, payload, 1)


def frame_feed(payload):
    return ["--netns", netns_path(SOURCE_NS), "--mode", "frame", "--dst", member_ip(0), "--port",
            str(SERVER_PORT), "--group", GROUP_IP, "--group-port", str(GROUP_PORT), "--size", str(payload),
            "--sport", str(COPY_SOURCE_PORT)]


class ClientC(Implementation):
    kind, name, label = "client", "client-c", "C reference re-delivery"

    def start(self, members):
        self.start_c_client(0)

    def feed(self, members, payload):
        return Feed(frame_feed(payload), redelivery_sinks(1), 0, payload, 1)


class ClientPython(Implementation):
    kind, name, reference, label = "client", "client-py", "client-c", "our client re-delivery (multic_admin -R)"

    def start(self, members):
        conf_dir = self.configure_python_client(0)
        self.start_python_daemon(member_ns(0), "multic_admin", conf_dir, "multic.sock")

    def feed(self, members, payload):
        return Feed(frame_feed(payload), redelivery_sinks(1), 0, payload, 1)


class PathC(Implementation):
    kind, name, label = "path", "path-c", "C relay + C client"

    def start(self, members):
        self.start_c_relay(members)
        for index in range(members):
            self.start_c_client(index)

    def feed(self, members, payload):
        return Feed(multicast_feed(payload), redelivery_sinks(members), 0, payload, members)


class PathPython(Implementation):
    kind, name, reference, label = "path", "path-py", "path-c", "our server + our client"

    def start(self, members):
        conf_dir = self.configure_python_server(members)
        self.start_python_daemon(SOURCE_NS, "multis_admin", conf_dir, "multis.sock")
        for index in range(members):
            client_dir = self.configure_python_client(index)
            self.start_python_daemon(member_ns(index), "multic_admin", client_dir, "multic.sock")

    def feed(self, members, payload):
        return Feed(multicast_feed(payload), redelivery_sinks(members), 0, payload, members)


class Direct(Implementation):
    """No relay: the source sends unicast straight to member 0 (latency floor)."""

    kind, name, label = "direct", "direct", "no relay (unicast source -> member)"

    def start(self, members):
        pass

    def feed(self, members, payload):
        return Feed(["--netns", netns_path(SOURCE_NS), "--mode", "unicast", "--dst", member_ip(0),
                     "--port", str(SERVER_PORT), "--size", str(payload)], relay_sinks(1), 0, payload, 1)


# --------------------------------------------------------------------------
# Measurement

class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.processes = Processes()
        self.relay_python = args.relay_python
        self.topology = None
        self.generator_multicast_pps = None   # measured by verify_topology()
        # Frame sequence numbers keep growing across trials, as from one server run.
        self.seq_next = int(time.time()) << 32

    def say(self, text):
        stamp = time.strftime("%H:%M:%S")
        print("[%s] %s" % (stamp, text), flush=True)

    def niced(self, cmd):
        return ["nice", "-n", str(self.args.nice)] + cmd if self.args.nice else cmd

    def binary(self, name):
        return os.path.join(self.workdir, "bin", name)

    def conf_dir(self, name):
        path = os.path.join(self.workdir, "conf-%s-%d" % (name, len(os.listdir(self.workdir))))
        os.makedirs(path)
        return path

    def build(self):
        os.makedirs(os.path.join(self.workdir, "bin"))
        for program in C_PROGRAMS:
            run(["gcc", "-O2", "-Wall", "-Wextra", "-o", self.binary(program),
                 os.path.join(C_SOURCES, program + ".c"), "-lm"])

    def trial(self, impl, feed, rate, seconds, latency=False, drain_limit=None):
        """Offer ``rate`` datagrams/s (0: as fast as possible) for ``seconds``; count what arrives."""
        impl.check_alive()
        sink_cmd = ["taskset", "-c", HARNESS_CPU] + self.niced([self.binary("sink")]) + [
            "--offset", str(feed.offset), "--len", str(feed.datagram_len), "--rcvbuf", str(SOCKET_BUFFER),
            "--min-seq", str(self.seq_next)]
        for sock in feed.sink_socks:
            sink_cmd += ["--sock", sock]
        if latency:
            sink_cmd.append("--latency")
        sink = self.processes.start(sink_cmd)
        ready = sink.stdout.readline().strip()
        if ready != "ready":
            _out, err = self.processes.stop(sink)
            raise BenchError("the sink did not start: %s" % err.strip())
        # About 2000 sends a second: few enough wake-ups for the sender to keep up, bursts
        # small enough to stay far inside every socket buffer.
        batch = 64 if rate == 0 else max(1, min(64, int(rate) // 2000))
        blast_cmd = (["taskset", "-c", HARNESS_CPU] + self.niced([self.binary("blast")]) + feed.blast_args +
                     ["--rate", str(int(rate)), "--duration-ms", str(int(seconds * 1000)), "--batch", str(batch),
                      "--seq-base", str(self.seq_next)])
        pids = impl.pids()
        input_drops_before = udp_rcvbuf_errors(pids[0]) if pids else 0
        cpu_before = [cpu_split(pid) for pid in pids]
        sched_before = [sched_runtime(pid) for pid in pids]
        core_before, harness_before = cpu_times(RELAY_CPU), cpu_times(HARNESS_CPU)
        blast = run(blast_cmd, timeout=seconds + 30)
        core_after, harness_after = cpu_times(RELAY_CPU), cpu_times(HARNESS_CPU)
        sched_after = [sched_runtime(pid) for pid in pids]
        cpu_after = [cpu_split(pid) for pid in pids]
        sent = json.loads(blast.stdout)
        self.seq_next += sent["sent"]
        self.wait_idle(pids, DRAIN_LIMIT if drain_limit is None else drain_limit)
        input_drops = udp_rcvbuf_errors(pids[0]) - input_drops_before if pids else None
        out, err = self.processes.stop(sink)
        try:
            got = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError("the sink printed no result: %s" % err.strip()) from None
        expected = sent["sent"] * feed.copies
        # Copies still arriving after the sender stopped came out of the relay's 8 MiB socket
        # buffer: a 1-second trial can hide a relay that is slower than the offered rate behind
        # it. The rate is taken over the time until the last copy arrived.
        span = max(sent["elapsed"], (got["last_ns"] - sent["start_ns"]) / 1e9 if got["last_ns"] else 0.0)
        ticks = float(os.sysconf("SC_CLK_TCK"))
        cpu_seconds = (sum(map(sum, cpu_after)) - sum(map(sum, cpu_before))) / ticks
        # User time is the implementation's own code (for ours, the interpreter); system
        # time holds the system calls and the kernel's forwarding of the copies inside them.
        user_seconds = (sum(u for u, _s in cpu_after) - sum(u for u, _s in cpu_before)) / ticks
        sched_known = None not in sched_before + sched_after
        sched_seconds = sum(sched_after) - sum(sched_before) if sched_known else None
        result = {
            "rate_target": int(rate),
            "sent": sent["sent"],
            "elapsed": sent["elapsed"],
            "offered_pps": sent["sent"] / sent["elapsed"],
            "received": got["total"],
            "loss": 1.0 - got["total"] / float(expected) if expected else 1.0,
            "copies_per_s": got["total"] / span,
            "backlog_seconds": span - sent["elapsed"],
            "cpu_seconds": cpu_seconds,
            "cpu_user_seconds": user_seconds,
            "cpu_percent": 100.0 * cpu_seconds / sent["elapsed"],
            "cpu_percent_sched": 100.0 * sched_seconds / sent["elapsed"] if sched_known else None,
            "sink_drops": got["sink_drops"],
            "relay_input_drops": input_drops,
            # Where the relay's CPU went: the kernel's forwarding work runs as softirq and is
            # not in the relay's own utime+stime; other processes show up as busy too.
            "relay_core": core_usage(core_before, core_after),
            # The load generator, the sinks and the delivery of the source's datagrams to the
            # relay's socket share this CPU: when it is as busy as the relay's, the two limits meet.
            "harness_core": core_usage(harness_before, harness_after),
            "stale": got["stale"],
            "bad": got["bad"],
        }
        if latency:
            result["latency_ns"] = got.get("latency_ns", {})
        impl.check_alive()
        return result

    def wait_idle(self, pids, limit):
        """Wait until the relay has worked off its queue, so the count is complete and the
        next trial does not start with this one's backlog."""
        deadline = time.monotonic() + limit
        ticks = [cpu_ticks(pid) for pid in pids]
        while pids and time.monotonic() < deadline:
            time.sleep(IDLE_POLL)
            now = [cpu_ticks(pid) for pid in pids]
            if now == ticks:
                break
            ticks = now
        time.sleep(WIRE_DRAIN)

    def passes(self, result):
        """Less than 1% lost, and delivered at the offered pace (not worked off the buffer later)."""
        allowed = max(BACKLOG_SHARE * result["elapsed"], BACKLOG_FLOOR)
        return result["loss"] < LOSS_LIMIT and result["backlog_seconds"] <= allowed

    def warm_up(self, impl, feed):
        """Wait until the implementation delivers (joins, ARP, daemon start) before measuring."""
        deadline = time.monotonic() + 10
        last = None
        while time.monotonic() < deadline:
            last = self.trial(impl, feed, 2000, 0.25)
            if last["loss"] < 0.05:
                return
        raise BenchError("%s delivers nothing usable at 2000 datagrams/s (loss %.1f%%, received %d); its "
                         "output:\n%s" % (impl.name, 100 * last["loss"], last["received"], impl.log_tail()))

    def search(self, impl, feed, members):
        """Highest offered rate with < 1% loss: probe flat out, then bisect around it."""
        seconds = self.args.trial_seconds
        trials = []

        def attempt(rate, drain_limit=None):
            result = self.trial(impl, feed, rate, seconds, drain_limit=drain_limit)
            trials.append(result)
            return result

        probe = attempt(0 if feed.copies == 1 else PROBE_COPIES_CAP // feed.copies, PROBE_DRAIN_LIMIT)
        # Overloaded, a relay can hold minutes of work in its socket buffer: start afresh
        # rather than let the probe's backlog eat into the next trials.
        impl.stop()
        impl.start(members)
        self.warm_up(impl, feed)
        capacity = probe["copies_per_s"] / feed.copies   # datagrams/s that came through flat out
        if capacity <= 0:
            raise BenchError("%s delivered nothing flat out" % impl.name)
        sender_limit = probe["offered_pps"]
        best = probe if self.passes(probe) else None
        low, high = None, None
        rate = 0.9 * capacity
        for dummy in range(5):
            result = attempt(rate)
            if self.passes(result):
                low, best = rate, pick_best(best, result)
                break
            high = rate
            rate *= 0.6
        if low is None:
            # Recorded as 0 rather than aborting a twenty-minute run over one bad search.
            self.say("        %s lost more than 1%% at every rate down to %.0f datagrams/s" % (impl.name, rate / 0.6))
            failed = summarise(result, trials, limited_by="no passing rate")
            failed["copies_per_s"] = 0.0
            return failed
        if high is None:
            high = min(1.4 * capacity, sender_limit)
            if high <= low * 1.01:
                # The sender's own limit was reached with no loss: report it as such.
                return summarise(best, trials, limited_by="sender")
        # Flat out without loss: the load generator, not the relay, set the pace.
        sender_limited = self.passes(probe)
        for dummy in range(self.args.bisect_steps):
            rate = (low + high) / 2.0
            result = attempt(rate)
            if self.passes(result) and result["offered_pps"] >= 0.97 * rate:
                low, best = rate, pick_best(best, result)
            else:
                # No loss, but the load generator could not offer the rate: the relay kept up
                # with everything it was given, so the figure is a lower bound.
                sender_limited = sender_limited or self.passes(result)
                high = rate
        return summarise(best, trials, limited_by="sender" if sender_limited else "loss")

    def measure(self, impl, members, payload, run_index):
        feed = impl.feed(members, payload)
        self.say("run %d  %-9s N=%-3d payload=%-4d ..." % (run_index + 1, impl.name, members, payload))
        impl.start(members)
        try:
            self.warm_up(impl, feed)
            result = self.search(impl, feed, members)
            result["rss_kib"] = sum(rss_kib(pid) for pid in impl.pids()) if impl.pids() else None
        finally:
            impl.stop()
        result["scrapes"] = impl.take_scrape_summary()
        if result["scrapes"] is not None:
            self.say("        /metrics scraped %(ok)d times every %(interval)g s (%(failed)d failed, slowest "
                     "%(max_seconds).3f s)" % result["scrapes"])
        profile_name = "%s-N%d-%dB-run%d" % (impl.name, members, payload, run_index + 1)
        result["profiles"] = self.save_profiles(impl, profile_name)
        result.update(impl=impl.name, label=impl.label, kind=impl.kind, members=members, payload=payload,
                      run=run_index)
        self.say("        -> %.0f copies/s, loss %.2f%%, relay CPU %.0f%%, RSS %s KiB"
                 % (result["copies_per_s"], 100 * result["loss"], result["cpu_percent"], result["rss_kib"]))
        return result

    def save_profiles(self, impl, label):
        """Turn each daemon's cProfile output into a text table next to the JSON."""
        saved = []
        for index, (program, path) in enumerate(impl.profiles):
            if not os.path.exists(path):
                raise BenchError("%s wrote no profile (%s): did it exit on SIGTERM?" % (program, path))
            # Several daemons of one program (restarts, path clients) each get their own file.
            text_path = os.path.join(self.args.out, "%s-profile-%s-%s-%d.txt" % (self.args.name, label, program,
                                                                                 index + 1))
            table = run([self.relay_python, "-c",
                         "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(25)",
                         path]).stdout
            with open(text_path, "w") as handle:
                handle.write("%s under cProfile during the %s search (sorted by own time)\n%s"
                             % (program, label, table))
            saved.append(os.path.relpath(text_path, self.args.out))
        impl.profiles = []
        return saved

    def measure_latency(self, impl, run_index):
        feed = impl.feed(1, 100)
        impl.start(1)
        try:
            self.warm_up(impl, feed)
            result = self.trial(impl, feed, LATENCY_RATE, self.args.latency_seconds, latency=True)
        finally:
            impl.stop()
        scrapes = impl.take_scrape_summary()
        self.save_profiles(impl, "%s-latency-run%d" % (impl.name, run_index + 1))
        latency = result.get("latency_ns") or {}
        if not latency.get("samples"):
            raise BenchError("%s: no latency samples" % impl.name)
        self.say("run %d  latency %-9s p50 %.1f us  p99 %.1f us  (%d samples, loss %.2f%%)"
                 % (run_index + 1, impl.name, latency["p50"] / 1000.0, latency["p99"] / 1000.0,
                    latency["samples"], 100 * result["loss"]))
        return {"impl": impl.name, "label": impl.label, "kind": impl.kind, "run": run_index, "rate": LATENCY_RATE,
                "loss": result["loss"], "samples": latency["samples"], "p50_us": latency["p50"] / 1000.0,
                "p99_us": latency["p99"] / 1000.0, "min_us": latency["min"] / 1000.0,
                "max_us": latency["max"] / 1000.0, "scrapes": scrapes}

    def verify_topology(self):
        """Multicast must not cross the bridge, unicast must: check before trusting any figure."""
        direct = Direct(self)
        before = self.topology.multicast_drops()
        leak_feed = Feed(multicast_feed(100), redelivery_sinks(1), 0, 100, 1)
        leaked = self.trial(direct, leak_feed, 2000, 0.25)
        if leaked["received"]:
            raise BenchError("a member received %d multicast datagrams across the bridge: the VPC drop rule "
                             "does not work, figures would be meaningless" % leaked["received"])
        dropped = self.topology.multicast_drops() - before
        if dropped < leaked["sent"]:
            raise BenchError("the bridge's multicast drop counter moved by %d for %d datagrams sent: the "
                             "source's datagrams do not all reach the bridge (check the source's route for "
                             "224.0.0.0/4)" % (dropped, leaked["sent"]))
        # One drop per datagram, plus the sink's IGMP reports: more means every datagram is
        # copied to the member ports before it is dropped, at the source CPU's expense.
        if dropped > leaked["sent"] + IGMP_REPORT_ALLOWANCE:
            raise BenchError("the bridge dropped %d multicast copies for %d datagrams sent: it floods them to "
                             "the member ports before dropping, which makes the load generator the limit of "
                             "every result; drop in the prerouting hook" % (dropped, leaked["sent"]))
        # For the record: a relay result near this rate is the load generator's limit.
        self.generator_multicast_pps = self.trial(direct, leak_feed, 0, 0.25)["offered_pps"]
        self.say("the load generator offers %.0f multicast datagrams/s flat out (100 bytes, no receiver)"
                 % self.generator_multicast_pps)
        reached = self.trial(direct, direct.feed(1, 100), 2000, 0.25)
        if reached["loss"] > 0.01:
            raise BenchError("unicast source -> member 0 loses %.1f%%: the topology is broken"
                             % (100 * reached["loss"]))


def pick_best(best, result):
    if best is None or result["copies_per_s"] > best["copies_per_s"]:
        return result
    return best


def summarise(best, trials, limited_by):
    summary = {key: best[key] for key in ("copies_per_s", "offered_pps", "loss", "cpu_seconds", "cpu_percent",
                                          "cpu_percent_sched",
                                          "sink_drops", "relay_input_drops", "relay_core", "harness_core",
                                          "elapsed", "sent",
                                          "received")}
    copies = best["received"]
    summary["cpu_us_per_copy"] = 1e6 * best["cpu_seconds"] / copies if copies else None
    summary["cpu_user_us_per_copy"] = 1e6 * best["cpu_user_seconds"] / copies if copies else None
    summary["limited_by"] = limited_by
    trial_keys = ("rate_target", "offered_pps", "copies_per_s", "loss", "backlog_seconds", "sink_drops",
                  "relay_input_drops", "stale")
    summary["trials"] = [{key: t[key] for key in trial_keys} for t in trials]
    return summary


# --------------------------------------------------------------------------
# Aggregation, output

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(throughput, latency):
    """Median over runs of every figure, plus the per-run ratio to the C reference."""
    by_key = {}
    for result in throughput:
        by_key.setdefault((result["impl"], result["members"], result["payload"]), []).append(result)
    reference_of = {cls.name: cls.reference for cls in IMPLEMENTATIONS}
    rows = []
    for (impl, members, payload), results in sorted(by_key.items()):
        row = {"impl": impl, "label": results[0]["label"], "kind": results[0]["kind"], "members": members,
               "payload": payload,
               "runs": len(results),
               "copies_per_s": median([r["copies_per_s"] for r in results]),
               "copies_per_s_min": min(r["copies_per_s"] for r in results),
               "copies_per_s_max": max(r["copies_per_s"] for r in results),
               "cpu_percent": median([r["cpu_percent"] for r in results]),
               "cpu_percent_sched": median([r["cpu_percent_sched"] for r in results]),
               "cpu_us_per_copy": median([r["cpu_us_per_copy"] for r in results]),
               "cpu_user_us_per_copy": median([r.get("cpu_user_us_per_copy") for r in results]),
               "rss_kib": median([r["rss_kib"] for r in results]),
               "sender_limited_runs": sum(1 for r in results if r["limited_by"] == "sender")}
        reference = reference_of.get(impl)
        if reference:
            ratios = []
            for r in results:
                refs = [x for x in by_key.get((reference, members, payload), []) if x["run"] == r["run"]]
                if refs and refs[0]["copies_per_s"]:
                    ratios.append(r["copies_per_s"] / refs[0]["copies_per_s"])
            row["reference"] = reference
            row["ratio_to_reference"] = median(ratios)
        rows.append(row)
    lat_rows = []
    lat_by_impl = {}
    for result in latency:
        lat_by_impl.setdefault(result["impl"], []).append(result)
    for impl, results in sorted(lat_by_impl.items()):
        row = {"impl": impl, "label": results[0]["label"], "runs": len(results),
               "p50_us": median([r["p50_us"] for r in results]),
               "p99_us": median([r["p99_us"] for r in results])}
        # Added latency: what the relay adds to the direct path, per run, then the median.
        added50, added99 = [], []
        for r in results:
            direct = [d for d in lat_by_impl.get("direct", []) if d["run"] == r["run"]]
            if direct:
                added50.append(r["p50_us"] - direct[0]["p50_us"])
                added99.append(r["p99_us"] - direct[0]["p99_us"])
        row["added_p50_us"] = median(added50)
        row["added_p99_us"] = median(added99)
        reference = reference_of.get(impl)
        if reference:
            deltas = []
            for r in results:
                refs = [x for x in lat_by_impl.get(reference, []) if x["run"] == r["run"]]
                if refs:
                    deltas.append(r["p50_us"] - refs[0]["p50_us"])
            row["reference"] = reference
            row["p50_minus_reference_us"] = median(deltas)
        lat_rows.append(row)
    return rows, lat_rows


def flatness(rows, impl, payload):
    """Copies/s at N = 256 relative to N = 8 (the issue asks for within 15%)."""
    values = {r["members"]: r["copies_per_s"] for r in rows if r["impl"] == impl and r["payload"] == payload}
    if 8 in values and 256 in values and values[8]:
        return values[256] / values[8]
    return None


def write_plot(path, rows, lat_rows, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    payloads = sorted({r["payload"] for r in rows})
    fig, axes = plt.subplots(1, len(payloads) + 1, figsize=(6 * (len(payloads) + 1), 5), squeeze=False)
    axes = axes[0]
    styles = {"relay-c": ("C reference", "tab:gray", "s"), "relay-py": ("our relay", "tab:blue", "o"),
              "socat": ("socat", "tab:red", "^")}
    for ax, payload in zip(axes, payloads):
        for impl, (label, color, marker) in styles.items():
            points = sorted((r["members"], r["copies_per_s"], r["copies_per_s_min"], r["copies_per_s_max"])
                            for r in rows if r["impl"] == impl and r["payload"] == payload)
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1] / 1000.0 for p in points]
            err = [[(p[1] - p[2]) / 1000.0 for p in points], [(p[3] - p[1]) / 1000.0 for p in points]]
            ax.errorbar(xs, ys, yerr=err, label=label, color=color, marker=marker, capsize=3)
        for impl, label, marker, color in (("client-c", "C re-delivery", "x", "tab:gray"),
                                           ("client-py", "our re-delivery", "P", "tab:blue"),
                                           ("path-c", "C server + C client", "1", "tab:gray"),
                                           ("path-py", "our server + our client", "*", "tab:green")):
            points = [r for r in rows if r["impl"] == impl and r["payload"] == payload]
            if points:
                ax.scatter([r["members"] for r in points], [r["copies_per_s"] / 1000.0 for r in points],
                           marker=marker, s=80, color=color, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["members"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("members N")
        ax.set_ylabel("copies per second (thousands), < 1% loss")
        ax.set_title("payload %d bytes" % payload)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax = axes[-1]
    order = [cls.name for cls in LATENCY_ORDER]
    lat_rows = sorted(lat_rows, key=lambda r: order.index(r["impl"]))
    names = [r["impl"] for r in lat_rows]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [r["p50_us"] for r in lat_rows], width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [r["p99_us"] for r in lat_rows], width=0.4, label="p99")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("one-way latency, microseconds (log scale)")
    ax.set_title("latency at %d datagrams/s, N = 1, 100 bytes" % LATENCY_RATE)
    ax.grid(True, axis="y", alpha=0.3)
    if lat_rows:
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def environment(args):
    with open("/proc/cpuinfo") as handle:
        models = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    commit = run(["git", "-C", REPO, "rev-parse", "HEAD"], check=False).stdout.strip()
    dirty = bool(run(["git", "-C", REPO, "status", "--porcelain", "--", "files/"], check=False).stdout.strip())
    relay_version = run([args.relay_python, "--version"], check=False)
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": models[0] if models else "",
            "relay_python": (relay_version.stdout or relay_version.stderr).strip(),
            "git_commit": commit, "relay_files_modified": dirty,
            "socat": run(["socat", "-V"], check=False).stdout.splitlines()[1:2],
            "gcc": run(["gcc", "--version"], check=False).stdout.splitlines()[0]}


# --------------------------------------------------------------------------

IMPLEMENTATIONS = (RelayC, RelayPython, Socat, ClientC, ClientPython, PathC, PathPython, Direct)
LATENCY_ORDER = (Direct, RelayC, RelayPython, Socat, ClientC, ClientPython, PathC, PathPython)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N = 1 and 8, 100-byte payload, one run, short trials")
    parser.add_argument("--members", type=int, nargs="+", help="member counts (default 1 8 32 256)")
    parser.add_argument("--payloads", type=int, nargs="+", help="payload sizes in bytes (default 100 1400)")
    parser.add_argument("--runs", type=int, help="repetitions; each figure is the median (default 3)")
    parser.add_argument("--trial-seconds", type=float, help="length of one trial (default 1.0)")
    parser.add_argument("--path-members", type=int, nargs="+",
                        help="member counts for the whole path source -> server -> client -> receiver "
                             "(default 1)")
    parser.add_argument("--relay-python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                        else sys.executable, help="interpreter that runs our relay (default: %(default)s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory (default docs/performance)")
    parser.add_argument("--only", nargs="+", choices=[cls.name for cls in IMPLEMENTATIONS],
                        help="measure only these implementations (ratios need their reference too)")
    parser.add_argument("--profile-relay", action="store_true",
                        help="run our daemons under cProfile and write where their time goes next to the JSON; "
                             "the profiler slows them down, so the figures of such a run are not comparable")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the relays, load generator and sinks at this nice value (-20..19); on a "
                             "machine others are using, a negative value keeps their load from being measured")
    parser.add_argument("--name", help="output file stem (default: results, or smoke with --quick)")
    parser.add_argument("--latency-only", action="store_true",
                        help="measure only the latency (N = 1, 100 bytes; no rate searches): a quick "
                             "comparison of wake-up and per-datagram cost")
    parser.add_argument("--scrape-interval", type=float, metavar="SECONDS",
                        help="start our daemons with --metrics 127.0.0.1:%d (server) / :%d (client) and GET "
                             "their /metrics every SECONDS from inside their namespace during the measurement; "
                             "compare with a run without it, by the ratios of the same run's C references "
                             "(default: no endpoint)" % (METRICS_PORTS["multis_admin"], METRICS_PORTS["multic_admin"]))
    parser.add_argument("--scraper", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scraper:
        return args
    quick = args.quick
    args.members = args.members or ([1, 8] if quick else [1, 8, 32, 256])
    args.payloads = args.payloads or ([100] if quick else [100, 1400])
    args.runs = args.runs or (1 if quick else 3)
    args.trial_seconds = args.trial_seconds or (0.4 if quick else 1.0)
    args.path_members = args.path_members or [1]
    args.bisect_steps = 3 if quick else 4
    args.latency_seconds = 1.0 if quick else 3.0
    args.name = args.name or ("smoke" if quick else "results")
    for value in args.members + args.path_members:
        if not 1 <= value <= 1024:
            parser.error("member counts must be within 1..1024 (the relay's limit), got %d" % value)
    for value in args.payloads:
        if not 16 <= value <= 1444:
            parser.error("payloads must be within 16..1444 bytes (timestamp + frame header within one "
                         "1500-byte MTU), got %d" % value)
    if not -20 <= args.nice <= 19:
        parser.error("--nice must be within -20..19")
    if args.runs < 1 or args.trial_seconds <= 0:
        parser.error("--runs must be >= 1 and --trial-seconds > 0")
    if args.scrape_interval is not None and not 0.1 <= args.scrape_interval <= 3600:
        parser.error("--scrape-interval must be within 0.1..3600 seconds (Prometheus' usual is 15 to 60)")
    return args


class ScraperStop(Exception):
    """SIGTERM to the scraper: print the summary and exit."""


def scraper_main(url, interval):
    """GET ``url`` every ``interval`` seconds until SIGTERM, then print one JSON summary line."""
    import http.client
    import urllib.parse

    def stop(_signum, _frame):
        raise ScraperStop()

    signal.signal(signal.SIGTERM, stop)
    target = urllib.parse.urlsplit(url)
    timeout = min(interval, SCRAPE_TIMEOUT_CAP)
    summary = {"ok": 0, "failed": 0, "max_seconds": 0.0, "bytes_max": 0, "errors": []}
    next_scrape = time.monotonic()
    try:
        while True:
            started = time.monotonic()
            try:
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout)
                try:
                    connection.request("GET", target.path)
                    reply = connection.getresponse()
                    body = reply.read()
                finally:
                    connection.close()
                if reply.status != 200:
                    raise OSError("HTTP %d" % reply.status)
                summary["ok"] += 1
                summary["bytes_max"] = max(summary["bytes_max"], len(body))
                summary["max_seconds"] = max(summary["max_seconds"], time.monotonic() - started)
            except (OSError, http.client.HTTPException) as exc:
                summary["failed"] += 1
                if len(summary["errors"]) < 5:
                    summary["errors"].append("%s: %s" % (type(exc).__name__, exc))
            # A fixed schedule, as Prometheus keeps; a scrape that overran skips the missed slots.
            next_scrape += interval
            now = time.monotonic()
            if next_scrape < now:
                next_scrape = now + interval - (now - next_scrape) % interval
            time.sleep(next_scrape - now)
    except ScraperStop:
        pass
    print(json.dumps(summary), flush=True)
    return 0


def check_prerequisites():
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark creates network namespaces")
    missing = [tool for tool in ("ip", "bridge", "nft", "taskset", "gcc", "socat") if not shutil.which(tool)]
    if missing:
        raise BenchError("missing tools: %s (Debian packages iproute2, nftables, util-linux, gcc, socat)"
                         % ", ".join(missing))
    if os.cpu_count() < 2:
        raise BenchError("needs 2 CPUs: the relay is pinned to CPU 1, the load generator to CPU 0")
    # Checked now, not after twenty minutes of measuring.
    if importlib.util.find_spec("matplotlib") is None:
        raise BenchError("matplotlib is missing: run with the dev virtualenv (.venv/bin/python bench/run.py, "
                         "see requirements-dev.txt)")
    if not os.path.isdir(os.path.join(REPO, "files", "multicast_proxy")):
        raise BenchError("files/multicast_proxy not found under %s" % REPO)


def raise_on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.scraper:
        return scraper_main(args.scraper[0], float(args.scraper[1]))
    check_prerequisites()
    signal.signal(signal.SIGTERM, raise_on_signal)
    os.makedirs(args.out, exist_ok=True)
    with open(LOCK_PATH, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError("another bench/run.py is running (lock %s)" % LOCK_PATH) from None
        with tempfile.TemporaryDirectory(prefix="mcpb-") as workdir:
            return measure_all(args, workdir)


def measure_all(args, workdir):
    bench = Bench(args, workdir)
    bench.build()
    stale = Topology.remove_stale()
    if stale:
        bench.say("removed namespaces left by an interrupted run: %s" % ", ".join(stale))
    topology = Topology(1 if args.latency_only else max(args.members + args.path_members))
    bench.topology = topology
    wanted = set(args.only or [cls.name for cls in IMPLEMENTATIONS])
    started = time.monotonic()
    throughput, latency = [], []
    try:
        bench.say("building %d member namespaces" % topology.members)
        topology.create()
        bench.verify_topology()
        relay_impls = [RelayC(bench), RelayPython(bench)]
        for run_index in range(args.runs):
            for payload in [] if args.latency_only else args.payloads:
                for members in args.members:
                    for impl in relay_impls + ([Socat(bench)] if members == 1 else []):
                        if impl.name in wanted:
                            throughput.append(bench.measure(impl, members, payload, run_index))
                for impl in (ClientC(bench), ClientPython(bench)):
                    if impl.name in wanted:
                        throughput.append(bench.measure(impl, 1, payload, run_index))
                for members in args.path_members:
                    for impl in (PathC(bench), PathPython(bench)):
                        if impl.name in wanted:
                            throughput.append(bench.measure(impl, members, payload, run_index))
            for impl_class in LATENCY_ORDER:
                if impl_class.name in wanted:
                    latency.append(bench.measure_latency(impl_class(bench), run_index))
    except BenchError as exc:
        # Twenty minutes of figures are not thrown away because the last search failed.
        if throughput or latency:
            partial = os.path.join(args.out, args.name + "-partial.json")
            with open(partial, "w") as handle:
                json.dump({"error": str(exc), "environment": environment(args),
                           "raw": {"throughput": throughput, "latency": latency}}, handle, indent=2, sort_keys=True)
                handle.write("\n")
            raise BenchError("%s\n(what was measured before is in %s)" % (exc, partial)) from None
        raise
    finally:
        bench.processes.stop_all()
        topology.destroy()
    rows, lat_rows = aggregate(throughput, latency)
    flat = {"relay-%s payload %d" % (impl.split("-")[1], payload): flatness(rows, impl, payload)
            for impl in ("relay-py", "relay-c") for payload in args.payloads}
    report = {"environment": environment(args),
              "options": {"members": args.members, "payloads": args.payloads, "runs": args.runs,
                          "trial_seconds": args.trial_seconds, "path_members": args.path_members,
                          "loss_limit": LOSS_LIMIT, "latency_rate": LATENCY_RATE,
                          "latency_seconds": args.latency_seconds, "quick": args.quick, "nice": args.nice,
                          "profile_relay": args.profile_relay, "latency_only": args.latency_only,
                          "scrape_interval": args.scrape_interval},
              "duration_seconds": round(time.monotonic() - started, 1),
              "generator_multicast_pps": bench.generator_multicast_pps,
              "throughput": rows, "latency": lat_rows, "flatness_256_over_8": flat,
              "raw": {"throughput": throughput, "latency": latency}}
    json_path = os.path.join(args.out, args.name + ".json")
    png_path = os.path.join(args.out, args.name + ".png")
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")
    title = "multicast relay benchmark%s%s, %s, %s" % (
        " (smoke run)" if args.quick else "",
        " (relay under cProfile)" if args.profile_relay else "",
        report["environment"]["date"][:10],
        report["environment"]["cpu_model"][:40])
    write_plot(png_path, rows, lat_rows, title)
    print_table(rows, lat_rows)
    bench.say("wrote %s and %s in %.0f s" % (json_path, png_path, report["duration_seconds"]))
    return 0


def print_table(rows, lat_rows):
    print()
    print("%-10s %4s %7s %13s %9s %9s %10s %9s" % ("impl", "N", "payload", "copies/s", "vs ref", "CPU %",
                                                   "us/copy", "RSS KiB"))
    for r in rows:
        ratio = r.get("ratio_to_reference")
        print("%-10s %4d %7d %12.0f%1s %9s %9.0f %10s %9s" % (
            r["impl"], r["members"], r["payload"], r["copies_per_s"], "*" if r["sender_limited_runs"] else "",
            "%.2f" % ratio if ratio is not None else "-", r["cpu_percent"],
            "%.2f" % r["cpu_us_per_copy"] if r["cpu_us_per_copy"] is not None else "-",
            "%d" % r["rss_kib"] if r["rss_kib"] is not None else "-"))
    if any(r["sender_limited_runs"] for r in rows):
        print("* the load generator could not offer more in at least one run: a lower bound")
    print()
    print("%-10s %9s %9s %11s %11s %12s" % ("latency", "p50 us", "p99 us", "added p50", "added p99", "p50 - ref"))
    for r in lat_rows:
        def fmt(value):
            return "%.1f" % value if value is not None else "-"
        print("%-10s %9s %9s %11s %11s %12s" % (r["impl"], fmt(r["p50_us"]), fmt(r["p99_us"]),
                                                fmt(r["added_p50_us"]), fmt(r["added_p99_us"]),
                                                fmt(r.get("p50_minus_reference_us"))))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        sys.stderr.write("bench: %s\n" % exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("bench: interrupted; namespaces and processes were removed\n")
        sys.exit(130)
