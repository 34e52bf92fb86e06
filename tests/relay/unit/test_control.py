"""The control protocol's wire format (control.py), without a daemon."""

import json
import os
import socket
import threading

import pytest

from multicast_proxy import control


def test_a_line_is_sorted_json_utf8_and_one_newline():
    assert control.encode({"ok": True, "cmd": "stats", "text": "\u00e9"}) == \
        b'{"cmd": "stats", "ok": true, "text": "\\u00e9"}\n'


@pytest.mark.parametrize("line, error", [
    (b"", "not a JSON object line"),
    (b"\xff\xfe{}", "not a JSON object line"),
    (b'{"cmd": "stats"', "not a JSON object line"),
    (b'["stats"]', 'unknown command null'),
    (b'{"command": "stats"}', 'unknown command null'),
    (b'{"cmd": "frobnicate"}', 'unknown command "frobnicate"; use ping, reload, stats, show'),
    (b'{"cmd": ["ping"]}', 'unknown command ["ping"]'),
])
def test_bad_requests_get_an_error_reply_naming_the_commands(line, error):
    cmd, reply = control.parse_request(line)
    assert cmd is None and reply["ok"] is False and error in reply["error"]
    assert "ping" in reply["error"]


def test_a_request_with_extra_keys_is_understood():
    assert control.parse_request(b'{"cmd": "ping", "from": "a newer client"}') == ("ping", None)


def test_read_line_stops_at_the_newline_and_at_the_limit():
    left, right = socket.socketpair()
    try:
        left.sendall(b'{"cmd": "ping"}\n{"cmd": "reload"}\n')
        assert control.read_line(right) == b'{"cmd": "ping"}'
        left.sendall(b"x" * 5000)
        assert control.read_line(right, limit=1000) == b"x" * 1000
    finally:
        left.close()
        right.close()


def test_the_listener_is_0600_whatever_the_umask(tmp_path):
    path = str(tmp_path / "server_sock")
    old = os.umask(0)
    try:
        listener = control.open_listener(path)
    finally:
        os.umask(old)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.umask(old) == old  # the umask was given back
    finally:
        listener.close()


def test_a_listener_on_a_taken_path_raises_and_leaks_nothing(tmp_path):
    path = str(tmp_path / "server_sock")
    first = control.open_listener(path)
    try:
        with pytest.raises(OSError):
            control.open_listener(path)
    finally:
        first.close()


def serve_once(listener, answer):
    def run():
        conn, _addr = listener.accept()
        with conn:
            request = control.read_line(conn)
            conn.sendall(answer(request))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("answer, message", [
    (b"", "closed the control connection without answering"),
    (b"[1, 2]\n", "reply is not a JSON object"),
    (b"{garbled\n", "Expecting property name"),
])
def test_request_reports_missing_and_garbled_replies(tmp_path, answer, message):
    path = str(tmp_path / "sock")
    listener = control.open_listener(path)
    listener.setblocking(True)
    thread = serve_once(listener, lambda _request: answer)
    try:
        with pytest.raises(ValueError, match=message):
            control.request(path, {"cmd": "ping"}, timeout=2)
    finally:
        thread.join(5)
        listener.close()


def test_request_round_trip_and_peer_credentials(tmp_path):
    path = str(tmp_path / "sock")
    listener = control.open_listener(path)
    listener.setblocking(True)
    seen = {}

    def run():
        conn, _addr = listener.accept()
        with conn:
            seen["uid"] = control.peer_uid(conn)
            seen["request"] = control.parse_request(control.read_line(conn))
            conn.sendall(control.encode({"ok": True, "pid": 1}))
    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert control.request(path, {"cmd": "ping"}, timeout=2) == {"ok": True, "pid": 1}
    finally:
        thread.join(5)
        listener.close()
    assert seen == {"uid": os.geteuid(), "request": ("ping", None)}
    assert control.peer_allowed(0) and control.peer_allowed(os.geteuid()) and not control.peer_allowed(65534)


def test_no_daemon_is_a_connection_error(tmp_path):
    with pytest.raises((FileNotFoundError, ConnectionError)):
        control.request(str(tmp_path / "absent"), {"cmd": "ping"})
    assert json.loads(control.encode(control.REFUSED)) == {"ok": False, "error": "the control socket is for root only"}
