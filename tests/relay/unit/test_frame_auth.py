"""Authenticated frames: key file validation, tags, replay window, and the daemons on loopback."""

import base64
import hashlib
import hmac
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from hypothesis import given, settings, strategies as st

from multicast_proxy import admin, auth, cli, relay_config as config, frame, replay
from multicast_proxy.replay import WINDOW, ReplayWindow

from test_daemon import (  # noqa: F401 (relays is a fixture)  # pylint: disable=unused-import
    free_udp_port, lo_sender, nobody_can_run_the_relay, random_group, relays, wait_for, write_client, write_server)

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs", "frame-format.md")
SECRET_1 = bytes(range(32))
SECRET_2 = bytes(range(100, 148))
WRONG_SECRET = bytes(32)


def key_file_text(send_key_id, *keys):
    return json.dumps({"send_key_id": send_key_id,
                       "keys": [{"id": key_id, "secret": secret.hex()} for key_id, secret in keys]})


def write_keys(directory, send_key_id, *keys, mode=0o600):
    directory.mkdir(exist_ok=True)
    path = directory / config.AUTH_KEYS_NAME
    path.write_text(key_file_text(send_key_id, *keys))
    os.chmod(str(path), mode)
    return path


# -- key file model -------------------------------------------------------------

def test_hex_and_base64_secrets_are_decoded():
    text = json.dumps({"send_key_id": 2, "keys": [
        {"id": 1, "secret": SECRET_1.hex()},
        {"id": 2, "secret": base64.b64encode(SECRET_2).decode()}]})
    assert config.load_auth_keys(text) == {"send_key_id": 2, "keys": {1: SECRET_1, 2: SECRET_2}}


@pytest.mark.parametrize("obj, path, words", [
    ([], "", "JSON object"),
    ({"keys": [{"id": 1, "secret": "ab" * 32}]}, "send_key_id", "missing"),
    ({"send_key_id": 1}, "keys", "missing"),
    ({"send_key_id": 1, "keys": []}, "keys", "delete the file"),
    ({"send_key_id": 1, "keys": [{"id": 1, "secret": "ab" * 32}], "send_key": 1}, "send_key", "unknown key"),
    ({"send_key_id": 1, "keys": [{"id": 1, "secret": "ab" * 31}]}, "keys[0].secret", "31 bytes is too short"),
    ({"send_key_id": 1, "keys": [{"id": 1, "secret": "a" * 65}]}, "keys[0].secret", "odd number"),
    ({"send_key_id": 1, "keys": [{"id": 1, "secret": "not base64 at all!" * 4}]}, "keys[0].secret", "neither hex"),
    ({"send_key_id": 1, "keys": [{"id": 1, "secret": 12345}]}, "keys[0].secret", "a number"),
    ({"send_key_id": 1, "keys": [{"id": 0, "secret": "ab" * 32}]}, "keys[0].id", "outside 1..255"),
    ({"send_key_id": 1, "keys": [{"id": 256, "secret": "ab" * 32}]}, "keys[0].id", "outside 1..255"),
    ({"send_key_id": 1, "keys": [{"id": True, "secret": "ab" * 32}]}, "keys[0].id", "a boolean"),
    ({"send_key_id": 1, "keys": [{"id": 1}]}, "keys[0].secret", "missing"),
    ({"send_key_id": 1, "keys": [{"id": 1, "secret": "ab" * 32, "comment": "x"}]}, "keys[0].comment", "unknown"),
    ({"send_key_id": 1, "keys": [{"id": 1, "secret": "ab" * 32}, {"id": 1, "secret": "cd" * 32}]},
     "keys[1].id", "listed twice"),
    ({"send_key_id": 3, "keys": [{"id": 1, "secret": "ab" * 32}]}, "send_key_id", "not in keys (ids: 1)"),
    ({"send_key_id": 1, "keys": [{"id": i, "secret": "ab" * 32} for i in range(1, 18)]}, "keys", "at most 16"),
])
def test_invalid_key_files_name_the_path_and_the_fix(obj, path, words):
    with pytest.raises(config.ConfigError) as info:
        config.validate_auth_keys(obj)
    assert info.value.path == path
    assert words in info.value.problem


def test_empty_and_broken_key_files_are_errors():
    for text, words in (("", "empty key file"), ("  \n", "empty key file"), (b"\x1d", "empty key file"),
                        ("\x1d\x1c", "empty key file"), (b"\xff{}", "not UTF-8"), ('{"send_key_id": 1,', "invalid JSON"),
                        ('{"send_key_id": 1, "send_key_id": 2, "keys": []}', "twice")):
        with pytest.raises(config.ConfigError) as info:
            config.load_auth_keys(text, "auth_keys.json")
        assert words in str(info.value) and str(info.value).startswith("auth_keys.json")


@settings(max_examples=300, deadline=None)
@given(secret=st.binary(min_size=4, max_size=80), key_id=st.integers(-5, 300), send=st.integers(-5, 300),
       encode=st.sampled_from(["hex", "b64"]))
def test_no_error_message_contains_a_secret(secret, key_id, send, encode):
    text = secret.hex() if encode == "hex" else base64.b64encode(secret).decode()
    obj = {"send_key_id": send, "keys": [{"id": key_id, "secret": text}]}
    try:
        config.load_auth_keys(json.dumps(obj))
    except config.ConfigError as exc:
        message = str(exc)
        assert text not in message and secret.hex() not in message
    else:
        assert len(secret) >= config.MIN_SECRET_BYTES and 1 <= key_id == send <= 255


def test_key_file_must_be_private(tmp_path):
    path = write_keys(tmp_path, 1, (1, SECRET_1), mode=0o640)
    with pytest.raises(config.ConfigError) as info:
        auth.read_key_file(str(path))
    assert "mode 0640" in str(info.value) and "chmod 600" in str(info.value)
    os.chmod(str(path), 0o600)
    assert auth.read_key_file(str(path))["keys"] == {1: SECRET_1}
    assert auth.read_key_file(str(tmp_path / "missing.json")) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_key_file_of_another_owner_is_refused(tmp_path):
    path = write_keys(tmp_path, 1, (1, SECRET_1))
    os.chown(str(path), 4321, 4321)
    with pytest.raises(config.ConfigError) as info:
        auth.read_key_file(str(path))
    assert "owned by uid 4321" in str(info.value)


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "auth_keys.json"
    os.mkfifo(str(fifo), 0o600)
    with pytest.raises(config.ConfigError) as info:
        auth.read_key_file(str(fifo))
    assert "not a regular file" in str(info.value)


def test_check_auth_command(tmp_path, capsys):
    path = write_keys(tmp_path, 2, (1, SECRET_1), (2, SECRET_2))
    for program in (cli.SERVER, cli.CLIENT):
        action = cli.parse(program, ["--check-auth", str(path)])
        assert action.command == "check_auth" and action.file == str(path)
        assert admin.execute(action) == 0
        out = capsys.readouterr().out
        assert out == "%s: valid, keys 1, 2, sending with key 2\n" % path
        assert SECRET_1.hex() not in out
    os.chmod(str(path), 0o644)
    assert admin.execute(cli.parse(cli.CLIENT, ["--check-auth", str(path)])) == 2
    assert "chmod 600" in capsys.readouterr().err
    with pytest.raises(cli.UsageError):
        cli.parse(cli.SERVER, ["--check-auth", str(path), "--check-config", str(path)])


# -- tags ----------------------------------------------------------------------

def documented_auth_vector():
    with open(DOC) as handle:
        (block,) = re.findall(r"```auth-vector\n(.*?)```", handle.read(), re.S)
    fields = dict(line.split(":", 1) for line in block.strip().splitlines())
    return dict((name, bytes.fromhex(value.replace(" ", ""))) for name, value in fields.items())


def test_documented_tag_vector():
    vector = documented_auth_vector()
    assert vector["secret"] == SECRET_1
    assert hmac.new(vector["secret"], vector["server"] + vector["covered"], hashlib.sha256).digest() == vector["hmac"]
    assert vector["frame"] == vector["covered"] + vector["hmac"][:16]
    decoded = frame.decode(vector["frame"])
    assert (decoded.flags, decoded.key_id, decoded.payload, decoded.tag) == (1, 1, b"hello", vector["hmac"][:16])
    server_ip = socket.inet_ntoa(vector["server"])
    assert auth.compute_tag(vector["secret"], server_ip, vector["covered"]) == vector["hmac"][:16]
    signer = auth.Signer({"send_key_id": 1, "keys": {1: vector["secret"]}}).bound(server_ip)
    buffer = bytearray(vector["covered"]) + bytearray(16)
    assert signer.sign_into(memoryview(buffer), len(vector["covered"])) == len(vector["frame"])
    assert bytes(buffer) == vector["frame"]
    verifier = auth.Verifier({"send_key_id": 1, "keys": {1: vector["secret"]}})
    end = len(vector["covered"])
    assert verifier.check(memoryview(vector["frame"]), 1, 1, end, vector["server"], replay.ReplayWindow()) is None
    # The same bytes from another server's address are refused.
    assert verifier.check(memoryview(vector["frame"]), 1, 1, end, auth.server_identity("192.168.1.2"),
                          replay.ReplayWindow()) == "auth_bad"


@settings(max_examples=200, deadline=None)
@given(secret=st.binary(min_size=32, max_size=200), data=st.binary(max_size=3000),
       server=st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_precomputed_hmac_matches_the_hmac_module(secret, data, server):
    # Secrets longer than the 64-byte SHA-256 block are hashed first (RFC 2104).
    server_ip = frame.int_to_ip(server)
    assert auth._Keyed(secret).tag(auth.server_identity(server_ip), data) == auth.compute_tag(secret, server_ip, data)


def tagged_frame(secret, key_id=1, seq=7, payload=b"payload", server_ip="10.0.0.1"):
    header = bytearray(frame.HEADER_LEN)
    frame.pack_header_into(header, frame.ip_to_int("239.1.1.1"), 5000, frame.ip_to_int("10.0.0.1"), 4000, seq,
                           flags=frame.FLAG_TAG, key_id=key_id)
    covered = bytes(header) + payload
    return covered + auth.compute_tag(secret, server_ip, covered)


def verdict(verifier, data, server_ip="10.0.0.1", window=None):
    flags, _p, _t, key_id, _g, _gp, _s, _sp, _seq, _start, end = frame.parse_from(data, len(data))
    return verifier.check(memoryview(data), flags, key_id, end, auth.server_identity(server_ip),
                          window if window is not None else replay.ReplayWindow())


def test_verifier_reasons_and_rotation():
    both = auth.Verifier({"send_key_id": 2, "keys": {1: SECRET_1, 2: SECRET_2}})
    good_1, good_2 = tagged_frame(SECRET_1, 1), tagged_frame(SECRET_2, 2)
    assert verdict(both, good_1) is None and verdict(both, good_2) is None
    assert verdict(both, frame.encode("239.1.1.1", 5000, "10.0.0.1", 1, 7, b"payload")) == "auth_missing"
    assert verdict(both, tagged_frame(SECRET_1, key_id=9)) == "auth_unknown_key"
    assert verdict(both, tagged_frame(WRONG_SECRET, key_id=1)) == "auth_bad"
    for position in (3, 7, 10, 25, frame.HEADER_LEN + 2, len(good_1) - 1):
        tampered = bytearray(good_1)
        tampered[position] ^= 0x01
        assert verdict(both, bytes(tampered)) in ("auth_bad", "auth_missing", "auth_unknown_key"), position
    # Flipping a sequence, address or payload bit keeps the flags and key id: only the tag can tell.
    for position in (8, 14, 20, 27, frame.HEADER_LEN):
        tampered = bytearray(good_1)
        tampered[position] ^= 0x80
        assert verdict(both, bytes(tampered)) == "auth_bad", position
    # After the rotation only key 2 is listed; its counters carry over.
    both.accepted[1] += 3
    both.accepted[2] += 5
    new = auth.Verifier({"send_key_id": 2, "keys": {2: SECRET_2}}, both)
    assert verdict(new, good_1) == "auth_unknown_key" and verdict(new, good_2) is None
    assert new.as_dict() == {"key_ids": [2], "accepted_by_key": {"2": 5}, "accepted_unbound": 0,
                             "legacy_allowed": True}


# -- replay window -----------------------------------------------------------------

def test_replay_window_refuses_repeats_and_old_frames():
    window = ReplayWindow()
    base = 1700000000 << 32
    assert window.admit(base + 10)
    assert not window.admit(base + 10)
    assert window.admit(base + 12) and window.admit(base + 11)  # late but new
    assert not window.admit(base + 11)
    assert window.admit(base + 12 + WINDOW - 1)
    assert window.admit(base + 13)                            # still inside the window
    assert not window.admit(base + 12)                        # now WINDOW behind: too old
    assert not window.admit(base + 9)
    restarted = (1700000100 << 32) + 1                        # a new server run
    assert window.admit(restarted)
    assert not window.admit(base + 12 + WINDOW - 1)           # the old run's frames stay refused
    assert window.admit(restarted + 5000) and window.admit(restarted + 5000 - WINDOW + 1)
    assert not window.admit(restarted + 5000 - WINDOW)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3 * WINDOW), max_size=300))
def test_replay_window_admits_each_number_at_most_once(numbers):
    window = ReplayWindow()
    admitted = []
    for seq in numbers:
        if window.admit(seq):
            admitted.append(seq)
    assert len(admitted) == len(set(admitted))
    # Anything within the window of the highest admitted number and never seen before is admitted.
    highest = None
    seen = set()
    window = ReplayWindow()
    for seq in numbers:
        expected = seq not in seen and (highest is None or seq > highest - WINDOW)
        assert window.admit(seq) == expected
        if expected:
            seen.add(seq)
            highest = seq if highest is None else max(highest, seq)


# -- daemons on loopback -------------------------------------------------------------

def test_server_tags_frames_and_refuses_what_leaves_no_room_for_the_tag(tmp_path, relays):  # noqa: F811
    group, group_port = random_group(), free_udp_port()
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(5)
    write_server(tmp_path, group, group_port, member.getsockname()[1], ["127.0.0.1"])
    write_keys(tmp_path, 2, (1, SECRET_1), (2, SECRET_2))
    server = relays(tmp_path, "server")
    server.wait_ready()
    assert server.request("stats")["auth"] == {"send_key_id": 2}
    sender = lo_sender()
    sender.sendto(b"first", (group, group_port))
    sender.sendto(b"x" * (frame.MAX_PAYLOAD - frame.TAG_LEN + 1), (group, group_port))
    sender.sendto(b"y" * (frame.MAX_PAYLOAD - frame.TAG_LEN), (group, group_port))
    frames = [member.recv(70000) for _frame in range(2)]
    for data in frames:
        decoded = frame.decode(data)
        assert (decoded.flags, decoded.key_id) == (frame.FLAG_TAG, 2)
        assert decoded.tag == auth.compute_tag(SECRET_2, "127.0.0.1", data[:-frame.TAG_LEN])
    assert [len(frame.decode(d).payload) for d in frames] == [5, frame.MAX_PAYLOAD - frame.TAG_LEN]
    (g,) = server.request("stats")["groups"]
    assert (g["drops"]["oversize"], g["rx_packets"]) == (1, 2)
    # Switching the send key is a reload; a key file others can read is refused and the old key stays.
    write_keys(tmp_path, 1, (1, SECRET_1), (2, SECRET_2), mode=0o644)
    reply = server.request("reload")
    assert not reply["ok"] and "chmod 600" in reply["error"]
    assert server.request("stats")["auth"] == {"send_key_id": 2}
    os.chmod(str(tmp_path / config.AUTH_KEYS_NAME), 0o600)
    assert server.request("reload")["changes"]["auth"] == "keys 1, 2, sending with key 1"
    sender.sendto(b"after", (group, group_port))
    assert frame.decode(member.recv(70000)).key_id == 1
    (tmp_path / config.AUTH_KEYS_NAME).unlink()
    assert server.request("reload")["changes"]["auth"] == "off"
    sender.sendto(b"plain", (group, group_port))
    assert frame.decode(member.recv(70000)).flags == 0
    server.stop()
    log = (tmp_path / "server_log.txt").read_text()
    assert "authentication: keys 1, 2, sending with key 2" in log
    for secret in (SECRET_1, SECRET_2):
        assert secret.hex() not in log
    member.close()
    sender.close()


def test_client_with_keys_drops_and_counts_by_reason(tmp_path, relays):  # noqa: F811
    server_port = free_udp_port()
    group = random_group()
    write_client(tmp_path, [{"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group,
                             "group_port": 5000}])
    write_keys(tmp_path, 1, (1, SECRET_1), (2, SECRET_2))
    client = relays(tmp_path, "client")
    client.wait_ready()
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    local.bind(("127.0.0.1", 0))
    to = ("127.0.0.1", server_port)

    def make(secret, key_id, seq, payload=b"x"):
        header = bytearray(frame.HEADER_LEN)
        frame.pack_header_into(header, frame.ip_to_int(group), 5000, frame.ip_to_int("10.0.0.9"), 1, seq,
                               flags=frame.FLAG_TAG, key_id=key_id)
        covered = bytes(header) + payload
        return covered + auth.compute_tag(secret, "127.0.0.1", covered)

    good = make(SECRET_1, 1, 5000)
    local.sendto(good, to)
    local.sendto(make(SECRET_2, 2, 5001), to)
    local.sendto(good, to)                                                 # replay
    local.sendto(frame.encode(group, 5000, "10.0.0.9", 1, 5002, b"x"), to)  # no tag
    local.sendto(make(SECRET_1, 7, 5003), to)                               # unknown key id
    local.sendto(make(WRONG_SECRET, 1, 5004), to)                           # wrong secret
    local.sendto(good[:-1] + bytes([good[-1] ^ 1]), to)                     # tampered tag
    local.sendto(make(SECRET_1, 1, 5000 - WINDOW), to)                      # older than the window
    local.sendto(make(SECRET_1, 1, 4999), to)                                # late but new: accepted
    wait_for(lambda: sum(client.request("stats")["drops"].values()) == 6, "six drops")
    stats = client.request("stats")
    assert {k: v for k, v in stats["drops"].items() if v} == {"replay": 2, "auth_missing": 1,
                                                              "auth_unknown_key": 1, "auth_bad": 2}
    assert stats["auth"] == {"key_ids": [1, 2], "accepted_by_key": {"1": 2, "2": 1}, "accepted_unbound": 0,
                             "legacy_allowed": True}
    (entry,) = stats["entries"]
    assert entry["rx_packets"] == 3
    client.stop()
    log = (tmp_path / "client_log.txt").read_text()
    for reason in ("replay", "auth_missing", "auth_unknown_key", "auth_bad"):
        assert "drop %s:" % reason in log
    assert SECRET_1.hex() not in log and SECRET_2.hex() not in log
    local.close()


def test_a_frame_of_one_server_resent_under_another_servers_address_is_refused(tmp_path, relays):  # noqa: F811
    """Issue 14.1: two servers send one group; a captured frame of A re-sent from B's address is auth_bad,
    and B's window does not move: B's own (lower-numbered) frames are still accepted."""
    server_port = free_udp_port()
    group = random_group()
    write_client(tmp_path, [{"server_ip": ip, "server_port": server_port, "group_ip": group, "group_port": 5000}
                            for ip in ("127.0.0.1", "127.0.0.2")])
    write_keys(tmp_path, 1, (1, SECRET_1))
    client = relays(tmp_path, "client")
    client.wait_ready()
    server_a, server_b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _server in range(2))
    server_a.bind(("127.0.0.1", 0))
    server_b.bind(("127.0.0.2", 0))
    to = ("127.0.0.1", server_port)

    def make(server_ip, seq):
        header = bytearray(frame.HEADER_LEN)
        frame.pack_header_into(header, frame.ip_to_int(group), 5000, frame.ip_to_int("10.0.0.9"), 1, seq,
                               flags=frame.FLAG_TAG, key_id=1)
        covered = bytes(header) + b"x"
        return covered + auth.compute_tag(SECRET_1, server_ip, covered)

    def received(server_ip):
        return [e["rx_packets"] for e in client.request("stats")["entries"] if e["server_ip"] == server_ip][0]
    try:
        captured = make("127.0.0.1", 9 << 32)     # a frame of A's, far ahead of B's numbers
        server_a.sendto(captured, to)
        wait_for(lambda: received("127.0.0.1") == 1, "A's frame")
        server_b.sendto(captured, to)             # the replay under B's address
        wait_for(lambda: client.request("stats")["drops"]["auth_bad"] == 1, "the re-sent frame refused")
        server_b.sendto(make("127.0.0.2", 5), to)  # B's genuine frame, numbered far below A's
        wait_for(lambda: received("127.0.0.2") == 1, "B's frame")
        drops = client.request("stats")["drops"]
        assert (drops["auth_bad"], drops["replay"]) == (1, 0)
    finally:
        server_a.close()
        server_b.close()


def test_the_server_binds_its_tags_to_its_route_source_or_the_configured_address(tmp_path, relays):  # noqa: F811
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(5)
    group, group_port = random_group(), free_udp_port()
    write_server(tmp_path, group, group_port, member.getsockname()[1], ["127.0.0.1"])
    write_keys(tmp_path, 1, (1, SECRET_1))
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    verifier = auth.Verifier({"send_key_id": 1, "keys": {1: SECRET_1}})
    try:
        sender.sendto(b"routed", (group, group_port))
        data = member.recv(70000)
        assert verdict(verifier, data, "127.0.0.1") is None
        assert verdict(verifier, data, "127.0.0.2") == "auth_bad"
        cfg = json.loads((tmp_path / config.SERVER_CONFIG_NAME).read_text())
        cfg["address"] = "10.1.2.3"
        (tmp_path / config.SERVER_CONFIG_NAME).write_text(json.dumps(cfg))
        assert server.request("reload")["ok"]
        sender.sendto(b"configured", (group, group_port))
        data = member.recv(70000)
        assert frame.decode(data).payload == b"configured"
        assert verdict(verifier, data, "10.1.2.3") is None
        assert verdict(verifier, data, "127.0.0.1") == "auth_bad"
    finally:
        member.close()
        sender.close()


def test_invalid_key_file_stops_the_start(tmp_path, relays):  # noqa: F811
    write_client(tmp_path, [])
    path = write_keys(tmp_path, 1, (1, SECRET_1))
    path.write_text(key_file_text(1, (1, SECRET_1[:20])))
    client = relays(tmp_path, "client")
    _out, err = client.finish()
    assert client.proc.returncode == 2
    assert "keys[0].secret" in err and "too short" in err and SECRET_1[:20].hex() not in err


@pytest.mark.skipif(not nobody_can_run_the_relay(), reason="needs root, runuser and a checkout readable by nobody")
def test_control_socket_refuses_other_users_even_when_its_mode_is_loosened(relays):  # noqa: F811
    directory = tempfile.mkdtemp(prefix="h8x-peer-")
    try:
        os.chmod(directory, 0o755)
        path = pathlib.Path(directory)
        write_client(path, [])
        client = relays(path, "client")
        client.wait_ready()
        socket_path = path / "multic.sock"
        os.chmod(str(socket_path), 0o666)  # the mistake the peer check guards against
        ask = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
               "s.sendall(b'{\"cmd\": \"stats\"}\\n'); print(s.recv(65536).decode())")
        result = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", ask, str(socket_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"ok": False, "error": "the control socket is for root only"}
        assert client.request("stats")["control_refused"] == 1
        client.stop()
        assert "drop control_refused: control connection from uid" in (path / "client_log.txt").read_text()
    finally:
        shutil.rmtree(directory)


# -- the run second: sequence numbers keep growing across restarts ------------------------

def test_run_second_stays_above_the_previous_run(tmp_path):
    path = str(tmp_path / replay.RUN_FILE)
    assert replay.claim_run_second(path, 1700000000.7) == 1700000000
    assert replay.claim_run_second(path, 1700000000.9) == 1700000001   # restarted within the same second
    assert replay.claim_run_second(path, 1600000000.0) == 1700000002   # the clock stepped back
    assert replay.claim_run_second(path, 1800000000.2) == 1800000000   # normal: the start second
    assert (tmp_path / replay.RUN_FILE).read_text() == "1800000000\n"
    (tmp_path / replay.RUN_FILE).write_text("not a number")
    assert replay.claim_run_second(path, 1700000000.0) == 1700000000
    assert replay.claim_run_second(str(tmp_path / "missing" / replay.RUN_FILE), 1700000005.5) == 1700000005


def test_server_restart_is_not_taken_for_a_replay(tmp_path, relays):  # noqa: F811
    """A server whose previous run claimed a later second (clock stepped back) sends above it."""
    group, group_port = random_group(), free_udp_port()
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", 0))
    member.settimeout(5)
    write_server(tmp_path, group, group_port, member.getsockname()[1], ["127.0.0.1"])
    claimed = int(time.time()) + 1000
    (tmp_path / replay.RUN_FILE).write_text("%d\n" % claimed)
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = lo_sender()
    sender.sendto(b"after the restart", (group, group_port))
    assert frame.decode(member.recv(70000)).seq == ((claimed + 1) << 32) + 1
    window = ReplayWindow()
    assert window.admit((claimed << 32) + 5000)       # the previous run's last frame
    assert window.admit(((claimed + 1) << 32) + 1)    # this run's first
    member.close()
    sender.close()
