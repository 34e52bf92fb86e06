"""Real applications from Debian across a VPC that drops multicast (issue 15).

For each application: one test shows it fail across the VPC without the
relay, one shows it work through the relay deployed from its inventory
snippet in docs/interop.md (rendered by the collection's membership filter,
as site.yml would), and, where the application needs a relay option, one
shows it fail with the relay deployed without that option.  Every test
asserts on the application's own output and records its figures; with
MCPT_INTEROP_FIGURES=FILE they are written to FILE as JSON at the end
(scripts/interop-figures.py does that for docs/interop.json).

Applications: iperf 2 (network test), udpcast (file distribution),
GStreamer RTP (media streaming), avahi-daemon (mDNS service discovery),
corosync with transport udp (cluster membership).  keepalived is in
test_vrrp.py.  An application that is not installed is skipped, naming its
Debian package (scripts/bootstrap.sh installs them all).
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import vpc as vpc_module
from vpc import REPO

NAME_PREFIX = "iop"
SERVER_SOURCE_PORT = 868   # the collection's default multicast_proxy_source_port
FIGURES = {}


def _collection_path():
    """A directory in which this checkout is the collection multicast.proxy (for its filter)."""
    root = Path(tempfile.mkdtemp(prefix=NAME_PREFIX + "-collection-"))
    (root / "ansible_collections" / "multicast").mkdir(parents=True)
    (root / "ansible_collections" / "multicast" / "proxy").symlink_to(REPO)
    atexit.register(shutil.rmtree, str(root), True)
    return root


_COLLECTION_ROOT = _collection_path()
sys.path.insert(0, str(_COLLECTION_ROOT))
from ansible_collections.multicast.proxy.plugins.filter import membership  # noqa: E402
from ansible_collections.multicast.proxy.tests.unit.plugins.filter import interop_inventory  # noqa: E402

SNIPPETS = interop_inventory.snippets()


def needs(packages, *commands):
    """Skip, naming the Debian packages, when one of the commands is missing."""
    missing = [command for command in commands if shutil.which(command) is None]
    return pytest.mark.skipif(bool(missing), reason="needs %s from Debian's %s (scripts/bootstrap.sh installs them)"
                              % (", ".join(missing), packages))


@pytest.fixture(scope="module", autouse=True)
def interop_figures():
    vpc_module.sweep_leftovers(NAME_PREFIX)
    yield FIGURES
    vpc_module.sweep_leftovers(NAME_PREFIX)
    target = os.environ.get("MCPT_INTEROP_FIGURES")
    if target and FIGURES:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def vpc(make_vpc):
    return make_vpc({"a": 1, "b": 1}, name_prefix=NAME_PREFIX)


def record(app, package, case, **figures):
    entry = FIGURES.setdefault(app, {"package": package, "version": package_version(package)})
    entry[case] = figures


def package_version(package):
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, universal_newlines=True, check=False)
    return result.stdout.strip() or None


def wait_until(condition, what, timeout=20.0, interval=0.05):
    """Poll `condition` and return its first true value; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting for " + what)
        time.sleep(interval)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).exists() else None


# -- the relay, deployed from a docs/interop.md snippet ---------------------------------------------

def deploy_relay(vpc, snippet, members, without=None):
    """Render the relay configs of every host from the snippet with the membership filter, as
    site.yml does (clients first), and start the daemons.  `members` maps the snippet's inventory
    groups to VPC host names; `without` removes an option from every definition."""
    definitions = [dict(definition) for definition in SNIPPETS[snippet]]
    if without is not None:
        for definition in definitions:
            definition.pop(without, None)
    assert sorted(members) == interop_inventory.inventory_groups(definitions)
    definitions, hostvars, groups = interop_inventory.fleet(
        definitions, dict((group, [(name, vpc[name].ip) for name in names]) for group, names in members.items()))
    assert membership.fleet_problems(definitions, hostvars, groups) == []
    roles = dict((host, membership.relay_roles(definitions, host, groups)) for host in groups["all"])
    for side in ("client", "server"):
        for host in groups["all"]:
            if side not in roles[host]:
                continue
            if side == "client":
                config = membership.client_config(definitions, host, hostvars, groups)
                name = "client_cfg.json.txt"
            else:
                config = membership.server_config(definitions, host, hostvars, groups,
                                                  settings={"source_port": SERVER_SOURCE_PORT})
                name = "server_cfg.json.txt"
            (vpc[host].conf_dir / name).write_text(membership.relay_config_json(config))
            vpc[host].start_relay(side)


def server_groups(host):
    return host.control("server", {"cmd": "stats"})["groups"]


def client_stats(host):
    return host.control("client", {"cmd": "stats"})


def relayed_packets(vpc):
    """Datagrams the relay servers of the VPC picked up from their applications."""
    return sum(group["rx_packets"] for host in vpc.hosts.values() if "server" in host.relays
               for group in server_groups(host))


# -- iperf 2 ----------------------------------------------------------------------------------------

IPERF_GROUP, IPERF_PORT = "239.77.15.1", 5001
IPERF_SUMMARY = re.compile(r"0\.0+-\s*[\d.]+ sec\s+.*?(\d+)/\s*(\d+)\s+\(")


def run_iperf(vpc):
    sender, receiver = vpc["a"], vpc["b"]
    # Line-buffered, so the report can be read while iperf runs.
    server = receiver.start("iperf-s", ["stdbuf", "-oL", "iperf", "-s", "-u", "-B", IPERF_GROUP,
                                        "-p", IPERF_PORT, "-i", "1"])
    receiver.wait_joined(IPERF_GROUP)
    started = time.monotonic()
    client = sender.start("iperf-c", ["stdbuf", "-oL", "iperf", "-c", IPERF_GROUP, "-u", "-T", "1",
                                      "-p", IPERF_PORT, "-t", "2", "-b", "1M"])
    first = None
    while client.running() or first is None and time.monotonic() - started < 4:
        if first is None and "connected with" in server.stdout():
            first = time.monotonic() - started
        time.sleep(0.02)
    assert client.wait() == 0, client.describe()
    if first is not None:
        wait_until(lambda: len(IPERF_SUMMARY.findall(server.stdout())) >= 2, "iperf's summary", timeout=5)
    server.stop()
    sent = int(re.search(r"Sent (\d+) datagrams", client.stdout()).group(1))
    # The last 0.0-... line is the whole run's (the first may be the first interval's).
    summary = IPERF_SUMMARY.findall(server.stdout())
    lost, total = (int(summary[-1][0]), int(summary[-1][1])) if summary else (0, 0)
    return {"datagrams_sent": sent, "datagrams_received": total - lost, "datagrams_lost": lost,
            "first_datagram_s": round(first, 3) if first is not None else None}, server


@needs("iperf, coreutils", "iperf", "stdbuf")
def test_iperf_without_relay_receives_nothing(vpc):
    drops = vpc.multicast_drops()
    figures, server = run_iperf(vpc)
    assert figures["datagrams_received"] == 0 and "connected with" not in server.stdout(), server.describe()
    assert vpc.multicast_drops() - drops >= figures["datagrams_sent"] > 100
    record("iperf", "iperf", "without_relay", **figures)


@needs("iperf, coreutils", "iperf", "stdbuf")
def test_iperf_with_relay_receives_the_stream(vpc):
    deploy_relay(vpc, "iperf", {"iperf_clients": ["a"], "iperf_servers": ["b"]})
    figures, server = run_iperf(vpc)
    # iperf's own count (its last datagram, the end marker, is not counted); a datagram lost on
    # the way would be a relay bug on this idle machine.
    assert figures["datagrams_lost"] == 0, server.describe()
    assert figures["datagrams_received"] >= figures["datagrams_sent"] - 1 > 100, server.describe()
    record("iperf", "iperf", "with_relay", **figures)


# -- udpcast ----------------------------------------------------------------------------------------

UDPCAST_DATA, UDPCAST_RENDEZVOUS = "239.77.15.2", "239.77.15.3"
UDPCAST_FILE_SIZE = 1 << 20
UDPCAST_RECEIVERS = ("b", "c")
UDPCAST_MEMBERS = {"udpcast_senders": ["a"], "udpcast_receivers": list(UDPCAST_RECEIVERS)}


@pytest.fixture
def vpc3(make_vpc):
    return make_vpc({"a": 1, "b": 1, "c": 1}, name_prefix=NAME_PREFIX)


def run_udpcast(vpc, start_timeout, sender_name="a", receivers=UDPCAST_RECEIVERS):
    """udp-sender on a sends a random file to udp-receiver on b and c (two receivers: with one,
    udpcast would switch to unicast); every program gives up after `start_timeout` seconds
    without its peers."""
    sender = vpc[sender_name]
    original = sender.workdir / ("image-from-%s.bin" % sender_name)
    original.write_bytes(os.urandom(UDPCAST_FILE_SIZE))
    copies = [vpc[name].workdir / original.name for name in receivers]
    common = ["--interface", "eth0", "--nokbd", "--mcast-rdv-address", UDPCAST_RENDEZVOUS,
              "--start-timeout", start_timeout]
    started = time.monotonic()
    receiving = dict((name, vpc[name].start("udp-receiver", ["udp-receiver", "--file", copy] + common))
                     for name, copy in zip(receivers, copies))
    sending = sender.start("udp-sender", ["udp-sender", "--file", original, "--mcast-data-address", UDPCAST_DATA,
                                          "--min-receivers", len(receivers), "--rexmit-hello-interval", 500]
                           + common)
    for process in receiving.values():
        process.wait(timeout=start_timeout + 30)
    elapsed = time.monotonic() - started
    sending.wait(timeout=10)
    figures = {"file_size": UDPCAST_FILE_SIZE, "receivers": len(receivers)}
    figures["bytes_received"] = sum(copy.stat().st_size for copy in copies if copy.exists())
    figures["copies_intact"] = sum(sha256(copy) == sha256(original) for copy in copies)
    complete = all("Transfer complete" in process.stderr() + process.stdout() for process in receiving.values())
    figures["transfer_s"] = round(elapsed, 3) if complete else None
    return figures, [sending] + list(receiving.values())


def udpcast_log(processes):
    return "\n".join(process.describe() for process in processes)


@needs("udpcast", "udp-sender", "udp-receiver")
def test_udpcast_without_relay_finds_no_sender(vpc3):
    drops = vpc3.multicast_drops()
    figures, processes = run_udpcast(vpc3, start_timeout=3)
    log = udpcast_log(processes)
    assert figures["bytes_received"] == 0 and figures["copies_intact"] == 0, log
    assert "New connection" not in log and "Transfer complete" not in log, log
    assert vpc3.multicast_drops() > drops
    record("udpcast", "udpcast", "without_relay", **figures)


@needs("udpcast", "udp-sender", "udp-receiver")
def test_udpcast_with_relay_delivers_the_file(vpc3):
    deploy_relay(vpc3, "udpcast", UDPCAST_MEMBERS)
    figures, processes = run_udpcast(vpc3, start_timeout=10)
    log = udpcast_log(processes)
    assert figures["copies_intact"] == len(UDPCAST_RECEIVERS), log
    for name in UDPCAST_RECEIVERS:
        assert "New connection from %s" % vpc3[name].ip in log, log
    # The file went as multicast, through the relay: the data group's datagrams carried it.
    data = [group for group in server_groups(vpc3["a"]) if group["group_ip"] == UDPCAST_DATA]
    assert data[0]["rx_bytes"] >= UDPCAST_FILE_SIZE, data
    record("udpcast", "udpcast", "with_relay", relay_datagrams=relayed_packets(vpc3), **figures)


@needs("udpcast", "udp-sender", "udp-receiver")
def test_udpcast_needs_preserve_source(vpc3):
    deploy_relay(vpc3, "udpcast", UDPCAST_MEMBERS, without="preserve_source")
    figures, processes = run_udpcast(vpc3, start_timeout=3)
    log = udpcast_log(processes)
    # The HELLO reached each receiver, from the relay client's address and port: refused.
    for name in UDPCAST_RECEIVERS:
        assert "Bad message from port %s." % vpc3[name].ip in log, log
    assert figures["bytes_received"] == 0 and "Transfer complete" not in log, log
    assert relayed_packets(vpc3) > 0
    record("udpcast", "udpcast", "relay_without_option", option="preserve_source", **figures)


@needs("udpcast", "udp-sender", "udp-receiver")
def test_udpcast_hosts_that_send_and_receive_with_capture_mode(vpc3):
    deploy_relay(vpc3, "udpcast-any-role", {"udpcast_hosts": ["a", "b", "c"]})
    runs = [("a", ("b", "c")), ("b", ("a", "c"))]
    figures = {}
    for sender, receivers in runs:
        result, processes = run_udpcast(vpc3, start_timeout=10, sender_name=sender, receivers=receivers)
        assert result["copies_intact"] == len(receivers), udpcast_log(processes)
        figures["%s_to_%s" % (sender, "_".join(receivers))] = result
    for host in vpc3.hosts.values():
        assert all(group["state"] == "joined" for group in server_groups(host)), server_groups(host)
    record("udpcast-any-role", "udpcast", "with_relay", relay_datagrams=relayed_packets(vpc3),
           **figures["a_to_b_c"])
    record("udpcast-any-role", "udpcast", "with_relay_reversed", **figures["b_to_a_c"])


# -- GStreamer: RTP audio ---------------------------------------------------------------------------

RTP_GROUP, RTP_PORT = "239.77.15.4", 5004
AUDIO_BUFFERS = 100   # of 1024 samples at 48 kHz: 2.1 s of audio, sent in real time
AUDIO_SOURCE = ["audiotestsrc", "num-buffers=%d" % AUDIO_BUFFERS, "!",
                "audio/x-raw,format=S16BE,rate=48000,channels=1"]
RTP_CAPS = "application/x-rtp,media=audio,clock-rate=48000,encoding-name=L16,channels=1"
RTP_MEMBERS = {"media_sources": ["a"], "media_players": ["b"]}


def reference_audio(directory):
    """The sender's audio, written locally by the same source: what a player must decode."""
    path = directory / "reference.raw"
    subprocess.run(["gst-launch-1.0", "-q"] + AUDIO_SOURCE + ["!", "filesink", "location=%s" % path],
                   check=True, timeout=30)
    return path


def run_gstreamer(vpc, loop=True):
    sender, player = vpc["a"], vpc["b"]
    expected = reference_audio(sender.workdir)
    decoded = player.workdir / "decoded.raw"
    receiving = player.start("gst-play", ["gst-launch-1.0", "-q", "udpsrc", "address=" + RTP_GROUP,
                                          "port=%d" % RTP_PORT, "caps=" + RTP_CAPS, "!", "rtpL16depay", "!",
                                          "filesink", "location=%s" % decoded, "buffer-mode=unbuffered"])
    player.wait_joined(RTP_GROUP)
    started = time.monotonic()
    sending = sender.start("gst-send", ["gst-launch-1.0", "-q"] + AUDIO_SOURCE + [
        "!", "rtpL16pay", "!", "udpsink", "host=" + RTP_GROUP, "port=%d" % RTP_PORT,
        "loop=%s" % ("true" if loop else "false")])
    first = None
    while sending.running():
        if first is None and decoded.exists() and decoded.stat().st_size:
            first = time.monotonic() - started
        time.sleep(0.02)
    assert sending.wait() == 0, sending.describe()
    size = expected.stat().st_size
    try:
        wait_until(lambda: decoded.exists() and decoded.stat().st_size >= size, "the player's last buffer",
                   timeout=1.0)
    except AssertionError:
        pass  # the figures say how much arrived
    receiving.stop()
    return {"audio_bytes_decoded": decoded.stat().st_size if decoded.exists() else 0, "audio_bytes_sent": size,
            "checksum_match": sha256(decoded) == sha256(expected),
            "first_audio_s": round(first, 3) if first is not None else None}


@needs("gstreamer1.0-tools, gstreamer1.0-plugins-good", "gst-launch-1.0")
def test_gstreamer_without_relay_plays_nothing(vpc):
    drops = vpc.multicast_drops()
    figures = run_gstreamer(vpc)
    assert figures["audio_bytes_decoded"] == 0, figures
    assert vpc.multicast_drops() - drops >= 2 * AUDIO_BUFFERS
    record("gstreamer", "gstreamer1.0-tools", "without_relay", **figures)


@needs("gstreamer1.0-tools, gstreamer1.0-plugins-good", "gst-launch-1.0")
def test_gstreamer_with_relay_plays_the_stream(vpc):
    deploy_relay(vpc, "gstreamer", RTP_MEMBERS)
    figures = run_gstreamer(vpc)
    assert figures["checksum_match"], figures
    record("gstreamer", "gstreamer1.0-tools", "with_relay", relay_datagrams=relayed_packets(vpc), **figures)


@needs("gstreamer1.0-tools, gstreamer1.0-plugins-good", "gst-launch-1.0")
def test_gstreamer_loop_off_needs_capture_mode(vpc):
    deploy_relay(vpc, "gstreamer-loop-off", RTP_MEMBERS, without="capture")
    figures = run_gstreamer(vpc, loop=False)
    assert figures["audio_bytes_decoded"] == 0 and relayed_packets(vpc) == 0, figures
    record("gstreamer-loop-off", "gstreamer1.0-tools", "relay_without_option", option="capture", **figures)


@needs("gstreamer1.0-tools, gstreamer1.0-plugins-good", "gst-launch-1.0")
def test_gstreamer_loop_off_with_capture_plays_the_stream(vpc):
    deploy_relay(vpc, "gstreamer-loop-off", RTP_MEMBERS)
    figures = run_gstreamer(vpc, loop=False)
    assert figures["checksum_match"], figures
    (group,) = server_groups(vpc["a"])
    assert group["mode"] == "capture", group
    record("gstreamer-loop-off", "gstreamer1.0-tools", "with_relay", relay_datagrams=group["rx_packets"], **figures)


# -- avahi-daemon: mDNS service discovery -----------------------------------------------------------

AVAHI_CONF = """\
[server]
host-name=%(name)s
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
"""

AVAHI_SERVICE = """\
<?xml version="1.0" standalone='no'?>
<!DOCTYPE service-group SYSTEM "avahi-service.dtd">
<service-group>
  <name>iop-fileserver</name>
  <service>
    <type>_iop._tcp</type>
    <port>4711</port>
    <txt-record>path=/data</txt-record>
  </service>
</service-group>
"""

# A host of its own for the daemon: private /run (pid file, D-Bus socket), its own system bus,
# its services directory over the package's; avahi-daemon replaces the shell, so the
# process's pid is the daemon's.
AVAHI_LAUNCH = """\
set -e
mount -t tmpfs tmpfs /run
mount --bind "$1/services" /etc/avahi/services
mkdir -p /run/dbus
dbus-daemon --system --nofork --nopidfile &
while [ ! -S /run/dbus/system_bus_socket ]; do sleep 0.05; done
exec avahi-daemon -f "$1/avahi.conf" --no-rlimits
"""

AVAHI_MEMBERS = {"mdns_hosts": ["a", "b"]}
RESOLVED = re.compile(r"^=;eth0;IPv4;iop-fileserver;_iop\._tcp;local;([^;]+);([^;]+);(\d+);(.*)$", re.M)


def start_avahi(host, publish):
    directory = host.workdir / "avahi"
    (directory / "services").mkdir(parents=True)
    (directory / "avahi.conf").write_text(AVAHI_CONF % {"name": "iop-" + host.name})
    if publish:
        (directory / "services" / "iop.service").write_text(AVAHI_SERVICE)
    (directory / "launch.sh").write_text(AVAHI_LAUNCH)
    daemon = host.start("avahi-daemon", ["unshare", "-m", "--propagation", "private", "sh",
                                         directory / "launch.sh", directory])
    wait_until(lambda: "Server startup complete" in daemon.stderr() or not daemon.running(),
               "avahi-daemon to start")
    assert daemon.running(), daemon.describe()
    if publish:
        wait_until(lambda: "successfully established" in daemon.stderr(), "the service to be established")
    return daemon


def avahi_browse(daemon, *flags):
    """avahi-browse in the daemon's namespaces (its D-Bus); the lines it printed."""
    result = vpc_module.run(["nsenter", "-t", daemon.pid, "-m", "-n", "avahi-browse", "-p", "-r"] + list(flags)
                            + ["_iop._tcp"], check=False, timeout=30)
    return result.stdout


def look_up_service(vpc, attempts):
    """Start both daemons (a publishes), then browse on b up to `attempts` times (avahi-browse -t
    ends once its cache has answered, about one second)."""
    publisher = start_avahi(vpc["a"], publish=True)
    browser = start_avahi(vpc["b"], publish=False)
    # The service exists: a resolves it itself.
    assert RESOLVED.search(avahi_browse(publisher, "-t")), publisher.describe()
    started = time.monotonic()
    for _attempt in range(attempts):
        found = RESOLVED.search(avahi_browse(browser, "-t"))
        if found:
            break
    elapsed = time.monotonic() - started
    figures = {"resolved": None, "resolve_s": None, "attempts": attempts}
    if found:
        figures.update(resolved="%s:%s" % (found.group(2), found.group(3)), resolve_s=round(elapsed, 3),
                       attempts=_attempt + 1, txt=found.group(4))
    return figures, browser


@needs("avahi-daemon, avahi-utils, dbus, util-linux", "avahi-daemon", "avahi-browse", "dbus-daemon", "nsenter",
       "unshare")
def test_avahi_without_relay_resolves_nothing(vpc):
    drops = vpc.multicast_drops()
    figures, browser = look_up_service(vpc, attempts=3)
    assert figures["resolved"] is None, figures
    assert vpc.multicast_drops() > drops
    record("avahi", "avahi-daemon", "without_relay", **figures)


@needs("avahi-daemon, avahi-utils, dbus, util-linux", "avahi-daemon", "avahi-browse", "dbus-daemon", "nsenter",
       "unshare")
def test_avahi_with_relay_resolves_the_service(vpc):
    deploy_relay(vpc, "avahi", AVAHI_MEMBERS)
    figures, browser = look_up_service(vpc, attempts=10)
    assert figures["resolved"] == "%s:4711" % vpc["a"].ip, (figures, browser.describe())
    assert figures["txt"] == '"path=/data"', figures
    record("avahi", "avahi-daemon", "with_relay", **figures)


@needs("avahi-daemon, avahi-utils, dbus, util-linux", "avahi-daemon", "avahi-browse", "dbus-daemon", "nsenter",
       "unshare")
def test_avahi_needs_preserve_source(vpc):
    deploy_relay(vpc, "avahi", AVAHI_MEMBERS, without="preserve_source")
    figures, browser = look_up_service(vpc, attempts=3)
    assert figures["resolved"] is None, figures
    # b's queries reached a through the relay; a ignored them.
    (entry,) = client_stats(vpc["a"])["entries"]
    assert entry["delivered_packets"] > 0, entry
    record("avahi", "avahi-daemon", "relay_without_option", option="preserve_source", **figures)


# -- corosync (transport udp): cluster membership ---------------------------------------------------

COROSYNC_CONF = """\
totem {
    version: 2
    cluster_name: iop
    transport: udp
    crypto_cipher: none
    crypto_hash: none
    interface {
        linknumber: 0
        bindnetaddr: 10.77.0.0
        mcastaddr: 239.77.15.5
        mcastport: 5405
        ttl: 1
    }
}
nodelist {
%(nodes)s
}
quorum {
    provider: corosync_votequorum
    expected_votes: 2
}
logging {
    to_stderr: yes
    to_syslog: no
    to_logfile: no
    timestamp: on
}
"""
COROSYNC_NODE = "    node {\n        ring0_addr: %s\n        name: %s\n        nodeid: %d\n    }"

# Private /run, state directory and /dev/shm (its IPC): nothing shared with another corosync.
# Corosync looks the nodes' addresses up by name: a hosts file of its own answers, so no DNS
# query is sent (the machine's resolver is not reachable from the VPC; each lookup would wait
# 5 s for it).
COROSYNC_LAUNCH = """\
set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/lib/corosync
mount -t tmpfs tmpfs /dev/shm
mount --bind "$2" /etc/hosts
exec corosync -f -c "$1"
"""

COROSYNC_MEMBERS = {"cluster_nodes": ["a", "b"]}
# Longer than totem's token (1 s) and consensus (1.2 s) timeouts: a node that has heard
# nothing from the other one by then has formed a membership of its own.
COROSYNC_SETTLE_S = 4.0


def start_corosync(vpc):
    nodes = "\n".join(COROSYNC_NODE % (host.ip, "iop-" + host.name, number)
                      for number, host in enumerate((vpc["a"], vpc["b"]), start=1))
    hosts_file = "127.0.0.1 localhost\n" + "".join("%s iop-%s\n" % (vpc[name].ip, name) for name in ("a", "b"))
    daemons = {}
    for host in (vpc["a"], vpc["b"]):
        conf = host.workdir / "corosync.conf"
        conf.write_text(COROSYNC_CONF % {"nodes": nodes})
        (host.workdir / "hosts").write_text(hosts_file)
        (host.workdir / "corosync-launch.sh").write_text(COROSYNC_LAUNCH)
        daemons[host.name] = host.start("corosync", ["unshare", "-m", "--propagation", "private", "sh",
                                                     host.workdir / "corosync-launch.sh", conf,
                                                     host.workdir / "hosts"])
    return daemons


def quorum_status(daemon):
    """corosync-quorumtool's view on one node: (member node ids, quorate)."""
    result = vpc_module.run(["nsenter", "-t", daemon.pid, "-m", "-n", "corosync-quorumtool", "-s"],
                            check=False, timeout=10)
    members = [int(number) for number in re.findall(r"^\s+(\d+)\s+\d+\s+\S+", result.stdout, re.M)]
    quorate = re.search(r"^Quorate:\s+(\w+)", result.stdout, re.M)
    return sorted(members), bool(quorate) and quorate.group(1) == "Yes"


def run_corosync(vpc, expect_members):
    started = time.monotonic()
    daemons = start_corosync(vpc)
    for daemon in daemons.values():
        wait_until(lambda: "A new membership" in daemon.stderr() or not daemon.running(),
                   "corosync to form a membership", timeout=30)
        assert daemon.running(), daemon.describe()
    figures = {}
    if expect_members == 2:
        wait_until(lambda: all(quorum_status(daemon) == ([1, 2], True) for daemon in daemons.values()),
                   "both nodes in one quorate membership", timeout=30, interval=0.2)
        figures["quorate_s"] = round(time.monotonic() - started, 3)
    else:
        time.sleep(COROSYNC_SETTLE_S)
    for name, daemon in sorted(daemons.items()):
        members, quorate = quorum_status(daemon)
        figures["members_seen_by_" + name] = len(members)
        figures["quorate_" + name] = quorate
    return figures, daemons


@needs("corosync, util-linux", "corosync", "corosync-quorumtool", "nsenter", "unshare")
def test_corosync_without_relay_splits_into_single_nodes(vpc):
    drops = vpc.multicast_drops()
    figures, daemons = run_corosync(vpc, expect_members=1)
    assert figures == {"members_seen_by_a": 1, "members_seen_by_b": 1, "quorate_a": False, "quorate_b": False}, \
        figures
    assert vpc.multicast_drops() > drops
    record("corosync", "corosync", "without_relay", **figures)


@needs("corosync, util-linux", "corosync", "corosync-quorumtool", "nsenter", "unshare")
def test_corosync_with_relay_forms_one_quorate_cluster(vpc):
    deploy_relay(vpc, "corosync", COROSYNC_MEMBERS)
    figures, daemons = run_corosync(vpc, expect_members=2)
    assert figures["quorate_a"] and figures["quorate_b"], figures
    for host in (vpc["a"], vpc["b"]):
        (group,) = server_groups(host)
        assert group["mode"] == "capture" and group["rx_packets"] > 0, group
    record("corosync", "corosync", "with_relay", relay_datagrams=relayed_packets(vpc), **figures)


@needs("corosync, util-linux", "corosync", "corosync-quorumtool", "nsenter", "unshare")
def test_corosync_needs_capture_mode(vpc):
    deploy_relay(vpc, "corosync", COROSYNC_MEMBERS, without="capture")
    figures, daemons = run_corosync(vpc, expect_members=1)
    assert figures["members_seen_by_a"] == figures["members_seen_by_b"] == 1, figures
    # Totem's socket has multicast loopback off: the relay servers' sockets never see a message.
    assert relayed_packets(vpc) == 0
    record("corosync", "corosync", "relay_without_option", option="capture", **figures)
