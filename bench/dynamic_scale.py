"""Dynamic members at scale (issue 17): 1024 members of one group, admitted and refreshing.

Two measurements:

1. **In process** (``ServerDaemon`` of files/, a group joined on ``lo``,
   no traffic): the daemon's own subscription reader
   (``_read_subscriptions``) fed from a stand-in socket with the JOINs of
   1024 distinct addresses, 64 messages per readiness event (its batch)
   and, for comparison, one per event (the worst case, what every join
   cost before the fan-out was rebuilt once per event); then the cost of
   one fan-out rebuild at 1024 members, of one refresh, and the memory the
   1024 members take (tracemalloc).  The same with the fleet key loaded.
2. **Real daemon** (``multis_admin -R``) in namespace dysb-srv, the 1024
   subscribers in dysb-mem, on 1024 addresses of one veth (10.99.0.1 up):
   the time from the first JOIN to the 1024th ACK, then 20 s of refreshes
   every lease / 3 (0.5 s) from all 1024: the server's CPU (utime + stime),
   the messages a second it got, its VmRSS; then the 1025th address, which
   must be refused (``full``).

Run as root from the repository root:

    .venv/bin/python bench/dynamic_scale.py        # writes docs/performance/dynamic-scale.json

The targets compared are those of the configuration scale in
docs/performance.md: start under 1 s, VmRSS under 64 MB, a one-member
change under 100 ms.  Namespaces are removed on exit.
"""

import argparse
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The relay measured: files/ of this tree, or DYSB_RELAY_SOURCE (another tree's files/, for a before/after).
RELAY_SOURCE = os.environ.get("DYSB_RELAY_SOURCE", os.path.join(REPO, "files"))
sys.path.insert(0, RELAY_SOURCE)
sys.path.insert(0, os.path.join(REPO, "bench"))

from multicast_proxy import auth, daemon, relay_config as config, server, subscription as sub  # noqa: E402
import run as bench_run  # noqa: E402  (bench/ on the path above): its /proc readers of a process

MEMBERS = 1024
GROUP = "239.99.0.1"
GROUP_PORT = 5990
SERVER_PORT = 6990
SRV_NS, MEM_NS = "dysb-srv", "dysb-mem"
SERVER_IP = "10.99.200.1"
REFRESH_SECONDS = 20.0
SECRET = bytes(range(32))
TARGETS = {"admit_s": 1.0, "rss_mib": 61.0, "change_ms": 100.0}


def member_ip(index):
    return "10.99.%d.%d" % (index // 250, 1 + index % 250)


class QueueSocket:
    """What ``_read_subscriptions`` reads: queued (bytes, source) datagrams; keeps what it sends."""

    def __init__(self, datagrams):
        self.queue = list(datagrams)
        self.sent = []

    def recvfrom_into(self, buffer, size):
        if not self.queue:
            raise BlockingIOError()
        data, source = self.queue.pop(0)
        buffer[:len(data)] = data
        return len(data), source

    def sendto(self, data, address):
        self.sent.append((bytes(data), address))


def in_process_daemon(tmp, keys=None):
    relay = server.ServerDaemon(tmp)
    relay.log = daemon.setup_logging("server", tmp)
    relay.drop_log = daemon.DropLog(relay.log)
    relay.cfg = config.validate_server_config({"multi_group_array": [
        {"group_ip": GROUP, "group_port": GROUP_PORT, "server_port": SERVER_PORT, "member_array": [],
         "interface": "lo", "allow": ["10.99.0.0/16"], "max_members": MEMBERS}]})
    relay.apply_config(relay.cfg)
    if keys is not None:
        relay.apply_auth(keys)
    # The CPU cost of the code, not the challenge rate limit (the real daemon below meets that one).
    relay.subscriptions.challenges = sub.TokenBuckets(1e9, 1e9, 1)
    return relay


def feed(relay, datagrams, per_event):
    """Hand the datagrams to the daemon's reader, ``per_event`` per readiness event; the replies."""
    replies = []
    for start in range(0, len(datagrams), per_event):
        sock = QueueSocket(datagrams[start:start + per_event])
        relay._read_subscriptions(SERVER_PORT, sock)
        replies.extend(sock.sent)
    return replies


def admit_all(relay, per_event, count=MEMBERS, signers=None):
    """Every address: a JOIN, the CHALLENGE, a JOIN with the cookie. Seconds, and the ACK cookies."""
    group_addr = sub.ip_value(GROUP)
    sources = [(member_ip(i), SERVER_PORT) for i in range(count)]
    signers = signers or {}
    first = [(sub.encode(sub.JOIN, group_addr, GROUP_PORT, signer=signers.get(s[0])), s) for s in sources]
    began = time.perf_counter()
    challenges = feed(relay, first, per_event)
    second = [(sub.encode(sub.JOIN, group_addr, GROUP_PORT, sub.parse(data, len(data)).cookie,
                          signer=signers.get(address[0])), address)
              for data, address in challenges]
    acks = feed(relay, second, per_event)
    seconds = time.perf_counter() - began
    cookies = dict((address, sub.parse(data, len(data)).cookie) for data, address in acks)
    return seconds, cookies


def in_process(keys=None):
    tmp = tempfile.mkdtemp(prefix="dysb-")
    result = {}
    signers = None
    if keys is not None:
        signer = auth.Signer(keys)
        signers = dict((member_ip(i), signer.bound(member_ip(i))) for i in range(MEMBERS))
    try:
        relay = in_process_daemon(tmp, keys)
        group = relay.groups[GROUP]
        result["admit_s_batched"], cookies = admit_all(relay, subscription_batch(), signers=signers)
        assert len(group.members) == MEMBERS, (len(group.members), relay.subscriptions.refusals)
        dynamic = relay.subscriptions.group(GROUP)
        # One member leaves, then comes back: two real changes of the fan-out at 1024 members.
        rebuilds = []
        for repeat in range(40):
            if repeat % 2 == 0:
                ip, lease = dynamic.members.popitem()
            else:
                dynamic.members[ip] = lease
            began = time.perf_counter()
            relay._membership_changed(dynamic)
            rebuilds.append(time.perf_counter() - began)
        assert len(group.members) == MEMBERS
        result["rebuild_ms_at_1024"] = round(statistics.median(rebuilds) * 1000, 3)
        result["rebuild_ms_at_1024_max"] = round(max(rebuilds) * 1000, 3)
        group_addr = sub.ip_value(GROUP)
        refreshes = [(sub.encode(sub.JOIN, group_addr, GROUP_PORT, cookies[address],
                                 signer=(signers or {}).get(address[0])), address) for address in sorted(cookies)]
        began = time.perf_counter()
        replies = feed(relay, refreshes, subscription_batch())
        result["refresh_us"] = round((time.perf_counter() - began) / len(refreshes) * 1e6, 1)
        assert len(replies) == MEMBERS and dynamic.events["refreshes"] == MEMBERS, dynamic.events
        result["refresh_cpu_share_at_2048_per_s"] = round(result["refresh_us"] * 2048 / 1e6, 4)
        began = time.perf_counter()
        for _repeat in range(20):
            relay.subscriptions.expire(time.monotonic(), time.time())
        result["lease_check_us_at_1024"] = round((time.perf_counter() - began) / 20 * 1e6, 1)
        relay.close_data_sockets()

        # One message per readiness event: the fan-out rebuilt after every join (what every join cost
        # before the rebuild moved to the end of the event).
        relay = in_process_daemon(tmp, keys)
        result["admit_s_one_per_event"], _cookies = admit_all(relay, 1, signers=signers)
        assert len(relay.groups[GROUP].members) == MEMBERS
        relay.close_data_sockets()

        # Memory: what the 1024 members add to the daemon (tracemalloc, so not timed).
        relay = in_process_daemon(tmp, keys)
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        admit_all(relay, subscription_batch(), signers=signers)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        result["memory_kib"] = round(sum(stat.size_diff for stat in after.compare_to(before, "filename")) / 1024.0, 1)
        relay.close_data_sockets()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def subscription_batch():
    from multicast_proxy import server_subscriptions
    return server_subscriptions.SUBSCRIPTION_BATCH


# -- the real daemon --------------------------------------------------------------------------------

def sh(*argv, **kwargs):
    return subprocess.run([str(a) for a in argv], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, **kwargs)


def teardown():
    for ns in (SRV_NS, MEM_NS):
        pids = subprocess.run(["ip", "netns", "pids", ns], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "delete", ns], stderr=subprocess.DEVNULL, check=False)


def build():
    teardown()
    sh("ip", "netns", "add", SRV_NS)
    sh("ip", "netns", "add", MEM_NS)
    sh("ip", "-n", SRV_NS, "link", "add", "dysb0", "type", "veth", "peer", "name", "dysb1", "netns", MEM_NS)
    lines = ["link set lo up", "link set dysb0 up", "addr add %s/16 dev dysb0" % SERVER_IP,
             "route add 224.0.0.0/4 dev dysb0"]
    mem_lines = ["link set lo up", "link set dysb1 up"]
    mac = None
    for index in range(MEMBERS + 1):
        mem_lines.append("addr add %s/16 dev dysb1" % member_ip(index))
    sh("ip", "-n", MEM_NS, "-batch", "-", input="\n".join(mem_lines) + "\n")
    mac = json.loads(sh("ip", "-n", MEM_NS, "-j", "link", "show", "dysb1").stdout)[0]["address"]
    # Permanent neighbour entries: 1025 addresses on one link would pass the ARP table's gc_thresh3.
    for index in range(MEMBERS + 1):
        lines.append("neigh replace %s lladdr %s dev dysb0 nud permanent" % (member_ip(index), mac))
    sh("ip", "-n", SRV_NS, "-batch", "-", input="\n".join(lines) + "\n")
    server_mac = json.loads(sh("ip", "-n", SRV_NS, "-j", "link", "show", "dysb0").stdout)[0]["address"]
    sh("ip", "-n", MEM_NS, "neigh", "replace", SERVER_IP, "lladdr", server_mac, "dev", "dysb1", "nud", "permanent")


def cpu_seconds(pid):
    return bench_run.cpu_ticks(pid) / float(os.sysconf("SC_CLK_TCK"))


def rss_mib(pid):
    return round(bench_run.rss_kib(pid) / 1024.0, 1)


def control(conf, request):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(os.path.join(conf, "multis.sock"))
        sock.sendall((json.dumps(request) + "\n").encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply.decode())


def driver(args):
    """In dysb-mem: subscribe 1024 addresses, refresh them, try the 1025th; JSON on stdout."""
    group_addr = sub.ip_value(GROUP)
    poller = select.epoll()
    socks = {}
    for index in range(MEMBERS + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((member_ip(index), SERVER_PORT))
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)
    members = list(socks.values())[:MEMBERS]
    extra = list(socks.values())[MEMBERS]
    server = (SERVER_IP, SERVER_PORT)
    cookies = {}
    acked = set()
    counts = {"challenge": 0, "ack": 0, "refused": 0}
    track = [None]      # while set: fd -> time of its first ACK

    def pump(timeout):
        for fd, _mask in poller.poll(timeout):
            sock = socks[fd]
            while True:
                try:
                    data = sock.recv(256)
                except BlockingIOError:
                    break
                if not sub.is_subscription(data):
                    continue
                message = sub.parse(data, len(data))
                if message.kind == sub.CHALLENGE:
                    counts["challenge"] += 1
                    cookies[fd] = message.cookie
                    sock.sendto(sub.encode(sub.JOIN, group_addr, GROUP_PORT, message.cookie), server)
                elif message.kind == sub.ACK:
                    counts["ack"] += 1
                    cookies[fd] = message.cookie
                    acked.add(fd)
                    if track[0] is not None:
                        track[0].setdefault(fd, time.monotonic())
                elif message.kind == sub.REFUSED:
                    counts["refused"] += 1
                    acked.add(("refused", fd))

    began = time.monotonic()
    for sock in members:
        sock.sendto(sub.encode(sub.JOIN, group_addr, GROUP_PORT), server)
    deadline = began + 10
    retry = began + sub.RETRY_INTERVAL
    while len(acked) < MEMBERS and time.monotonic() < deadline:
        pump(0.02)
        if time.monotonic() >= retry:
            # As a client does: an unanswered JOIN again after RETRY_INTERVAL (the challenges are rate-limited).
            retry += sub.RETRY_INTERVAL
            counts["retries"] = counts.get("retries", 0) + 1
            # And the admitted ones refresh, as their clients would.
            for sock in members:
                sock.sendto(sub.encode(sub.JOIN, group_addr, GROUP_PORT, cookies.get(sock.fileno(), sub.NO_COOKIE)),
                            server)
    admit = time.monotonic() - began
    result = {"admitted": len(acked), "admit_s": round(admit, 3), "admit_counts": dict(counts)}
    print(json.dumps({"phase": "admitted"}), flush=True)
    refresh = sub.DEFAULT_LEASE / sub.REFRESH_SHARE
    acked_since = {}

    def refresh_for(seconds, until_all=False):
        """Every member refreshes every lease / 3, spread over the interval as independent clients would."""
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < seconds:
            if until_all and len(acked_since) >= MEMBERS:
                break
            slot = start + sent * refresh / MEMBERS
            now = time.monotonic()
            if now < slot:
                pump(max(0.0, slot - now))
                continue
            sock = members[sent % MEMBERS]
            sock.sendto(sub.encode(sub.JOIN, group_addr, GROUP_PORT, cookies[sock.fileno()]), server)
            sent += 1
        return sent, start

    acks_before = counts["ack"]
    sent, start = refresh_for(args.refresh_seconds)
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pump(0.05)
    result.update(refreshes_sent=sent, refresh_acks=counts["ack"] - acks_before,
                  refresh_rate=round(sent / (time.monotonic() - 0.3 - start), 1))
    print(json.dumps({"phase": "refreshed"}), flush=True)
    # The parent restarts the server and says when the new one answers: how long until all 1024 are back.
    sys.stdin.readline()
    ready = time.monotonic()
    challenges_before = counts["challenge"]
    acked_since.clear()
    track[0] = acked_since
    refresh_for(5.0, until_all=True)
    result["restart"] = {"readmitted": len(acked_since), "readmit_s": round(max(acked_since.values()) - ready, 3)
                         if acked_since else None, "challenges": counts["challenge"] - challenges_before}
    track[0] = None
    # The 1025th address: a challenge, then REFUSED (full).
    before = dict(counts)
    extra.sendto(sub.encode(sub.JOIN, group_addr, GROUP_PORT), server)
    end = time.monotonic() + 1.0
    while time.monotonic() < end and counts["refused"] == before["refused"]:
        pump(0.05)
    result["extra"] = {"challenges": counts["challenge"] - before["challenge"],
                       "refused": counts["refused"] - before["refused"], "acks": counts["ack"] - before["ack"]}
    print(json.dumps(result), flush=True)


def start_server(relay, env, conf):
    proc = subprocess.Popen(["ip", "netns", "exec", SRV_NS] + relay + ["multis_admin", "-R"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            if control(conf, {"cmd": "ping"}).get("ok"):
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the server did not start")
        time.sleep(0.02)


def real_daemon(refresh_seconds):
    build()
    conf = tempfile.mkdtemp(prefix="dysb-conf-")
    env = dict(os.environ, PYTHONPATH=RELAY_SOURCE, MULTICAST_CONF_DIR=conf)
    relay = [sys.executable, "-m", "multicast_proxy"]
    proc = None
    drv = None
    try:
        subprocess.run(["ip", "netns", "exec", SRV_NS] + relay + [
            "multis_admin", "-A", "-m", GROUP, "-p", str(SERVER_PORT), "-g", str(GROUP_PORT), "--allow",
            "10.99.0.0/16", "--max-members", str(MEMBERS)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            check=False)
        proc = start_server(relay, env, conf)
        rss_empty = rss_mib(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        drv = subprocess.Popen(["ip", "netns", "exec", MEM_NS, sys.executable, os.path.abspath(__file__), "--driver",
                                "--refresh-seconds", str(refresh_seconds)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, universal_newlines=True)
        assert json.loads(drv.stdout.readline())["phase"] == "admitted"
        cpu_admit = cpu_seconds(proc.pid) - cpu0
        rss_admitted = rss_mib(proc.pid)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        stats = control(conf, {"cmd": "stats"})
        members_after_admit = len(stats["groups"][0]["members"])
        assert json.loads(drv.stdout.readline())["phase"] == "refreshed"
        cpu_refresh = (cpu_seconds(proc.pid) - cpu1) / (time.monotonic() - t1)
        rss_refreshed = rss_mib(proc.pid)
        # A restart: the new server has a new cookie secret; every member's next refresh is challenged.
        proc.terminate()
        proc.wait(10)
        proc = start_server(relay, env, conf)
        drv.stdin.write("\n")
        drv.stdin.flush()
        result = json.loads(drv.stdout.readline())
        stats = control(conf, {"cmd": "stats"})
        group = stats["groups"][0]
        result.update(server_rss_mib_empty=rss_empty, server_rss_mib_1024=rss_admitted,
                      server_rss_mib_after_refresh=rss_refreshed, server_cpu_s_admit=round(cpu_admit, 3),
                      server_cpu_share_refreshing=round(cpu_refresh, 4), members_after_admit=members_after_admit,
                      members_at_end=len(group["members"]), events=group["dynamic"]["events"],
                      refusals=dict((k, v) for k, v in stats["subscriptions"]["refusals"].items() if v))
        return result
    finally:
        for process in (drv, proc):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        teardown()
        shutil.rmtree(conf, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--refresh-seconds", type=float, default=REFRESH_SECONDS)
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "performance", "dynamic-scale.json"))
    args = parser.parse_args()
    if args.driver:
        return driver(args)
    keys = {"send_key_id": 1, "keys": {1: SECRET}}
    figures = {"members": MEMBERS, "targets": TARGETS, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "load_average": os.getloadavg()[0], "relay_source": RELAY_SOURCE, "python": sys.version.split()[0],
               "rate_limits": {"global_per_s": sub.GLOBAL_RATE, "challenges_per_s": sub.CHALLENGE_RATE,
                               "per_source_per_s": sub.SOURCE_RATE,
                               "refresh_load_per_s": MEMBERS * sub.REFRESH_SHARE / sub.DEFAULT_LEASE}}
    figures["in_process"] = in_process()
    print("in process, no keys: %s" % json.dumps(figures["in_process"]), flush=True)
    figures["in_process_keys"] = in_process(keys)
    print("in process, fleet key: %s" % json.dumps(figures["in_process_keys"]), flush=True)
    figures["daemon"] = real_daemon(args.refresh_seconds)
    print("real daemon: %s" % json.dumps(figures["daemon"]), flush=True)
    with open(args.output, "w") as handle:
        json.dump(figures, handle, indent=1, sort_keys=True)
        handle.write("\n")
    print("wrote %s" % args.output)


if __name__ == "__main__":
    main()
