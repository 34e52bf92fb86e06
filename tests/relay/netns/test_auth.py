"""Authenticated frames across a VPC of network namespaces (docs/threat-model.md).

`src` runs the server, `m1` (and `m2`) the client and an mcrecv receiver,
`rogue` is a co-tenant of the VPC.  An on-path attacker is simulated by
sniffing the bridge port in front of `m1` (inject.py capture); `rogue` then
sends what it captured, altered or made up, with its own address or with the
server's address spoofed through a raw socket (inject.py send).  None of it
may reach the receiver, and the client counts every frame under its reason.
"""

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import vpc as vpc_module

sys.path.insert(0, str(vpc_module.RELAY_SOURCE))

from multicast_proxy import auth, relay_config as config, frame  # noqa: E402

INJECT = Path(__file__).resolve().parent / "inject.py"
GROUP = "239.77.6.1"
GROUP_PORT = 5061
SERVER_PORT = 6061
SECRET_1 = bytes(range(1, 33))
SECRET_2 = bytes(range(101, 149))
ATTACKER_SECRET = bytes(range(200, 232))


def write_keys(host, send_key_id, *keys):
    """Write auth_keys.json as the role does: mode 0600 from the first byte."""
    path = host.conf_dir / config.AUTH_KEYS_NAME
    text = json.dumps({"send_key_id": send_key_id,
                       "keys": [{"id": key_id, "secret": secret.hex()} for key_id, secret in keys]})
    temporary = path.with_name(path.name + ".new")
    fd = os.open(str(temporary), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(str(temporary), str(path))


def edit(host, *args):
    result = host.relay(*args, check=False)
    assert result.returncode in (0, 3), result


def setup_relays(src, members):
    edit(src, "multis_admin", "-A", "-m", GROUP, "-j", ",".join(m.ip for m in members),
         "-p", SERVER_PORT, "-g", GROUP_PORT)
    for member in members:
        edit(member, "multic_admin", "-A", "-i", src.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP)


def reload(host, program):
    result = host.relay(program, "reload", check=False)
    assert result.returncode == 0, result
    return result.stdout


def client_stats(host):
    return host.control("client", {"cmd": "stats"})


def wait_until(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def start_capture(vpc, member, count):
    """Sniff the frames the bridge forwards to `member` (an on-path attacker's view)."""
    ready = vpc.workdir / "capture.ready"
    argv = ["ip", "netns", "exec", vpc.bridge_netns, sys.executable, str(INJECT), "capture",
            "--ifname", "p0-%s" % member.name, "--dst-ip", member.ip, "--port", str(SERVER_PORT),
            "--count", str(count), "--ready", str(ready)]
    stdout_path, stderr_path = vpc.workdir / "capture.out", vpc.workdir / "capture.err"
    with open(str(stdout_path), "w") as stdout, open(str(stderr_path), "w") as stderr:
        popen = subprocess.Popen(argv, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    process = vpc_module.Process("capture", argv, popen, stdout_path, stderr_path)
    # The VPC stops it at teardown, whatever happens here.
    vpc.processes.append(process)
    wait_until(lambda: ready.exists() or not process.running(), "the capture to start")
    assert process.running(), process.describe()
    return process


def inject(attacker, frames, source_ip, destination):
    """Send `frames` from `attacker` with source address `source_ip` (spoofed unless it is the attacker's)."""
    result = attacker.run([sys.executable, INJECT, "send", "--src", source_ip, "--dst", destination.ip,
                           "--sport", 40000, "--dport", SERVER_PORT],
                          input_text=json.dumps({"frames": [f.hex() for f in frames]}))
    assert json.loads(result.stdout)["sent"] == len(frames)


def forge(secret, key_id, seq, payload=b"forged by rogue"):
    """A frame for the test group with a tag made with `secret` (None: no tag)."""
    src = frame.ip_to_int("10.77.0.99")
    header = bytearray(frame.HEADER_LEN)
    frame.pack_header_into(header, frame.ip_to_int(GROUP), GROUP_PORT, src, 4242, seq,
                           flags=frame.FLAG_TAG if secret is not None else 0, key_id=key_id)
    covered = bytes(header) + payload
    # Any server address: the secret is wrong anyway.
    return covered + (auth.compute_tag(secret, "10.77.0.99", covered) if secret is not None else b"")


def flipped(data, position):
    altered = bytearray(data)
    altered[position] ^= 0x01
    return bytes(altered)


def test_forged_tampered_and_replayed_frames_never_reach_a_receiver(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1, "rogue": 1})
    src, m1, rogue = vpc["src"], vpc["m1"], vpc["rogue"]
    setup_relays(src, [m1])
    for host in (src, m1):
        write_keys(host, 1, (1, SECRET_1))
    src.start_relay("server")
    m1.start_relay("client")
    genuine, trailing = 20, 10
    receiver = m1.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=genuine + trailing, idle_timeout=20)
    capture = start_capture(vpc, m1, genuine)
    sent = src.send(GROUP, GROUP_PORT, genuine, rate=200, size=200)
    assert sent["sent"] == genuine
    captured = [bytes.fromhex(item) for item in capture.json_result()["frames"]]
    assert len(captured) == genuine, capture.describe()
    assert all(frame.decode(data).flags == frame.FLAG_TAG for data in captured)
    wait_until(lambda: client_stats(m1)["entries"][0]["delivered_packets"] == genuine, "the genuine stream")

    newest = max(frame.decode(data).seq for data in captured)
    future = newest + 100
    spoofed_from_server = (
        captured                                              # replays: 20
        + [flipped(captured[0], frame.HEADER_LEN + 5),        # a payload byte: auth_bad
           flipped(captured[1], len(captured[1]) - 1),        # a tag byte: auth_bad
           flipped(captured[2], 27),                          # the sequence, to pass the window: auth_bad
           forge(ATTACKER_SECRET, 1, future),                 # the right key id, a wrong key: auth_bad
           forge(ATTACKER_SECRET, 9, future + 1),             # auth_unknown_key
           forge(None, 0, future + 2),                        # no tag: auth_missing
           b"\x00garbage, not a frame at all\xff" * 3]        # malformed
    )
    inject(rogue, spoofed_from_server, src.ip, m1)
    from_own_address = [captured[3], forge(None, 0, future + 3)]  # unknown_server, both
    inject(rogue, from_own_address, rogue.ip, m1)
    attempts = len(spoofed_from_server) + len(from_own_address)
    expected = {"replay": genuine, "auth_bad": 4, "auth_unknown_key": 1, "auth_missing": 1, "malformed": 1,
                "unknown_server": 2}
    wait_until(lambda: sum(client_stats(m1)["drops"].values()) >= attempts, "the client to judge every attempt")

    # Genuine traffic after the attacks: the receiver stops once it has all of
    # it, so anything forged that got through would have been counted first.
    assert src.send(GROUP, GROUP_PORT, trailing, rate=200, size=200, stream_id=2)["sent"] == trailing
    summary = receiver.json_result()
    assert (summary["unique"], summary["received"]) == (genuine + trailing, genuine + trailing), summary
    assert (summary["duplicates"], summary["corrupt"], summary["foreign"]) == (0, 0, 0), summary
    stats = client_stats(m1)
    assert {reason: count for reason, count in stats["drops"].items() if count} == expected, stats["drops"]
    assert stats["auth"] == {"key_ids": [1], "accepted_by_key": {"1": genuine + trailing}, "accepted_unbound": 0,
                             "legacy_allowed": True}
    (entry,) = stats["entries"]
    assert entry["delivered_packets"] == genuine + trailing
    log = (m1.conf_dir / "client_log.txt").read_text()
    for reason in expected:
        assert "drop %s:" % reason in log, reason
    assert SECRET_1.hex() not in log


def test_a_frame_of_one_server_replayed_under_another_servers_address_is_refused(make_vpc):
    """Issue 14.1: tags bind the server that sent the frame.

    Two servers send the group; server b runs since an earlier second, so
    a's sequence numbers are far ahead of b's. A frame of a's, captured on
    the path and re-sent under b's address, must not verify (before, it was
    accepted and moved b's replay window past every frame b would send).
    """
    vpc = make_vpc({"a": 1, "b": 1, "m1": 1, "rogue": 1})
    server_a, server_b, m1, rogue = vpc["a"], vpc["b"], vpc["m1"], vpc["rogue"]
    for server in (server_b, server_a):
        edit(server, "multis_admin", "-A", "-m", GROUP, "-j", m1.ip, "-p", SERVER_PORT, "-g", GROUP_PORT)
        edit(m1, "multic_admin", "-A", "-i", server.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP)
    for host in (server_a, server_b, m1):
        write_keys(host, 1, (1, SECRET_1))
    server_b.start_relay("server")
    time.sleep(1.1)  # a's run second, the upper half of its sequence numbers, is later than b's
    server_a.start_relay("server")
    m1.start_relay("client")
    from_a, from_b = 5, 5
    receiver = m1.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=from_a + from_b, idle_timeout=20)
    capture = start_capture(vpc, m1, from_a)
    assert server_a.send(GROUP, GROUP_PORT, from_a, rate=200, size=200, stream_id=1)["sent"] == from_a
    captured = [bytes.fromhex(item) for item in capture.json_result()["frames"]]
    assert len(captured) == from_a, capture.describe()

    def entry(server):
        return [e for e in client_stats(m1)["entries"] if e["server_ip"] == server.ip][0]
    wait_until(lambda: entry(server_a)["delivered_packets"] == from_a, "a's stream")
    inject(rogue, captured[-1:], server_b.ip, m1)
    wait_until(lambda: client_stats(m1)["drops"]["auth_bad"] == 1, "the re-sent frame to be refused")
    assert server_b.send(GROUP, GROUP_PORT, from_b, rate=200, size=200, stream_id=2)["sent"] == from_b
    summary = receiver.json_result()
    assert (summary["unique"], summary["duplicates"], summary["foreign"]) == (from_a + from_b, 0, 0), summary
    assert entry(server_b)["delivered_packets"] == from_b
    drops = client_stats(m1)["drops"]
    assert {reason: count for reason, count in drops.items() if count} == {"auth_bad": 1}, drops


def test_key_rotation_mid_stream_loses_nothing(make_vpc):
    vpc = make_vpc({"src": 1, "m1": 1, "m2": 1})
    src, members = vpc["src"], [vpc["m1"], vpc["m2"]]
    setup_relays(src, members)
    for host in [src] + members:
        write_keys(host, 1, (1, SECRET_1))
    src.start_relay("server")
    for member in members:
        member.start_relay("client")
    count = 8000
    receivers = [m.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=count, idle_timeout=10) for m in members]
    sender = src.send(GROUP, GROUP_PORT, count, rate=1000, size=300, background=True)

    def accepted(member, key_id):
        return client_stats(member)["auth"]["accepted_by_key"].get(str(key_id), 0)

    # 1. Every client learns the new key while the server still sends with the old one.
    wait_until(lambda: all(accepted(m, 1) > 500 for m in members), "frames with key 1")
    for member in members:
        write_keys(member, 1, (1, SECRET_1), (2, SECRET_2))
        assert '"auth": "keys 1, 2, sending with key 1"' in reload(member, "client_reload_list")
    # 2. The server switches to the new key, mid-stream.
    write_keys(src, 2, (1, SECRET_1), (2, SECRET_2))
    assert '"auth": "keys 1, 2, sending with key 2"' in reload(src, "server_reload_list")
    wait_until(lambda: all(accepted(m, 2) > 500 for m in members), "frames with key 2")
    with_old_key = [accepted(m, 1) for m in members]
    # 3. The old key is retired on the clients.
    for member in members:
        write_keys(member, 2, (2, SECRET_2))
        reload(member, "client_reload_list")
    assert sender.running(), "the stream ended before the rotation finished; the test proves nothing"
    assert sender.json_result(timeout=60)["sent"] == count
    for member, receiver in zip(members, receivers):
        summary = receiver.json_result()
        assert (summary["unique"], summary["lost"], summary["duplicates"]) == (count, 0, 0), (member.name, summary)
        stats = client_stats(member)
        assert not any(stats["drops"].values()), (member.name, stats["drops"])
        assert stats["auth"]["key_ids"] == [2]
    # Both keys carried part of the stream: the switch happened while it ran.
    assert all(0 < n < count for n in with_old_key), with_old_key
    (group_stats,) = src.control("server", {"cmd": "stats"})["groups"]
    assert group_stats["rx_packets"] == count
    assert src.control("server", {"cmd": "stats"})["auth"] == {"send_key_id": 2}


def test_an_upgrade_from_legacy_tags_mid_stream_loses_nothing_and_a_downgrade_is_refused(make_vpc):
    """Issue 14.1, rolling upgrade: step 1 servers send legacy tags (clients of releases before 1.0.0 verify
    them), step 2 the server switches to tags that name it while a stream runs. Nothing is lost; afterwards the
    legacy frames an on-path attacker captured during step 1 are refused as a downgrade (auth_unbound)."""
    vpc = make_vpc({"src": 1, "m1": 1, "rogue": 1})
    src, m1, rogue = vpc["src"], vpc["m1"], vpc["rogue"]
    setup_relays(src, [m1])
    edit(src, "multis_admin", "--set", "legacy_tags=true")
    for host in (src, m1):
        write_keys(host, 1, (1, SECRET_1))
    src.start_relay("server")
    m1.start_relay("client")
    count, trailing, captured_count = 6000, 10, 20
    receiver = m1.start_receiver("mcrecv", GROUP, GROUP_PORT, expect=count + trailing, idle_timeout=20)
    capture = start_capture(vpc, m1, captured_count)
    sender = src.send(GROUP, GROUP_PORT, count, rate=1000, size=300, background=True)
    captured = [bytes.fromhex(item) for item in capture.json_result()["frames"]]
    assert len(captured) == captured_count, capture.describe()
    # What was captured carries legacy tags: the HMAC of the frame alone.
    covered = captured[0][:-frame.TAG_LEN]
    assert captured[0][-frame.TAG_LEN:] == \
        hmac.new(SECRET_1, covered, hashlib.sha256).digest()[:frame.TAG_LEN]
    wait_until(lambda: client_stats(m1)["auth"]["accepted_unbound"] > 500, "frames with legacy tags")

    edit(src, "multis_admin", "--set", "legacy_tags=false")
    reload(src, "server_reload_list")
    assert sender.running(), "the stream ended before the switch; the test proves nothing"
    assert sender.json_result(timeout=60)["sent"] == count
    wait_until(lambda: client_stats(m1)["entries"][0]["delivered_packets"] == count, "the whole stream")
    stats = client_stats(m1)
    unbound = stats["auth"]["accepted_unbound"]
    assert 0 < unbound < count, unbound
    assert stats["auth"]["accepted_by_key"] == {"1": count}
    assert not any(stats["drops"].values()), stats["drops"]

    inject(rogue, captured, src.ip, m1)
    wait_until(lambda: client_stats(m1)["drops"]["auth_unbound"] == captured_count, "the downgrade to be refused")
    assert src.send(GROUP, GROUP_PORT, trailing, rate=200, size=300, stream_id=2)["sent"] == trailing
    summary = receiver.json_result()
    assert (summary["unique"], summary["lost"], summary["duplicates"]) == (count + trailing, 0, 0), summary
    drops = client_stats(m1)["drops"]
    assert {reason: count for reason, count in drops.items() if count} == {"auth_unbound": captured_count}, drops
    assert client_stats(m1)["auth"]["accepted_unbound"] == unbound
