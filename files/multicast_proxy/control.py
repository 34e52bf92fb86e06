"""The control protocol between the admin commands and a running daemon.

Wire format (version 1, the only one):

- Transport: a Unix stream socket, ``<conf dir>/server_sock`` or
  ``client_sock`` (names: ``relay_contract.SIDES``), created with mode 0600
  by the daemon (``open_listener``), so only root (or the daemon's own user)
  can connect.  The daemon also checks the peer's uid with ``SO_PEERCRED``
  on every connection: a loosened mode or directory does not open it up.
- One request per connection: the client writes one JSON object encoded as
  UTF-8 and terminated by ``\\n``, the daemon answers with one JSON object
  line (keys sorted) and closes the connection.  A line longer than
  ``MAX_LINE`` bytes is cut there (and then is not valid JSON).
- Request: ``{"cmd": NAME}`` with NAME one of ``COMMANDS``: ``ping``
  (``pid``, ``side``), ``reload`` (re-read config and keys; ``changes``),
  ``stats`` (counters) and ``show`` (the running config).  Other keys are
  ignored, so a newer client can talk to an older daemon.
- Reply: ``{"ok": true, ...}`` or ``{"ok": false, "error": TEXT}``, TEXT
  saying what is wrong and what to do.  A peer of another uid gets
  ``REFUSED`` after its request was read (an answer, not a broken pipe).
- Time: the daemon waits at most ``PEER_TIMEOUT`` for a request (a stuck
  peer cannot hold the data path longer); ``request`` waits
  ``CLIENT_TIMEOUT`` for the answer by default.

Nothing here knows what the commands do: the daemon (``daemon.py``) answers
them, the admin commands (``admin.py``) and the doctor ask.
"""

import json
import os
import socket
import struct

COMMANDS = ("ping", "reload", "stats", "show")
MAX_LINE = 1 << 20
PEER_TIMEOUT = 1.0
CLIENT_TIMEOUT = 5.0
REFUSED = {"ok": False, "error": "the control socket is for root only"}
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
_PEERCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid


def encode(message):
    """One protocol line: ``message`` as JSON (keys sorted), UTF-8, ``\\n``-terminated."""
    return json.dumps(message, sort_keys=True).encode("utf-8") + b"\n"


def read_line(sock, limit=MAX_LINE):
    """The first line ``sock`` sends (without its ``\\n``), at most about ``limit`` bytes; b"" at once-closed."""
    chunks = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > limit:
            break
    return b"".join(chunks).split(b"\n", 1)[0][:limit]


def parse_request(line):
    """(command, None) for a well-formed request line, or (None, error reply)."""
    try:
        message = json.loads(line.decode("utf-8"))
    except ValueError:
        # UnicodeDecodeError is a ValueError too.
        return None, {"ok": False, "error": "the request is not a JSON object line; send {\"cmd\": NAME}, NAME one "
                                            "of %s" % ", ".join(COMMANDS)}
    cmd = message.get("cmd") if isinstance(message, dict) else None
    if cmd not in COMMANDS:
        return None, {"ok": False, "error": "unknown command %s; use %s" % (json.dumps(cmd), ", ".join(COMMANDS))}
    return cmd, None


def peer_uid(conn):
    """The uid of the process at the other end of the Unix socket ``conn``."""
    return _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _PEERCRED.size))[1]


def peer_allowed(uid):
    """Root and the daemon's own user may use the socket."""
    return uid in (0, os.geteuid())


def open_listener(path, backlog=16):
    """The daemon's listening socket at ``path``: mode 0600 from its creation, non-blocking."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # No window in which others could connect: the umask applies at bind().
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    except OSError:
        listener.close()
        raise
    finally:
        os.umask(old_umask)
    listener.listen(backlog)
    listener.setblocking(False)
    return listener


def request(path, message, timeout=CLIENT_TIMEOUT):
    """Send ``message`` to the daemon at ``path``; its reply as a dict.

    Raises ``ConnectionError`` subclasses / FileNotFoundError when no daemon
    listens, PermissionError when the socket is not ours, OSError for other
    socket failures and ValueError for a reply that is missing or garbled.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(encode(message))
        reply = read_line(sock)
    finally:
        sock.close()
    if not reply:
        raise ValueError("the daemon closed the control connection without answering")
    answer = json.loads(reply.decode("utf-8"))
    if not isinstance(answer, dict):
        raise ValueError("the daemon's reply is not a JSON object")
    return answer
