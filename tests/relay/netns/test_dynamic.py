"""Dynamic group members across a VPC of network namespaces (issue 17, docs/dynamic-membership.md).

`src` runs the server with a group that takes subscriptions (--allow), the
members run the client with a --dynamic entry and tests/relay/netns/dyn_probe.py
as the application: it joins and leaves the group when the test says, and
records when each numbered datagram arrived.  `rogue` is a co-tenant that
spoofs subscriptions.  Latencies are measured on CLOCK_MONOTONIC, which every
namespace of the machine shares; the bounds asserted are the issue's.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

import vpc as vpc_module

sys.path.insert(0, str(vpc_module.RELAY_SOURCE))

from multicast_proxy import subscription  # noqa: E402

PROBE = Path(__file__).resolve().parent / "dyn_probe.py"
INJECT = Path(__file__).resolve().parent / "inject.py"
GROUP = "239.77.17.1"
GROUP_PORT = 5171
SERVER_PORT = 6171
ALLOW = "10.77.0.0/24"
RATE = 200
# The targets: a joining member gets traffic within 1 s, copies to a member that left stop within 2 s.
JOIN_BOUND = 1.0
LEAVE_BOUND = 2.0


@pytest.fixture
def make_dyn_vpc(make_vpc):
    """make_vpc under this file's own namespace prefix ("dyn")."""
    return lambda hosts: make_vpc(hosts, name_prefix="dyn")


def edit(host, *args):
    result = host.relay(*args, check=False)
    assert result.returncode in (0, 3), result
    return result


def serve_dynamic(src, *extra):
    edit(src, "multis_admin", "-A", "-m", GROUP, "-p", SERVER_PORT, "-g", GROUP_PORT, "--allow", ALLOW, *extra)


def subscribe_dynamic(member, src):
    edit(member, "multic_admin", "-A", "-i", src.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP, "--dynamic")


class App:
    """dyn_probe.py recv in a member: joins at start, leaves at stop()."""

    def __init__(self, host, label):
        self.host = host
        self.ready = host.workdir / ("%s.ready" % label)
        self.stop_file = host.workdir / ("%s.stop" % label)
        self.process = host.start(label, [sys.executable, PROBE, "recv", "--group", GROUP, "--port", GROUP_PORT,
                                          "--ready", self.ready, "--stop", self.stop_file])
        deadline = time.monotonic() + 10
        while not self.ready.exists():
            assert self.process.running() and time.monotonic() < deadline, self.process.describe()
            time.sleep(0.01)
        self.result = None

    def stop(self):
        self.stop_file.write_text("")
        self.result = self.process.json_result()
        return self.result

    @property
    def numbers(self):
        return [number for _t, number in self.result["arrivals"]]

    def join_latency(self):
        assert self.result["arrivals"], "%s received nothing" % self.host.name
        return self.result["arrivals"][0][0] - self.result["joined"]


def start_stream(src, duration):
    return src.start("send", [sys.executable, PROBE, "send", "--group", GROUP, "--port", GROUP_PORT,
                              "--rate", RATE, "--duration", duration])


def server_group(src):
    for group in src.control("server", {"cmd": "stats"})["groups"]:
        if group["group_ip"] == GROUP:
            return group
    raise AssertionError("no group %s in the server's stats" % GROUP)


def member_ips(src):
    return [m["member_ip"] for m in server_group(src)["members"]]


def client_rx(member):
    (entry,) = member.control("client", {"cmd": "stats"})["entries"]
    return entry["rx_packets"]


def wait_until(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting for " + what
        time.sleep(0.02)


def copies_stopped_at(src, member, since):
    """Monotonic time at which the server removed ``member`` (from its departures), after ``since``."""
    wall_offset = time.time() - time.monotonic()
    for gone in reversed(server_group(src)["dynamic"]["departed"]):
        if gone["member_ip"] == member.ip and gone["left"] - wall_offset >= since - 0.05:
            return gone["left"] - wall_offset, gone
    raise AssertionError("server has no departure of %s: %s" % (member.name, server_group(src)["dynamic"]))


def assert_contiguous(numbers, label):
    assert numbers, label
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), "%s lost or reordered datagrams" % label


def test_members_join_and_leave_under_a_steady_stream(make_dyn_vpc):
    vpc = make_dyn_vpc({"src": 1, "m1": 1, "m2": 1, "m3": 1})
    src, m1, m2, m3 = (vpc[name] for name in ("src", "m1", "m2", "m3"))
    serve_dynamic(src)
    for member in (m1, m2, m3):
        subscribe_dynamic(member, src)
        member.start_relay("client")
    src.start_relay("server")
    stream = start_stream(src, 14)
    time.sleep(0.5)
    figures = {"join": [], "leave": [], "expire": []}

    steady = App(m1, "steady")
    time.sleep(1.0)
    for round_number in range(2):
        joiners = [App(m2, "m2-%d" % round_number), App(m3, "m3-%d" % round_number)]
        time.sleep(1.5)
        for app in joiners:
            left = time.monotonic()
            app.stop()
            figures["join"].append(app.join_latency())
            assert_contiguous(app.numbers, app.host.name)
            wait_until(lambda: app.host.ip not in member_ips(src), "%s to leave" % app.host.name, LEAVE_BOUND + 1)
            stopped, gone = copies_stopped_at(src, app.host, left)
            assert gone["left_by"] == "leave", gone
            figures["leave"].append(stopped - left)
            time.sleep(0.3)

    # A member whose client dies sends no leave: its lease runs out.
    late = App(m3, "m3-expire")
    wait_until(lambda: m3.ip in member_ips(src), "m3 to join again")
    killed = time.monotonic()
    m3.relays["client"].popen.kill()
    wait_until(lambda: m3.ip not in member_ips(src), "m3's lease to expire", LEAVE_BOUND + 1)
    stopped, gone = copies_stopped_at(src, m3, killed)
    assert gone["left_by"] == "expired", gone
    figures["expire"].append(stopped - killed)
    late.stop()

    # After the leave window no copy goes to a member without a listener.
    time.sleep(LEAVE_BOUND)
    before = client_rx(m2)
    time.sleep(1.0)
    assert client_rx(m2) == before
    assert member_ips(src) == [m1.ip]
    group = server_group(src)
    assert group["members"][0]["joined_by"] == "subscription"
    assert all(gone.get("tx_packets", 0) > 0 for gone in group["dynamic"]["departed"])

    steady.stop()
    stream.wait(30)
    figures["join"].append(steady.join_latency())
    assert_contiguous(steady.numbers, "the steady member")
    assert len(steady.numbers) > RATE * 8
    print("dynamic membership figures: %s" % json.dumps(
        dict((key, [round(v, 3) for v in values]) for key, values in figures.items())))
    assert max(figures["join"]) < JOIN_BOUND, figures
    assert max(figures["leave"]) < LEAVE_BOUND, figures
    assert max(figures["expire"]) < LEAVE_BOUND, figures


def inject(attacker, frames, source_ip, destination, sport=SERVER_PORT):
    result = attacker.run([sys.executable, INJECT, "send", "--src", source_ip, "--dst", destination.ip,
                           "--sport", sport, "--dport", SERVER_PORT],
                          input_text=json.dumps({"frames": [f.hex() for f in frames]}))
    assert json.loads(result.stdout)["sent"] == len(frames)


def test_spoofed_subscriptions_send_nothing_to_the_victim(make_dyn_vpc):
    vpc = make_dyn_vpc({"src": 1, "victim": 1, "rogue": 1})
    src, victim, rogue = vpc["src"], vpc["victim"], vpc["rogue"]
    edit(src, "multis_admin", "-A", "-m", GROUP, "-p", SERVER_PORT, "-g", GROUP_PORT, "--allow",
         "%s/32" % victim.ip)
    # The victim would deliver a stream if one came (a static entry: it never subscribes itself).
    edit(victim, "multic_admin", "-A", "-i", src.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP)
    victim.start_relay("client")
    src.start_relay("server")
    app = App(victim, "victim-app")
    stream = start_stream(src, 4)
    group_addr = subscription.ip_value(GROUP)
    join = subscription.encode(subscription.JOIN, group_addr, GROUP_PORT)
    forged = subscription.encode(subscription.JOIN, group_addr, GROUP_PORT, cookie=bytes(range(16)))
    # Spoofed from the victim: a join (answered with a challenge the attacker never sees), forged cookies,
    # a leave, malformed messages and a flood for the rate limit.
    inject(rogue, [join], victim.ip, src)
    inject(rogue, [forged] * 3, victim.ip, src)
    inject(rogue, [join[:20], join + b"x", b"MS\x01" + bytes(33), join[:3] + b"\x80" + join[4:]], victim.ip, src)
    # From its own address, which the allow list does not hold; and from the wrong port.
    inject(rogue, [join], rogue.ip, src)
    inject(rogue, [join], victim.ip, src, sport=40000)
    # Last, as it empties the victim's rate-limit bucket for the group.
    inject(rogue, [forged] * 50, victim.ip, src)
    stream.wait(30)
    time.sleep(0.5)
    result = app.stop()
    assert result["arrivals"] == []
    group = server_group(src)
    assert group["members"] == []
    refusals = src.control("server", {"cmd": "stats"})["subscriptions"]["refusals"]
    assert refusals["bad_cookie"] >= 3, refusals
    assert refusals["malformed"] == 4, refusals
    assert refusals["rate_limited"] > 0, refusals
    assert refusals["not_allowed"] == 1, refusals
    assert refusals["wrong_port"] == 1, refusals
    assert group["dynamic"]["events"]["joins"] == 0
    # The challenge went to the real victim, whose static entry ignores it (counted, never followed).
    drops = victim.control("client", {"cmd": "stats"})["drops"]
    assert drops["unknown_group"] >= 1, drops
    text = src.relay("multis_admin", "-P").stdout
    assert "refused:" in text and "bad_cookie=" in text, text


def test_a_server_restart_is_recovered_by_the_next_refresh(make_dyn_vpc):
    vpc = make_dyn_vpc({"src": 1, "m1": 1})
    src, m1 = vpc["src"], vpc["m1"]
    serve_dynamic(src)
    subscribe_dynamic(m1, src)
    m1.start_relay("client")
    src.start_relay("server")
    stream = start_stream(src, 6)
    app = App(m1, "app")
    time.sleep(1.5)
    src.relays["server"].stop()
    time.sleep(0.5)
    src.start_relay("server")
    ready = time.monotonic()
    time.sleep(2.0)
    assert member_ips(src) == [m1.ip]
    result = app.stop()
    stream.wait(30)
    after = [t for t, _n in result["arrivals"] if t > ready]
    assert after, "nothing arrived after the restart"
    gap = after[0] - ready
    print("dynamic membership figures: restart recovered %.3f s after the new server was ready" % gap)
    # The next refresh (every lease / 3) meets a new cookie secret: challenge, join, copies.
    assert gap < subscription.DEFAULT_LEASE / subscription.REFRESH_SHARE + 0.25


def test_a_group_with_static_and_dynamic_members(make_dyn_vpc):
    vpc = make_dyn_vpc({"src": 1, "m1": 1, "m2": 1})
    src, m1, m2 = vpc["src"], vpc["m1"], vpc["m2"]
    serve_dynamic(src, "-j", m1.ip)
    subscribe_dynamic(m1, src)
    subscribe_dynamic(m2, src)
    for member in (m1, m2):
        member.start_relay("client")
    src.start_relay("server", "--metrics", "127.0.0.1:9717")
    stream = start_stream(src, 5)
    both = App(m1, "both")
    time.sleep(0.5)
    joiner = App(m2, "joiner")
    wait_until(lambda: m2.ip in member_ips(src), "m2 to join")

    def listed():
        return dict((m["member_ip"], m["joined_by"]) for m in server_group(src)["members"])
    expected = {m1.ip: "config+subscription", m2.ip: "subscription"}
    # m1's own subscription may still be on its way on a busy machine: wait for it, then hold the listing to it.
    wait_until(lambda: listed() == expected, "m1 listed by config and subscription, m2 by subscription")
    assert listed() == expected, listed()
    text = src.relay("multis_admin", "-L", "-m", GROUP).stdout
    assert "subscription" in text and m2.ip in text, text
    exposition = src.run([sys.executable, "-c", "import urllib.request, sys; sys.stdout.write(urllib.request."
                          "urlopen('http://127.0.0.1:9717/metrics').read().decode())"]).stdout
    assert 'multicast_proxy_server_dynamic_members{group="%s"} 2' % GROUP in exposition, exposition
    assert 'multicast_proxy_server_group_members{group="%s"} 2' % GROUP in exposition
    joiner.stop()
    wait_until(lambda: member_ips(src) == [m1.ip], "m2 to leave")
    # m2's leave took nothing from m1, which its application still keeps subscribed.
    assert server_group(src)["members"][0]["joined_by"] == "config+subscription"
    stream.wait(30)
    time.sleep(0.3)
    both.stop()
    # One copy per datagram for the member that is both, none lost while m2 came and went.
    assert_contiguous(both.numbers, "m1")
    assert len(both.numbers) == len(set(both.numbers))
    # After its application left, m1 stays a member by the config.
    wait_until(lambda: server_group(src)["members"][0]["joined_by"] == "config", "m1's subscription to end")
    assert member_ips(src) == [m1.ip]


def write_keys(host, send_key_id, secret):
    path = host.conf_dir / "auth_keys.json"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"send_key_id": send_key_id, "keys": [{"id": send_key_id, "secret": secret.hex()}]}, handle)


def test_with_the_fleet_key_only_tagged_subscriptions_count(make_dyn_vpc):
    vpc = make_dyn_vpc({"src": 1, "m1": 1, "rogue": 1})
    src, m1, rogue = vpc["src"], vpc["m1"], vpc["rogue"]
    fleet_key = bytes(range(1, 33))
    for host in (src, m1):
        write_keys(host, 1, fleet_key)
    write_keys(rogue, 1, bytes(range(100, 132)))
    serve_dynamic(src)
    for member in (m1, rogue):
        subscribe_dynamic(member, src)
        member.start_relay("client")
    src.start_relay("server")
    stream = start_stream(src, 4)
    good, bad = App(m1, "keyed"), App(rogue, "rogue-app")
    wait_until(lambda: m1.ip in member_ips(src), "m1 to join with the fleet key")
    time.sleep(1.0)
    good.stop()
    bad.stop()
    stream.wait(30)
    assert good.result["arrivals"] and bad.result["arrivals"] == []
    refusals = src.control("server", {"cmd": "stats"})["subscriptions"]["refusals"]
    assert refusals["auth_bad"] > 0, refusals
    # Untagged subscriptions from an allowed address are refused as well.
    join = subscription.encode(subscription.JOIN, subscription.ip_value(GROUP), GROUP_PORT)
    inject(rogue, [join], rogue.ip, src)
    refusals = src.control("server", {"cmd": "stats"})["subscriptions"]["refusals"]
    assert refusals["auth_missing"] == 1, refusals
