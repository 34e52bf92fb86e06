"""Replay windows that survive a client restart and an entry removed and added again (issue 14.6)."""

import json
import os
import socket
import stat

import pytest

from multicast_proxy import auth, frame, replay
from multicast_proxy.replay import ReplayWindow, WINDOW

from test_daemon import (  # noqa: F401 (relays is a fixture)  # pylint: disable=unused-import
    free_udp_port, random_group, relays, wait_for, write_client)
from test_frame_auth import SECRET_1, write_keys

RUN = 0x6553F100  # a server run's second: the upper half of its sequence numbers


def tagged(group, seq):
    header = bytearray(frame.HEADER_LEN)
    frame.pack_header_into(header, frame.ip_to_int(group), 5000, frame.ip_to_int("10.0.0.9"), 1, seq,
                           flags=frame.FLAG_TAG, key_id=1)
    covered = bytes(header) + b"x"
    return covered + auth.compute_tag(SECRET_1, "127.0.0.1", covered)


@pytest.fixture
def fleet(tmp_path, relays):  # noqa: F811
    server_port = free_udp_port()
    group = random_group()
    entry = {"server_ip": "127.0.0.1", "server_port": server_port, "group_ip": group, "group_port": 5000}
    write_client(tmp_path, [entry])
    write_keys(tmp_path, 1, (1, SECRET_1))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))

    def start():
        client = relays(tmp_path, "client")
        client.wait_ready()
        return client

    def send(client, seq, reason=None):
        """Send frame ``seq``; wait until it is counted, as accepted or as a drop for ``reason``."""
        before = client.request("stats")
        sender.sendto(tagged(group, seq), ("127.0.0.1", server_port))
        if reason is None:
            wait_for(lambda: client.request("stats")["entries"][0]["rx_packets"] ==
                     before["entries"][0]["rx_packets"] + 1, "frame %x accepted" % seq)
        else:
            wait_for(lambda: client.request("stats")["drops"][reason] == before["drops"][reason] + 1,
                     "frame %x dropped as %s" % (seq, reason))
    yield tmp_path, entry, start, send
    sender.close()


def test_window_resume_refuses_the_highest_and_everything_below():
    window = ReplayWindow()
    window.resume(1000)
    assert not window.admit(1000) and not window.admit(999) and not window.admit(1)
    assert window.admit(1001) and window.admit(1003) and window.admit(1002)
    window.resume(10)  # an older saved number never moves the window back
    assert window.highest == 1003 and not window.admit(1001)
    assert WINDOW == 1024


def test_after_a_client_restart_earlier_frames_and_earlier_runs_stay_refused(fleet):
    directory, _entry, start, send = fleet
    client = start()
    current = (RUN << 32) + 500
    send(client, current)
    client.stop()
    state_file = directory / replay.CLIENT_STATE_FILE
    assert stat.S_IMODE(os.stat(str(state_file)).st_mode) == 0o600
    assert list(json.loads(state_file.read_text())["highest"].values()) == [current]
    client = start()
    send(client, current, "replay")                  # the same frame, captured before the restart
    send(client, ((RUN - 1) << 32) + 900, "replay")  # a frame of the previous server run
    send(client, current + 1)                        # the stream goes on
    assert client.request("stats")["drops"]["replay"] == 2


def test_an_entry_removed_and_added_again_keeps_its_window(fleet):
    directory, entry, start, send = fleet
    client = start()
    send(client, (RUN << 32) + 7)
    write_client(directory, [])
    assert client.request("reload")["ok"]
    write_client(directory, [entry])
    assert client.request("reload")["ok"]
    send(client, (RUN << 32) + 7, "replay")
    send(client, (RUN << 32) + 8)


@pytest.mark.parametrize("content", [b"\xff\xfe garbage", b"[1, 2]", b'{"highest": {"a": -1}}', b'{"highest": 1}'])
def test_an_unusable_state_file_is_a_warning_and_is_rewritten(fleet, content):
    directory, _entry, start, send = fleet
    state_file = directory / replay.CLIENT_STATE_FILE
    state_file.write_bytes(content)
    client = start()
    send(client, (RUN << 32) + 3)
    client.stop()
    assert "replay state %s ignored" % state_file in (directory / "client_log.txt").read_text()
    assert list(replay.parse_state(state_file.read_bytes()).values()) == [((RUN << 32) + 3, True)]


def test_parse_state_names_what_is_wrong():
    for data, message in ((b"\xff", "not UTF-8"), (b"{", "not JSON"), (b"{}", '"highest"'),
                          (b'{"highest": {"k": true}}', "highest[\"k\"]"),
                          (b'{"highest": {"k": 18446744073709551616}}', "not a sequence number"),
                          (b" " * (replay.MAX_STATE_BYTES + 1), "larger than"),
                          (b'{"highest": {"k": 1}, "bound": ["j"]}', '"bound"'),
                          (b'{"highest": {"k": 1}, "bound": "k"}', '"bound"')):
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            replay.parse_state(data)
    assert replay.parse_state(replay.dump_state({"k": (5, False), "m": (7, True)})) == {"k": (5, False), "m": (7, True)}
    # A file of a release before 1.0.0 has no "bound" list: nothing is bound.
    assert replay.parse_state(b'{"highest": {"k": 5}}') == {"k": (5, False)}
