"""A VPC built from Linux network namespaces, for multi-host relay tests.

Layout (every piece lives in namespaces this module creates; nothing is
added to the root namespace, where docker's FORWARD DROP policy and
br_netfilter would interfere):

    namespace <prefix>br      bridge br0 (10.77.0.0/24, gateway .254) and,
                              when asked for, br1 (10.78.0.0/24, .254);
                              nftables table `bridge vpc` drops IPv4
                              multicast on forward, as a cloud VPC does
    namespace <prefix><host>  lo, eth0 on br0, optionally eth1 on br1;
                              default route via eth0

Every host sends a datagram to its gateway once after setup so the bridge learns its MAC
address (otherwise every unicast copy is flooded to every port).

Processes started in a host are tracked and killed at teardown; teardown
also kills anything still running inside the namespaces and deletes them,
whether the test passed or not.  `sweep_leftovers` removes namespaces left
by a run that died (its pid is gone).
"""

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RELAY_SOURCE = REPO / "files"
TOOLS = REPO / "tests" / "tools"
# The relay runs under this interpreter; set MCPT_RELAY_PYTHON to check another
# version (for example /root/.pyenv/versions/3.8.18/bin/python3).
RELAY_PYTHON = os.environ.get("MCPT_RELAY_PYTHON", sys.executable)

NAME_PREFIX = "mcvpc"
SUBNETS = (ipaddress.IPv4Network("10.77.0.0/24"), ipaddress.IPv4Network("10.78.0.0/24"))
GATEWAY_HOST_NUMBER = 254

NFT_RULESET = """
table bridge vpc {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ip daddr 224.0.0.0/4 counter drop
    }
}
"""

# One datagram from a host to its gateway: its ARP request and the datagram
# teach the bridge where the host's MAC address is.
TEACH_BRIDGE = (
    "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind((sys.argv[1], 0)); s.sendto(b'hello bridge', (sys.argv[2], 9))"
)

RELAY_COMMANDS = {"server": "multis_admin", "client": "multic_admin"}
CONTROL_SOCKETS = {"server": "multis.sock", "client": "multic.sock"}

COMMAND_TIMEOUT = 30
READY_TIMEOUT = 15


class CommandFailed(AssertionError):
    pass


def run(argv, check=True, timeout=COMMAND_TIMEOUT, env=None, input_text=None):
    """Run a command (no shell) and return the CompletedProcess with text output."""
    result = subprocess.run(
        [str(part) for part in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=timeout,
        env=env,
        input=input_text,
        check=False,
    )
    if check and result.returncode != 0:
        raise CommandFailed(
            "command failed (exit %d): %s\nstdout: %s\nstderr: %s"
            % (result.returncode, " ".join(map(str, argv)), result.stdout, result.stderr)
        )
    return result


def namespaces():
    result = run(["ip", "-json", "netns", "list"], check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    return [entry["name"] for entry in json.loads(result.stdout)]


def kill_namespace(name):
    """Kill every process left in namespace `name`, then delete it."""
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    run(["ip", "netns", "delete", name], check=False)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def left_behind(name, prefix=NAME_PREFIX):
    """True for a name of this harness whose test run is this one or no longer alive."""
    match = re.match(r"^%s(\d+)x" % re.escape(prefix), name)
    return bool(match) and (int(match.group(1)) == os.getpid() or not pid_alive(int(match.group(1))))


def sweep_leftovers(prefix=NAME_PREFIX):
    """Delete the namespaces and work directories that finished or crashed runs left."""
    for name in namespaces():
        if left_behind(name, prefix):
            kill_namespace(name)
    if os.environ.get("MCPT_KEEP_LOGS") is None:
        for path in Path(tempfile.gettempdir()).glob(prefix + "*"):
            if path.is_dir() and left_behind(path.name, prefix):
                shutil.rmtree(str(path), ignore_errors=True)


class Process:
    """A background process inside a namespace, its output kept in files."""

    def __init__(self, label, argv, popen, stdout_path, stderr_path):
        self.label = label
        self.argv = argv
        self.popen = popen
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def stdout(self):
        return self.stdout_path.read_text(errors="replace")

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def describe(self):
        return "%s (%s) exit=%s\nstdout:\n%s\nstderr:\n%s" % (
            self.label, " ".join(self.argv), self.popen.poll(), self.stdout()[-4000:], self.stderr()[-4000:]
        )

    def wait(self, timeout=COMMAND_TIMEOUT):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CommandFailed("%s did not finish within %ss:\n%s" % (self.label, timeout, self.describe()))

    def stop(self, grace=3.0):
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        if self.popen.poll() is not None:
            return self.popen.returncode
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return self.popen.wait(timeout=grace)

    def json_result(self, timeout=COMMAND_TIMEOUT):
        """Wait for a tool that prints one JSON line at exit and return it parsed."""
        self.wait(timeout)
        lines = [line for line in self.stdout().splitlines() if line.startswith("{")]
        if not lines:
            raise CommandFailed("%s printed no JSON:\n%s" % (self.label, self.describe()))
        return json.loads(lines[-1])


class Host:
    def __init__(self, vpc, name, number, interfaces):
        self.vpc = vpc
        self.name = name
        self.netns = vpc.prefix + name
        self.number = number
        # interface name -> address, e.g. {"eth0": "10.77.0.11"}
        self.addresses = {
            "eth%d" % index: str(SUBNETS[index].network_address + number) for index in range(interfaces)
        }
        self.workdir = Path(tempfile.mkdtemp(prefix=name + "-", dir=str(vpc.workdir)))
        self.conf_dir = self.workdir / "etc"
        self.conf_dir.mkdir()
        self.relays = {}  # "server" / "client" -> the running relay's Process

    @property
    def ip(self):
        return self.addresses["eth0"]

    def exec_argv(self, argv):
        return ["ip", "netns", "exec", self.netns] + [str(part) for part in argv]

    def run(self, argv, check=True, timeout=COMMAND_TIMEOUT, env=None, input_text=None):
        return run(self.exec_argv(argv), check=check, timeout=timeout, env=env, input_text=input_text)

    def start(self, label, argv, env=None):
        """Start a background process in this host; the VPC kills it at teardown."""
        full_argv = self.exec_argv(argv)
        index = len(self.vpc.processes)
        stdout_path = self.workdir / ("%02d-%s.out" % (index, label))
        stderr_path = self.workdir / ("%02d-%s.err" % (index, label))
        with open(str(stdout_path), "w") as stdout, open(str(stderr_path), "w") as stderr:
            popen = subprocess.Popen(
                full_argv, stdout=stdout, stderr=stderr, env=env, start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        process = Process("%s@%s" % (label, self.name), full_argv, popen, stdout_path, stderr_path)
        self.vpc.processes.append(process)
        return process

    # relay ------------------------------------------------------------

    def relay_env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(RELAY_SOURCE)
        env["MULTICAST_CONF_DIR"] = str(self.conf_dir)
        return env

    def relay_argv(self, command, *args):
        return [RELAY_PYTHON, "-m", "multicast_proxy", command] + [str(arg) for arg in args]

    def relay(self, command, *args, check=True, input_text=None):
        """Run a relay command (multis_admin, multic_admin, ...) in this host."""
        return self.run(self.relay_argv(command, *args), check=check, env=self.relay_env(), input_text=input_text)

    def start_relay(self, side, *flags):
        """Start `multis_admin -R` (side "server") or `multic_admin -R` (side "client"), with extra -R
        flags such as --metrics ADDRESS:PORT, and wait for it."""
        command = RELAY_COMMANDS[side]
        process = self.start(command, self.relay_argv(command, "-R", *flags), env=self.relay_env())
        self.wait_control_socket(self.conf_dir / CONTROL_SOCKETS[side], process)
        self.relays[side] = process
        return process

    def wait_control_socket(self, path, process):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not process.running():
                raise CommandFailed("relay exited during start-up:\n" + process.describe())
            if path.exists() and control_request(path, {"cmd": "ping"}).get("ok"):
                return
            time.sleep(0.05)
        raise CommandFailed("relay control socket %s did not answer ping:\n%s" % (path, process.describe()))

    def control(self, side, request):
        return control_request(self.conf_dir / CONTROL_SOCKETS[side], request)

    # probes -----------------------------------------------------------

    def start_receiver(self, label, group, port, expect=None, interface=None, idle_timeout=5.0, duration=None):
        """Start mcrecv.py joined to `group` and wait until it has joined."""
        # Unique per process: a label may be reused and a stale file would lie.
        ready = self.workdir / ("%02d-%s.ready" % (len(self.vpc.processes), label))
        argv = [sys.executable, TOOLS / "mcrecv.py", "--group", group, "--port", port, "--json",
                "--ready-file", ready, "--idle-timeout", idle_timeout]
        if expect is not None:
            argv += ["--expect", expect]
        if interface is not None:
            argv += ["--interface", interface]
        if duration is not None:
            argv += ["--duration", duration]
        process = self.start(label, argv)
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if not process.running() or time.monotonic() > deadline:
                raise CommandFailed("receiver did not join:\n" + process.describe())
            time.sleep(0.02)
        return process

    def wait_joined(self, group, timeout=READY_TIMEOUT):
        """Wait until some socket in this host joined `group` (for receivers that do not say so)."""
        # /proc/net/igmp lists groups as the hex of the address in host byte order.
        wanted = "%08X" % struct.unpack("=I", socket.inet_aton(group))[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            joined = self.run(["cat", "/proc/net/igmp"]).stdout.split()
            if wanted in joined:
                return
            time.sleep(0.05)
        raise CommandFailed("no socket in %s joined %s within %ss" % (self.name, group, timeout))

    def send(self, group, port, count, rate=5000, size=256, stream_id=1, interface_ip=None, background=False):
        """Send mcsend.py datagrams; return its JSON summary (or the Process when background)."""
        argv = [sys.executable, TOOLS / "mcsend.py", "--group", group, "--port", port, "--count", count,
                "--rate", rate, "--size", size, "--stream-id", stream_id]
        if interface_ip is not None:
            argv += ["--interface-ip", interface_ip]
        if background:
            return self.start("mcsend-%d" % stream_id, argv)
        result = self.run(argv, timeout=COMMAND_TIMEOUT + count / max(rate, 1))
        return json.loads(result.stdout.strip().splitlines()[-1])


def control_request(path, request, timeout=5.0):
    """One request/reply on a relay control socket (JSON lines, see docs/architecture.md)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall((json.dumps(request) + "\n").encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError as error:
        return {"ok": False, "error": "control socket: %s" % error}
    return json.loads(reply.decode()) if reply.strip() else {"ok": False, "error": "empty reply"}


class Vpc:
    """Build with `with Vpc({"src": 1, "m1": 1, ...}) as vpc:`; value = number of interfaces (1 or 2).
    `name_prefix` starts every namespace and work directory name (suites that run beside
    others use one of their own; `sweep_leftovers(name_prefix)` cleans up after them)."""

    _instances = 0

    def __init__(self, hosts, workdir=None, name_prefix=NAME_PREFIX):
        Vpc._instances += 1
        # The trailing dash keeps instance 1's names apart from instance 10's.
        self.prefix = "%s%dx%d-" % (name_prefix, os.getpid(), Vpc._instances)
        self.bridge_netns = self.prefix + "br"
        self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix, dir=workdir))
        self.processes = []
        self.host_spec = dict(hosts)
        self.bridges = max(self.host_spec.values())
        if not 1 <= self.bridges <= len(SUBNETS):
            raise ValueError("a host has 1 or %d interfaces" % len(SUBNETS))
        self.hosts = {}

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc_info):
        self.teardown()

    def __getitem__(self, name):
        return self.hosts[name]

    def gateway(self, index=0):
        return str(SUBNETS[index].network_address + GATEWAY_HOST_NUMBER)

    def _build(self):
        run(["ip", "netns", "add", self.bridge_netns])
        in_bridge = ["ip", "-n", self.bridge_netns]
        run(in_bridge + ["link", "set", "lo", "up"])
        for index in range(self.bridges):
            bridge = "br%d" % index
            run(in_bridge + ["link", "add", bridge, "type", "bridge"])
            run(in_bridge + ["addr", "add", "%s/%d" % (self.gateway(index), SUBNETS[index].prefixlen), "dev", bridge])
            run(in_bridge + ["link", "set", bridge, "up"])
        run(["ip", "netns", "exec", self.bridge_netns, "nft", "-f", "-"], input_text=NFT_RULESET)

        for number, (name, interfaces) in enumerate(self.host_spec.items(), start=10):
            host = Host(self, name, number, interfaces)
            self.hosts[name] = host
            run(["ip", "netns", "add", host.netns])
            run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
            for index, (device, address) in enumerate(host.addresses.items()):
                port = "p%d-%s" % (index, name)
                run(in_bridge + ["link", "add", port, "type", "veth", "peer", "name", device, "netns", host.netns])
                run(in_bridge + ["link", "set", port, "master", "br%d" % index])
                run(in_bridge + ["link", "set", port, "up"])
                run(["ip", "-n", host.netns, "addr", "add", "%s/%d" % (address, SUBNETS[index].prefixlen),
                     "dev", device])
                run(["ip", "-n", host.netns, "link", "set", device, "up"])
            run(["ip", "-n", host.netns, "route", "add", "default", "via", self.gateway(0), "dev", "eth0"])

        for host in self.hosts.values():
            for index, device in enumerate(host.addresses):
                host.run([sys.executable, "-c", TEACH_BRIDGE, host.addresses[device], self.gateway(index)])

    def multicast_drops(self):
        """Packets the VPC's multicast drop rule has dropped so far."""
        listing = run(["ip", "netns", "exec", self.bridge_netns, "nft", "-j", "list", "table", "bridge", "vpc"]).stdout
        for item in json.loads(listing)["nftables"]:
            rule = item.get("rule")
            if rule:
                for expression in rule["expr"]:
                    if "counter" in expression:
                        return expression["counter"]["packets"]
        raise AssertionError("drop rule with counter not found in:\n" + listing)

    def allow_multicast(self, allowed):
        """Remove (allowed=True) or restore the multicast drop; for a positive control only."""
        in_bridge = ["ip", "netns", "exec", self.bridge_netns, "nft"]
        if allowed:
            run(in_bridge + ["delete", "table", "bridge", "vpc"])
        else:
            run(in_bridge + ["-f", "-"], input_text=NFT_RULESET)

    def teardown(self):
        failures = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as error:  # keep tearing down the rest
                failures.append("%s: %s" % (process.label, error))
        for host in self.hosts.values():
            kill_namespace(host.netns)
        kill_namespace(self.bridge_netns)
        left = [name for name in namespaces() if name.startswith(self.prefix)]
        if left:
            failures.append("namespaces left behind: %s" % left)
        if os.environ.get("MCPT_KEEP_LOGS") is None:
            shutil.rmtree(str(self.workdir), ignore_errors=True)
        if failures:
            raise AssertionError("VPC teardown: " + "; ".join(failures))
