"""Prometheus metrics of a daemon: the text exposition, its HTTP endpoint and its textfile.

The figures are the ones ``-P --json`` reports, read from the same objects
(``Group.as_dict``, ``Entry.as_dict``, ``Daemon.auth_status``); names and
labels follow Prometheus' conventions (docs/metrics.md lists them).

Nothing here may hold up the data path.  The endpoint is served by the
daemon's own event loop, without threads, and an exposition is produced in
*steps*: a generator yields a piece of text per bounded amount of work
(``GROUPS_PER_STEP`` groups, ``MEMBERS_PER_STEP`` members), and the loop
runs one step per round, between its reads of the data sockets.  A scrape
of a large config therefore takes longer, never the relay's datagrams.  The
textfile is written the same way, in steps, to a temporary file that
replaces the old one when it is complete (a collector never reads half).

Who can reach the endpoint: anyone who can connect to its address, which
is loopback unless configured otherwise.  It only answers GET and HEAD of
``/metrics`` (and ``/``), reads at most ``MAX_REQUEST`` bytes of a request,
holds at most ``MAX_CONNECTIONS`` connections (more are closed at once),
drops a connection that has not sent its request within ``REQUEST_DEADLINE``
seconds and any after ``CONNECTION_DEADLINE`` seconds, and renders at
most once per ``CACHE_SECONDS``: scrapes in between get the same body, so
a local user scraping in a loop cannot make the relay render all the time.
"""

import errno
import os
import platform
import socket
import time

from . import __version__, frame, relay_config as config

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXTFILE_INTERVAL = 15.0
BIND_RETRY = 30.0
MAX_CONNECTIONS = 4
MAX_REQUEST = 8192
CONNECTION_DEADLINE = 120.0
# A connection that has not sent its whole request by then is closed: idle
# connections cannot keep the MAX_CONNECTIONS slots for long.
REQUEST_DEADLINE = 10.0
# After an error answer the rest of the request is read and thrown away for
# at most this long before the close, so the peer gets the answer and not a
# reset for the unread bytes.
LINGER_SECONDS = 2.0
CACHE_SECONDS = 1.0
# A body larger than this is not kept for CACHE_SECONDS (a per-member
# exposition of 1024 x 1024 is hundreds of MiB); the next scrape renders again.
CACHE_MAX_BYTES = 8 << 20
GROUPS_PER_STEP = 64
MEMBERS_PER_STEP = 2048
# At most this much of a rendered body is handed to send() at once.
SEND_CHUNK = 256 << 10
LISTEN_BACKLOG = 16


# -- the exposition ------------------------------------------------------------

def escape(value):
    """A label value as the text format writes it between double quotes."""
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def labels(**pairs):
    """``{a="x",b="y"}`` with the pairs in name order ('' without pairs)."""
    if not pairs:
        return ""
    return "{" + ",".join('%s="%s"' % (name, escape(pairs[name])) for name in sorted(pairs)) + "}"


def _number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _header(name, kind, help_text):
    return "# HELP %s %s\n# TYPE %s %s\n" % (name, help_text, name, kind)


def _family(name, kind, help_text, samples):
    """One family of constant size: its header and ``samples`` (label text, value) as one piece."""
    return _header(name, kind, help_text) + "".join("%s%s %s\n" % (name, label_text, _number(value))
                                                    for label_text, value in samples)


def _sliced(rows, size):
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _row_families(rows, families):
    """Pieces of the families drawn from per-row figures: ``families`` is (name, kind, help, pick)
    with ``pick(row)`` a list of (label text, value); GROUPS_PER_STEP rows per piece."""
    for name, kind, help_text, pick in families:
        piece = _header(name, kind, help_text)
        for chunk in _sliced(rows, GROUPS_PER_STEP):
            piece += "".join("%s%s %s\n" % (name, label_text, _number(value))
                             for row in chunk for label_text, value in pick(row))
            yield piece
            piece = ""
        if piece:
            yield piece


def common_pieces(daemon, side):
    status = daemon.auth_status()
    reloads = daemon.reloads
    side_label = labels(side=side)
    yield "".join((
        _family("multicast_proxy_build_info", "gauge", "The relay's version and Python, as labels; always 1.",
                [(labels(side=side, version=__version__, python_version=platform.python_version()), 1)]),
        _family("multicast_proxy_start_time_seconds", "gauge", "When the daemon started, in seconds since the epoch.",
                [(side_label, daemon.started)]),
        _family("multicast_proxy_config_reloads_total", "counter",
                "Config reloads since the start, by result (failure: the previous config was kept, or the keys "
                "it requires are missing).",
                [(labels(side=side, result="success"), reloads["success"]),
                 (labels(side=side, result="failure"), reloads["failure"])]),
        _family("multicast_proxy_config_last_reload_timestamp_seconds", "gauge",
                "When the last reload happened, in seconds since the epoch; 0 before the first.",
                [(side_label, reloads["last_time"] or 0)]),
        _family("multicast_proxy_config_last_reload_success", "gauge",
                "1 when the last reload succeeded (or there was none yet), 0 when it failed.",
                [(side_label, reloads["last_ok"])]),
        _family("multicast_proxy_auth_required", "gauge",
                "1 when the auth_required marker makes a missing key file stop the relay.",
                [(side_label, status["required"])]),
        _family("multicast_proxy_auth_keys_loaded", "gauge", "1 while authentication keys are loaded.",
                [(side_label, status["keys"])]),
        _family("multicast_proxy_auth_refusing", "gauge",
                "1 when keys are required but cannot be loaded: the daemon relays nothing.",
                [(side_label, status["refusing"])]),
        _family("multicast_proxy_auth_key_load_failures_total", "counter",
                "Starts and reloads that found the required keys missing or unusable.",
                [(side_label, status["load_failures"])]),
        _family("multicast_proxy_control_refused_total", "counter",
                "Control-socket connections refused because they came from another user.",
                [(side_label, daemon.control_refused)]),
        _family("multicast_proxy_metrics_render_seconds", "gauge",
                "Processing time the previous exposition took to render (its steps, not the waits between them).",
                [(side_label, daemon.metrics.last_render_seconds)]),
    ))


_SERVER_GROUP_FAMILIES = (
    ("multicast_proxy_server_group_info", "gauge", "A configured group, its ports, interface and mode; always 1.",
     lambda r: [(r["info"], 1)]),
    ("multicast_proxy_server_group_up", "gauge", "1 when the group is joined (or captured), 0 when it is in error.",
     lambda r: [(r["label"], r["up"])]),
    ("multicast_proxy_server_group_members", "gauge", "Members the group's datagrams are copied to.",
     lambda r: [(r["label"], r["members"])]),
    ("multicast_proxy_server_received_datagrams_total", "counter",
     "Datagrams of the group picked up from the local sender and relayed.", lambda r: [(r["label"], r["rx_packets"])]),
    ("multicast_proxy_server_received_bytes_total", "counter", "Payload bytes of those datagrams.",
     lambda r: [(r["label"], r["rx_bytes"])]),
    ("multicast_proxy_server_dropped_datagrams_total", "counter", "Datagrams of the group not relayed, by reason.",
     lambda r: r["drops"]),
    ("multicast_proxy_server_sent_copies_total", "counter",
     "Copies sent to the group's members, all members together (members that left included).",
     lambda r: [(r["label"], r["copies"])]),
    ("multicast_proxy_server_sent_bytes_total", "counter", "Payload bytes of those copies.",
     lambda r: [(r["label"], r["sent_bytes"])]),
    ("multicast_proxy_server_send_errors_total", "counter",
     "Copies the kernel refused to send, all members together.", lambda r: [(r["label"], r["errors"])]),
)

_SERVER_MEMBER_FAMILIES = (
    ("multicast_proxy_server_member_sent_copies_total", "counter", "Copies sent to one member.", "tx_packets"),
    ("multicast_proxy_server_member_sent_bytes_total", "counter", "Payload bytes sent to one member.", "tx_bytes"),
    ("multicast_proxy_server_member_send_errors_total", "counter", "Copies to one member the kernel refused.",
     "send_errors"),
)


def _server_row(group):
    group_label = labels(group=group.group_ip)
    copies, sent_bytes, errors = group.totals()
    return {
        "label": group_label,
        "info": labels(group=group.group_ip, group_port=group.group_port, server_port=group.server_port,
                       interface=group.interface_label, mode=group.mode),
        "up": 0 if group.error else 1, "members": len(group.members),
        "rx_packets": group.rx_packets, "rx_bytes": group.rx_bytes,
        "drops": [(labels(group=group.group_ip, reason=reason), count) for reason, count in sorted(group.drops.items())],
        "copies": copies, "sent_bytes": sent_bytes, "errors": errors,
    }


def server_pieces(daemon, detail):
    """The server's exposition, in steps (``detail`` "member" adds the per-member families)."""
    groups = [daemon.groups[ip] for ip in sorted(daemon.groups, key=frame.ip_to_int)]
    yield _family("multicast_proxy_server_groups", "gauge", "Groups in the running config.", [("", len(groups))])
    if daemon.signer is not None:
        yield _family("multicast_proxy_server_auth_send_key_id", "gauge", "The key id frames are tagged with.",
                      [("", daemon.signer.key_id)])
    rows = []
    for chunk in _sliced(groups, GROUPS_PER_STEP):
        rows.extend(_server_row(group) for group in chunk)
        yield ""
    yield from _row_families(rows, _SERVER_GROUP_FAMILIES)
    yield from _subscription_pieces(daemon.subscriptions)
    if detail != "member":
        return
    for name, help_text, key in ((f[0], f[2], f[3]) for f in _SERVER_MEMBER_FAMILIES):
        piece = _header(name, "counter", help_text)
        for group in groups:
            members = group.members
            for start in range(0, len(members), MEMBERS_PER_STEP):
                piece += "".join("%s%s %d\n" % (name, labels(group=group.group_ip, member=ip),
                                                group.member_dict(ip)[key])
                                 for ip in members[start:start + MEMBERS_PER_STEP])
                yield piece
                piece = ""
        if piece:
            yield piece


def _subscription_pieces(subscriptions):
    """Dynamic members (docs/dynamic-membership.md): only while some group takes subscriptions."""
    dynamic = [subscriptions.groups[addr] for addr in sorted(subscriptions.groups)]
    if not dynamic:
        return
    yield _family("multicast_proxy_server_dynamic_members", "gauge", "Members of the group that subscribed.",
                  [(labels(group=group.group_ip), len(group.members)) for group in dynamic])
    yield _family("multicast_proxy_server_subscription_events_total", "counter",
                  "Subscription events of the group: joins, refreshes, leaves, expiries, challenges, acks.",
                  [(labels(group=group.group_ip, event=event), count) for group in dynamic
                   for event, count in sorted(group.events.items())])
    yield _family("multicast_proxy_server_subscription_refusals_total", "counter",
                  "Subscription messages refused, by reason.",
                  [(labels(reason=reason), count) for reason, count in sorted(subscriptions.refusals.items())])


_CLIENT_ENTRY_FAMILIES = (
    ("multicast_proxy_client_received_frames_total", "counter", "Frames received from the entry's server.",
     "rx_packets"),
    ("multicast_proxy_client_received_bytes_total", "counter", "Payload bytes of those frames.", "rx_bytes"),
    ("multicast_proxy_client_delivered_datagrams_total", "counter",
     "Datagrams re-delivered to the local group.", "delivered_packets"),
    ("multicast_proxy_client_delivered_bytes_total", "counter", "Payload bytes re-delivered.", "delivered_bytes"),
    ("multicast_proxy_client_lost_frames", "gauge",
     "Frames missing from the server's sequence; falls when a late frame fills a gap.", "lost"),
    ("multicast_proxy_client_duplicate_frames_total", "counter", "Frames received twice (not re-delivered).",
     "duplicates"),
    ("multicast_proxy_client_reordered_frames_total", "counter", "Frames that arrived after a later one.",
     "reordered"),
)


def client_pieces(daemon):
    """The client's exposition, in steps."""
    entries = list(daemon.entries.values())
    yield "".join((
        _family("multicast_proxy_client_entries", "gauge", "Entries (server, group) in the running config.",
                [("", len(entries))]),
        _family("multicast_proxy_client_dropped_frames_total", "counter",
                "Frames not re-delivered, by reason (auth_* and replay: authentication refused them).",
                [(labels(reason=reason), count) for reason, count in sorted(daemon.drops.items())]),
        _family("multicast_proxy_client_unverified_frames_total", "counter",
                "Tagged frames delivered unchecked because this client has no keys.", [("", daemon.unverified)]),
        _family("multicast_proxy_client_listen_errors", "gauge", "Relay ports the client cannot listen on.",
                [("", len(daemon.listen_errors))]),
    ))
    verifier = daemon.verifier
    if verifier is not None:
        accepted = verifier.as_dict()["accepted_by_key"]
        yield _family("multicast_proxy_client_auth_accepted_frames_total", "counter",
                      "Frames whose tag was valid, by key id.",
                      [(labels(key_id=key_id), count) for key_id, count in sorted(accepted.items())])
    rows = []
    for chunk in _sliced(entries, GROUPS_PER_STEP):
        for entry in chunk:
            figures = entry.as_dict()
            figures["label"] = labels(server=entry.server_ip, server_port=entry.server_port, group=entry.group_ip,
                                      group_port=entry.group_port)
            rows.append(figures)
        yield ""
    families = [(name, kind, help_text, _entry_samples(key)) for name, kind, help_text, key in _CLIENT_ENTRY_FAMILIES]
    yield from _row_families(rows, families)


def _entry_samples(key):
    """The samples of one entry family: the row's labels and its figure under ``key``."""
    return lambda row: [(row["label"], row[key])]


def pieces(daemon):
    """Every piece of ``daemon``'s exposition, in steps."""
    yield from common_pieces(daemon, daemon.side)
    if daemon.side == "server":
        side_pieces = server_pieces(daemon, daemon.metrics.detail)
    else:
        side_pieces = client_pieces(daemon)
    yield from side_pieces


def render(daemon):
    """The whole exposition at once (tests, ``--check``); the daemon itself renders in steps."""
    return "".join(pieces(daemon))


class _TimedPieces:
    """Runs an exposition's steps and adds up the time they took; ``done`` calls back with the total."""

    def __init__(self, daemon, done):
        self._pieces = pieces(daemon)
        self._done = done
        self.seconds = 0.0

    def step(self):
        """The next piece ('' for a step with no text yet), or None when the exposition is complete."""
        start = time.perf_counter()
        try:
            piece = next(self._pieces)
        except StopIteration:
            self.seconds += time.perf_counter() - start
            self._done(self.seconds)
            return None
        self.seconds += time.perf_counter() - start
        return piece


# -- the HTTP endpoint -----------------------------------------------------------

def _response_head(status, content_type, extra=""):
    return ("HTTP/1.1 %s\r\nContent-Type: %s\r\nConnection: close\r\n%s\r\n" % (status, content_type, extra)).encode(
        "ascii")


_INDEX = (b"multicast relay metrics: see /metrics\n")


class _Connection:
    """One scrape: read the request, then send the answer a step at a time."""

    def __init__(self, endpoint, sock, now):
        self.endpoint = endpoint
        self.sock = sock
        self.opened = now
        self.request = b""
        self.writing = False
        self.pending = b""
        self.source = None      # iterator of bytes once the answer is being sent
        self.linger = False     # an error answer: drain the request after it (see LINGER_SECONDS)
        self.draining_since = None

    def readable(self, sock):
        if self.draining_since is not None:
            self.drain(sock)
            return
        if self.writing:
            self.writable(sock)
            return
        try:
            data = sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.endpoint.drop(self)
            return
        if not data:
            self.endpoint.drop(self)
            return
        self.request += data
        end = self.request.find(b"\r\n\r\n")
        if end < 0:
            end = self.request.find(b"\n\n")
        if end < 0:
            if len(self.request) >= MAX_REQUEST:
                self.answer_error("431 Request Header Fields Too Large", "request too large\n")
            return
        self.answer(self.request[:end])

    def answer(self, head):
        line = head.split(b"\n", 1)[0].strip()
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.answer_error("400 Bad Request", "expected an HTTP/1.x request line\n")
            return
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self.answer_error("405 Method Not Allowed", "only GET and HEAD\n", "Allow: GET, HEAD\r\n")
            return
        if target == b"/metrics":
            head_bytes = _response_head("200 OK", CONTENT_TYPE)
            self.start(head_bytes, None if method == b"HEAD" else self.endpoint.body_source())
        elif target == b"/":
            self.start(_response_head("200 OK", "text/plain; charset=utf-8"),
                       None if method == b"HEAD" else iter((_INDEX,)))
        else:
            self.answer_error("404 Not Found", "not found; the metrics are at /metrics\n")

    def answer_error(self, status, text, extra=""):
        self.linger = True
        self.start(_response_head(status, "text/plain; charset=utf-8", extra), iter((text.encode("ascii"),)))

    def finished(self):
        """The answer is out: close, or after an error answer stop sending and drain what the peer still sends."""
        if not self.linger:
            self.endpoint.drop(self)
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.endpoint.drop(self)
            return
        self.draining_since = time.monotonic()
        self.endpoint.want_read(self)

    def drain(self, sock):
        try:
            data = sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.endpoint.drop(self)

    def start(self, head_bytes, source):
        self.writing = True
        self.pending = head_bytes
        self.source = source
        self.endpoint.want_write(self)
        self.writable(self.sock)

    def writable(self, _sock):
        """Send what is pending; when it is all out, run one more step of the answer."""
        if not self.pending:
            piece = next(self.source, None) if self.source is not None else None
            if piece is None:
                self.finished()
                return
            self.pending = piece
            if not piece:
                return
        try:
            sent = self.sock.send(self.pending[:SEND_CHUNK])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.endpoint.drop(self)
            return
        self.pending = self.pending[sent:]


class Metrics:
    """The endpoint, the textfile and what ``-P`` says about them, for one daemon."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.listen = None          # "ADDRESS:PORT" wanted, or None
        self.listener = None
        self.error = None           # why the endpoint is not serving
        self.detail = "group"
        self.textfile = None
        self.textfile_error = None
        self.textfile_written = 0.0
        self._textfile_ours = None  # the file this run wrote: removed when the setting moves or the daemon stops
        self.scrapes = 0
        self.refused = 0            # connections closed at once: MAX_CONNECTIONS were open
        self.last_render_seconds = 0.0
        self._connections = {}      # fd -> _Connection
        self._next_bind = 0.0
        self._next_textfile = 0.0
        self._cache = None          # (monotonic time, body bytes)
        self._textfile_job = None

    # -- configuration -----------------------------------------------------
    def configure(self, settings):
        """Apply the metrics settings (dict with metrics_listen, metrics_textfile, metrics_detail);
        returns what changed, as text for a reload's "changes", or None."""
        changed = []
        detail = settings.get("metrics_detail") or "group"
        if detail != self.detail:
            self.detail = detail
            self._cache = None
            changed.append("detail %s" % detail)
        listen = settings.get("metrics_listen") or None
        if listen != self.listen or (listen is not None and self.listener is None):
            was = self.listen
            self.close_endpoint()
            self.listen = listen
            if listen is not None:
                self._bind(first=True)
                where = "http://%s/metrics" % listen if self.error is None else "NOT serving: %s" % self.error
                changed.append("endpoint " + where)
            elif was is not None:
                changed.append("endpoint off")
        textfile = settings.get("metrics_textfile") or None
        if textfile != self.textfile:
            self._textfile_job = None
            self._retire_textfile()
            self.textfile = textfile
            self.textfile_error = None
            self._next_textfile = 0.0
            changed.append("textfile %s" % (textfile or "off"))
        return ", ".join(changed) or None

    def _bind(self, first=False):
        address, port = config.split_listen(self.listen)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            was = self.error
            self.error = "cannot listen on %s: %s" % (self.listen, exc.strerror or exc)
            if exc.errno == errno.EADDRINUSE:
                self.error += " (another program has the port: pick another one, or stop it)"
            elif exc.errno == errno.EADDRNOTAVAIL:
                self.error += " (the address is not on this host: use one of its addresses, 127.0.0.1 or 0.0.0.0)"
            self._next_bind = time.monotonic() + BIND_RETRY
            if first or self.error != was:
                self.daemon.drop_log.error("metrics_bind", 2, "metrics: %s; the relay goes on without the endpoint, "
                                           "next attempt in %d s", self.error, BIND_RETRY)
            return
        self.listener = sock
        if self.error is not None:
            self.daemon.log.info("metrics: serving on http://%s/metrics after an earlier failure", self.listen)
        self.error = None
        self.daemon.watch(sock, self._accept)

    def close_endpoint(self):
        for connection in list(self._connections.values()):
            self.drop(connection)
        if self.listener is not None:
            try:
                self.daemon.unwatch(self.listener)
            except (KeyError, ValueError, OSError):
                pass
            self.listener.close()
            self.listener = None
        self.error = None

    def close(self):
        self.close_endpoint()
        self.listen = None
        self._textfile_job = None
        self._retire_textfile()

    def _retire_textfile(self):
        """Remove the file this run wrote: a collector must not go on exporting figures nobody updates."""
        path, self._textfile_ours = self._textfile_ours, None
        if path is None:
            return
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self.daemon.log.warning("metrics: cannot remove %s, which is no longer written: %s",
                                        path, exc.strerror or exc)

    # -- serving ---------------------------------------------------------------
    def _accept(self, listener):
        for _attempt in range(MAX_CONNECTIONS + 1):
            try:
                sock, _peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.daemon.drop_log.drop("metrics_accept", "cannot accept a metrics connection: %s"
                                          % (exc.strerror or exc))
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            connection = _Connection(self, sock, time.monotonic())
            self._connections[sock.fileno()] = connection
            self.daemon.watch(sock, connection.readable)

    def want_write(self, connection):
        self.daemon.modify(connection.sock, write=True)

    def want_read(self, connection):
        self.daemon.modify(connection.sock, write=False)

    def drop(self, connection):
        fd = connection.sock.fileno()
        if self._connections.pop(fd, None) is None:
            return
        try:
            self.daemon.unwatch(connection.sock)
        except (KeyError, ValueError, OSError):
            pass
        connection.sock.close()

    def body_source(self):
        """The pieces (bytes) of a /metrics body: the cached one, or a new rendering in steps."""
        self.scrapes += 1
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < CACHE_SECONDS:
            body = self._cache[1]
            return (body[start:start + SEND_CHUNK] for start in range(0, len(body), SEND_CHUNK))
        return self._rendering()

    def _rendering(self):
        job = _TimedPieces(self.daemon, self._rendered)
        keep = []
        size = 0
        while True:
            piece = job.step()
            if piece is None:
                break
            data = piece.encode("utf-8")
            size += len(data)
            if keep is not None:
                keep.append(data)
                if size > CACHE_MAX_BYTES:
                    keep = None
            yield data
        if keep is not None:
            self._cache = (time.monotonic(), b"".join(keep))

    def _rendered(self, seconds):
        self.last_render_seconds = seconds

    # -- the loop's housekeeping ---------------------------------------------------
    def tick(self, now=None):
        """About once a second: retry the bind, close stale connections, start a textfile write."""
        now = time.monotonic() if now is None else now
        if self.listen is not None and self.listener is None and now >= self._next_bind:
            self._bind()
        for connection in list(self._connections.values()):
            if (now - connection.opened > CONNECTION_DEADLINE
                    or (not connection.writing and now - connection.opened > REQUEST_DEADLINE)
                    or (connection.draining_since is not None and now - connection.draining_since > LINGER_SECONDS)):
                self.drop(connection)
        if self.textfile is not None and self._textfile_job is None and now >= self._next_textfile:
            self._next_textfile = now + TEXTFILE_INTERVAL
            self._textfile_job = self._write_textfile(self.textfile)

    def busy(self):
        """True while a textfile write has steps left (the loop then polls without waiting)."""
        return self._textfile_job is not None

    def step(self):
        """Run one step of the textfile write."""
        job = self._textfile_job
        if job is None:
            return
        if next(job, None) is None and self._textfile_job is job:
            self._textfile_job = None

    def _write_textfile(self, path):
        directory = os.path.dirname(path)
        temp = os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(path), os.urandom(6).hex()))
        fd = None
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                         0o644)
            os.fchmod(fd, 0o644)    # whatever the umask: the collector runs as another user
            job = _TimedPieces(self.daemon, lambda seconds: None)
            while True:
                piece = job.step()
                if piece is None:
                    break
                data = piece.encode("utf-8")
                while data:
                    written = os.write(fd, data)
                    data = data[written:]
                yield True
            os.fsync(fd)
            os.close(fd)
            fd = None
            os.rename(temp, path)
            temp = None
            try:
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            except OSError:
                pass    # the file is in place; only its durability across a crash is weaker
            if self.textfile_error is not None:
                self.daemon.log.info("metrics: %s written again after an earlier failure", path)
            self.textfile_error = None
            self.textfile_written = time.time()
            self._textfile_ours = path
        except OSError as exc:
            was = self.textfile_error
            self.textfile_error = "cannot write %s: %s" % (path, exc.strerror or exc)
            if self.textfile_error != was:
                self.daemon.drop_log.error("metrics_textfile", 2, "metrics: %s; make %s writable for the daemon "
                                           "(the roles add it to the unit's ReadWritePaths); next attempt in %d s",
                                           self.textfile_error, directory, TEXTFILE_INTERVAL)
        finally:
            if fd is not None:
                os.close(fd)
            if temp is not None:
                try:
                    os.unlink(temp)
                except OSError:
                    pass

    def status(self):
        """What ``-P --json`` says about the metrics (``metrics`` of the stats reply)."""
        return {"listen": self.listen, "serving": self.listener is not None, "error": self.error,
                "detail": self.detail, "textfile": self.textfile, "textfile_error": self.textfile_error,
                "textfile_written": int(self.textfile_written), "scrapes": self.scrapes,
                "refused_connections": self.refused, "last_render_seconds": self.last_render_seconds}
