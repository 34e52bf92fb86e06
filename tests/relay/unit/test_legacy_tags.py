"""Upgrading from releases whose tags did not name their server (issue 14.1, rolling upgrade).

Releases before 1.0.0 tagged HMAC(secret, frame); this one tags
HMAC(secret, server address || frame).  A fleet is upgraded without loss in
two steps (docs/collection.md): the servers first send legacy tags
(``legacy_tags``), which old and new clients verify, then, once every client
runs the new release, tags that name the server.  A new client accepts a
legacy tag from an entry's server only until that server has sent one tag
naming it, and never where keys are required: afterwards a legacy tag is a
downgrade (``auth_unbound``).
"""

import hashlib
import hmac
import json
import socket

import pytest

from multicast_proxy import auth, frame, relay_config as config, replay
from multicast_proxy.replay import ReplayWindow

from test_daemon import (  # noqa: F401 (relays is a fixture)  # pylint: disable=unused-import
    free_udp_port, random_group, relays, wait_for, write_client, write_server)
from test_frame_auth import SECRET_1, WRONG_SECRET, write_keys

SERVER = "10.0.0.1"


def legacy_tag(secret, covered):
    """The tag of a release before 1.0.0: the HMAC of the frame alone (its docs/frame-format.md)."""
    return hmac.new(secret, covered, hashlib.sha256).digest()[:frame.TAG_LEN]


def make(secret, seq, legacy, server_ip=SERVER, group="239.1.1.1", payload=b"payload"):
    header = bytearray(frame.HEADER_LEN)
    frame.pack_header_into(header, frame.ip_to_int(group), 5000, frame.ip_to_int("10.0.0.9"), 4000, seq,
                           flags=frame.FLAG_TAG, key_id=1)
    covered = bytes(header) + payload
    return covered + (legacy_tag(secret, covered) if legacy else auth.compute_tag(secret, server_ip, covered))


def check(verifier, data, window, server_ip=SERVER):
    flags, _p, _t, key_id, _g, _gp, _s, _sp, _seq, _start, end = frame.parse_from(data, len(data))
    return verifier.check(memoryview(data), flags, key_id, end, auth.server_identity(server_ip), window)


def test_a_legacy_tag_is_accepted_until_the_server_sends_a_bound_one():
    verifier = auth.Verifier({"send_key_id": 1, "keys": {1: SECRET_1}})
    window = ReplayWindow()
    assert check(verifier, make(SECRET_1, 1, legacy=True), window) is None
    assert check(verifier, make(SECRET_1, 2, legacy=True), window) is None
    assert verifier.unbound == 2 and not window.bound
    assert check(verifier, make(WRONG_SECRET, 3, legacy=True), window) == "auth_bad"
    # The server was upgraded: one bound tag, and legacy tags from it are a downgrade from then on.
    assert check(verifier, make(SECRET_1, 4, legacy=False), window) is None
    assert window.bound
    assert check(verifier, make(SECRET_1, 5, legacy=True), window) == "auth_unbound"
    assert check(verifier, make(WRONG_SECRET, 6, legacy=True), window) == "auth_bad"
    assert verifier.unbound == 2
    # Another entry's window is its own: its server may still be old.
    assert check(verifier, make(SECRET_1, 7, legacy=True), ReplayWindow()) is None


def test_with_keys_required_a_legacy_tag_is_always_refused():
    verifier = auth.Verifier({"send_key_id": 1, "keys": {1: SECRET_1}}, legacy_allowed=False)
    window = ReplayWindow()
    assert check(verifier, make(SECRET_1, 1, legacy=True), window) == "auth_unbound"
    assert check(verifier, make(WRONG_SECRET, 2, legacy=True), window) == "auth_bad"
    assert check(verifier, make(SECRET_1, 3, legacy=False), window) is None
    assert verifier.unbound == 0
    assert verifier.as_dict()["legacy_allowed"] is False


def test_a_bound_tag_of_one_server_is_refused_under_another_address_in_either_mode():
    for allowed in (True, False):
        verifier = auth.Verifier({"send_key_id": 1, "keys": {1: SECRET_1}}, legacy_allowed=allowed)
        assert check(verifier, make(SECRET_1, 1, legacy=False, server_ip="10.0.0.2"), ReplayWindow()) == "auth_bad"


def test_the_counters_survive_a_key_reload():
    verifier = auth.Verifier({"send_key_id": 1, "keys": {1: SECRET_1}})
    check(verifier, make(SECRET_1, 1, legacy=True), ReplayWindow())
    assert auth.Verifier({"send_key_id": 1, "keys": {1: SECRET_1}}, verifier).unbound == 1


def test_a_server_with_legacy_tags_makes_the_tags_old_clients_verify():
    signer = auth.Signer({"send_key_id": 1, "keys": {1: SECRET_1}})
    for legacy in (True, False):
        buffer = bytearray(make(SECRET_1, 9, legacy=False))
        covered_len = len(buffer) - frame.TAG_LEN
        bound = signer.bound(SERVER, legacy=legacy)
        assert bound.sign_into(memoryview(buffer), covered_len) == len(buffer)
        covered = bytes(buffer[:covered_len])
        expected = legacy_tag(SECRET_1, covered) if legacy else auth.compute_tag(SECRET_1, SERVER, covered)
        assert bytes(buffer[covered_len:]) == expected


def test_the_server_setting_switches_the_tags_at_a_reload(tmp_path, relays):  # noqa: F811
    group, group_port, server_port = random_group(), free_udp_port(), free_udp_port()
    write_server(tmp_path, group, group_port, server_port, ["127.0.0.1"])
    path = tmp_path / "server_cfg.json.txt"
    cfg = json.loads(path.read_text())
    cfg["legacy_tags"] = True
    path.write_text(json.dumps(cfg))
    write_keys(tmp_path, 1, (1, SECRET_1))
    member = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    member.bind(("127.0.0.1", server_port))
    member.settimeout(10)
    server = relays(tmp_path, "server")
    server.wait_ready()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)

    def one_tag():
        sender.sendto(b"hello", (group, group_port))
        data = member.recv(70000)
        covered = data[:-frame.TAG_LEN]
        return data[-frame.TAG_LEN:], covered

    tag, covered = one_tag()
    assert tag == legacy_tag(SECRET_1, covered)
    del cfg["legacy_tags"]
    path.write_text(json.dumps(cfg))
    assert server.request("reload")["ok"]
    tag, covered = one_tag()
    assert tag == auth.compute_tag(SECRET_1, "127.0.0.1", covered)
    server.stop()
    member.close()
    sender.close()


def send_to_client(tmp_path, relays, frames, required=False, restart_frames=None):  # noqa: F811
    """Start a client with keys, send ``frames``, optionally restart it and send ``restart_frames``; the stats."""
    server_port = free_udp_port()
    group = random_group()
    write_client(tmp_path, [{"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group,
                             "group_port": 5000}])
    write_keys(tmp_path, 1, (1, SECRET_1))
    if required:
        (tmp_path / "auth_required").write_text("")
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    local.bind(("127.0.0.1", 0))
    results = []
    for batch in (frames, restart_frames):
        if batch is None:
            continue
        client = relays(tmp_path, "client")
        client.wait_ready()
        for seq, legacy in batch:
            local.sendto(make(SECRET_1, seq, legacy, server_ip="127.0.0.1", group=group), ("127.0.0.1", server_port))
        wait_for(lambda: client.request("stats")["entries"][0]["rx_packets"] + sum(
            client.request("stats")["drops"].values()) >= len(batch), "every frame counted")
        results.append(client.request("stats"))
        client.stop()
    local.close()
    return results


def test_a_client_latches_on_the_first_bound_tag_and_keeps_it_across_a_restart(tmp_path, relays):  # noqa: F811
    before, after = send_to_client(tmp_path, relays, [(1, True), (2, True), (3, False), (4, True)],
                                   restart_frames=[(5, True), (6, False)])
    assert before["entries"][0]["rx_packets"] == 3
    assert before["auth"]["accepted_unbound"] == 2
    assert {k: v for k, v in before["drops"].items() if v} == {"auth_unbound": 1}
    saved = replay.parse_state((tmp_path / replay.CLIENT_STATE_FILE).read_bytes())
    assert list(saved.values()) == [(6, True)]
    # After the restart the saved state still says the server sends bound tags: the legacy frame is refused.
    assert after["entries"][0]["rx_packets"] == 1
    assert {k: v for k, v in after["drops"].items() if v} == {"auth_unbound": 1}
    log = (tmp_path / "client_log.txt").read_text()
    assert "drop auth_unbound:" in log


def test_a_client_with_keys_required_refuses_every_legacy_tag(tmp_path, relays):  # noqa: F811
    (stats,) = send_to_client(tmp_path, relays, [(1, True), (2, True), (3, False)], required=True)
    assert stats["entries"][0]["rx_packets"] == 1
    assert {k: v for k, v in stats["drops"].items() if v} == {"auth_unbound": 2}
    assert stats["auth"]["legacy_allowed"] is False and stats["auth"]["accepted_unbound"] == 0


def test_legacy_tags_is_a_server_setting_of_the_schema():
    assert config.validate_server_config({"multi_group_array": [], "legacy_tags": True})["legacy_tags"] is True
    with pytest.raises(config.ConfigError):
        config.validate_server_config({"multi_group_array": [], "legacy_tags": "yes"})


def test_a_message_without_a_legacy_form_needs_a_tag_that_names_its_sender():
    """Subscriptions (issue 17) were never tagged the old way: a legacy tag on one is simply wrong."""
    verifier = auth.Verifier({"send_key_id": 1, "keys": {1: SECRET_1}})
    assert check(verifier, make(SECRET_1, 1, legacy=False), None) is None
    assert check(verifier, make(SECRET_1, 2, legacy=True), None) == "auth_bad"
    assert verifier.unbound == 0
