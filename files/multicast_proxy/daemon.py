"""What the server and client daemons share: paths, logging, systemd
notification, the control socket, signals and the event loop.

A daemon subclass provides ``load_config_text``/``apply_config`` (diff-apply),
``stats``/``show`` and ``close_data_sockets``; this module owns everything
else so that both sides behave the same for an operator.
"""

import errno
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import time

from . import auth, relay_config as config

DEFAULT_CONF_DIR = "/etc/multicast"
CONTROL_TIMEOUT = 5.0
# Repeated drop messages (a misbehaving sender can cause thousands a second)
# are logged once per reason per this many seconds, with a count.
DROP_LOG_INTERVAL = 60.0
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
_PEERCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid

SIDES = {
    "server": {"config": config.SERVER_CONFIG_NAME, "log": "server_log.txt", "socket": "multis.sock",
               "program": "multis_admin"},
    "client": {"config": config.CLIENT_CONFIG_NAME, "log": "client_log.txt", "socket": "multic.sock",
               "program": "multic_admin"},
}


class DaemonError(Exception):
    """The daemon cannot start; the message says why and what to do.

    ``exit_code`` follows the table in docs/relay.md: 2 for an invalid config
    file, 1 for everything else.
    """

    def __init__(self, message, exit_code=1):
        self.exit_code = exit_code
        super(DaemonError, self).__init__(message)


def conf_dir():
    return os.environ.get("MULTICAST_CONF_DIR") or DEFAULT_CONF_DIR


def side_path(side, what, directory=None):
    return os.path.join(directory or conf_dir(), SIDES[side][what])


def setup_logging(side, directory):
    """Log to <conf_dir>/<side>_log.txt and to stderr (journald under systemd)."""
    logger = logging.getLogger("multicast_proxy.%s" % side)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(side_path(side, "log", directory))
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file_handler)
    stream_handler = logging.StreamHandler(sys.stderr)
    stream_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(stream_handler)
    return logger


class DropLog:
    """Logs a drop reason at most once per interval, reporting how many were suppressed."""

    def __init__(self, logger, interval=DROP_LOG_INTERVAL, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last = {}
        self._suppressed = {}

    def drop(self, reason, detail):
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        suppressed = self._suppressed.pop(reason, 0)
        self._last[reason] = now
        more = " (%d more %s drops since the last message)" % (suppressed, reason) if suppressed else ""
        self.logger.warning("drop %s: %s%s", reason, detail, more)
        return True


def sd_notify(message):
    """Send a state line to systemd's $NOTIFY_SOCKET; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.sendto(message.encode("utf-8"), address)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def request(side, message, directory=None, timeout=CONTROL_TIMEOUT):
    """Send one control request; returns the reply dict.

    Raises ``ConnectionError`` subclasses / FileNotFoundError when no daemon
    listens, OSError for other socket failures, ValueError for a garbled reply.
    """
    path = side_path(side, "socket", directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(json.dumps(message).encode("utf-8") + b"\n")
        reply = _read_line(sock)
    finally:
        sock.close()
    if not reply:
        raise ValueError("the daemon closed the control connection without answering")
    return json.loads(reply.decode("utf-8"))


def daemon_running(side, directory=None):
    try:
        return bool(request(side, {"cmd": "ping"}, directory, timeout=2.0).get("ok"))
    except (OSError, ValueError):
        return False


def _read_line(sock, limit=1 << 20):
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
    return b"".join(chunks).split(b"\n", 1)[0]


class Daemon:
    """Event loop, control socket, signals and reload for one side."""

    side = None  # "server" or "client", set by subclasses

    def __init__(self, directory=None):
        self.directory = directory or conf_dir()
        self.config_path = side_path(self.side, "config", self.directory)
        self.socket_path = side_path(self.side, "socket", self.directory)
        # epoll used directly: the selectors module's per-event Python work
        # (key lookup, result list) lies between a datagram's arrival and its
        # relay; at light load, on a cold cache, it cost about 4 us of latency.
        self._epoll = select.epoll()
        self._handlers = {}     # fd -> (callback, socket)
        self.log = None
        self.drop_log = None
        self.cfg = None
        self.started = time.time()
        self.stopping = False
        self._control = None
        self.control_refused = 0  # connections from other users than root (or our own uid)
        self._wakeup_r = None
        self._wakeup_w = None
        self._pending_signals = []
        self._previous_handlers = {}

    # -- subclass interface -------------------------------------------------
    def load_config_text(self, text):
        raise NotImplementedError

    def apply_config(self, cfg):
        """Make the sockets match ``cfg``; returns a dict describing the changes."""
        raise NotImplementedError

    def stats(self):
        raise NotImplementedError

    def show(self):
        raise NotImplementedError

    def close_data_sockets(self):
        raise NotImplementedError

    def apply_auth(self, keys):
        """Start tagging (server) or checking (client) with ``keys``; None turns authentication off."""
        raise NotImplementedError

    def tick(self):
        """Called about once a second."""

    # -- lifecycle ----------------------------------------------------------
    def read_config(self):
        return self.load_config_text(config.read_config_text(self.config_path))

    def read_auth_keys(self):
        """The validated key file, or None without one; raises config.ConfigError (which never holds a secret)."""
        return auth.read_key_file(auth.key_file_path(self.directory))

    def start(self):
        """Check for another instance, load the config, open every socket."""
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, 0o755)
        self.log = setup_logging(self.side, self.directory)
        self.drop_log = DropLog(self.log)
        self._open_control_socket()
        try:
            cfg = self.read_config()
            keys = self.read_auth_keys()
        except config.ConfigError as exc:
            self._close_control_socket()
            raise DaemonError("%s; fix the file, the daemon did not start" % exc, exit_code=2)
        except OSError as exc:
            self._close_control_socket()
            raise DaemonError("cannot read %s: %s" % (self.config_path, exc.strerror))
        self._install_signals()
        self.apply_auth(keys)
        self.log.info("authentication: %s", auth.describe(keys))
        changes = self.apply_config(cfg)
        self.cfg = cfg
        self.log.info("%s started (pid %d, config %s): %s", SIDES[self.side]["program"], os.getpid(),
                      self.config_path, json.dumps(changes, sort_keys=True))
        sd_notify("READY=1\nSTATUS=%s" % self.status_line())

    def status_line(self):
        return "running"

    def watch(self, sock, callback):
        """Call ``callback(sock)`` from the loop whenever ``sock`` is readable."""
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = (callback, sock)

    def unwatch(self, sock):
        fd = sock.fileno()
        del self._handlers[fd]
        self._epoll.unregister(fd)

    def run(self):
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        next_tick = time.monotonic() + 1.0
        poll = self._epoll.poll
        handlers = self._handlers
        while not self.stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            for fd, _events in poll(timeout):
                # Looked up now, not when poll returned: an earlier callback of
                # this round (a reload) may have closed the socket.
                handler = handlers.get(fd)
                if handler is not None:
                    handler[0](handler[1])
            self._handle_signals()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 1.0
                try:
                    self.tick()
                except Exception as exc:  # pylint: disable=broad-except
                    # Housekeeping must never end a daemon that still relays.
                    self.drop_log.drop("tick", "housekeeping failed, the relay goes on: %s: %s" % (type(exc).__name__, exc))
                    self.log.debug("housekeeping failure", exc_info=True)
        return 0

    def shutdown(self):
        sd_notify("STOPPING=1")
        self.close_data_sockets()
        self._close_control_socket()
        self._restore_signals()
        self._handlers.clear()
        self._epoll.close()
        if self.log:
            if self.cfg is not None:
                self.log.info("%s stopped", SIDES[self.side]["program"])
            for handler in list(self.log.handlers):
                self.log.removeHandler(handler)
                handler.close()

    def reload(self, origin):
        """Re-read the file and diff-apply it; an invalid file keeps the running config."""
        sd_notify("RELOADING=1")
        try:
            try:
                cfg = self.read_config()
                keys = self.read_auth_keys()
            except (config.ConfigError, OSError) as exc:
                self.log.error("reload (%s) refused, still running the previous config: %s", origin, exc)
                return {"ok": False, "error": "%s; the daemon keeps running the previous config and keys" % exc}
            # Keys first: a group added by this reload must not send one untagged frame.
            self.apply_auth(keys)
            changes = self.apply_config(cfg)
            changes["auth"] = auth.describe(keys)
            self.cfg = cfg
            self.log.info("reload (%s) applied: %s", origin, json.dumps(changes, sort_keys=True))
            return {"ok": True, "changes": changes}
        finally:
            sd_notify("READY=1\nSTATUS=%s" % self.status_line())

    # -- control socket -------------------------------------------------------
    def _open_control_socket(self):
        if os.path.exists(self.socket_path) or os.path.islink(self.socket_path):
            if daemon_running(self.side, self.directory):
                raise DaemonError("another %s -R is already running with config directory %s (it answers on %s); "
                                  "stop it first (service %s stop)"
                                  % (SIDES[self.side]["program"], self.directory, self.socket_path,
                                     "multis_monitord" if self.side == "server" else "multic_monitord"))
            self.log.info("removing stale control socket %s", self.socket_path)
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The socket is created 0600 from the start: no window where others could connect.
        old_umask = os.umask(0o177)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old_umask)
        listener.listen(16)
        listener.setblocking(False)
        self._control = listener
        self.watch(listener, self._accept_control)

    def _close_control_socket(self):
        if self._control is None:
            return
        try:
            self.unwatch(self._control)
        except (KeyError, ValueError, OSError):
            pass
        self._control.close()
        self._control = None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def _accept_control(self, listener):
        try:
            conn, _addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        # The admin command sends its request at once; a stuck peer cannot hold
        # the data path for longer than this.
        conn.settimeout(1.0)
        try:
            # The socket's mode already keeps others out; this holds even if
            # someone loosened the mode or the directory by hand.
            peer_uid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _PEERCRED.size))[1]
            line = _read_line(conn)
            if peer_uid not in (0, os.geteuid()):
                # Read the request first so the peer gets the answer, not a broken pipe.
                self.control_refused += 1
                conn.sendall(b'{"error": "the control socket is for root only", "ok": false}\n')
                self.drop_log.drop("control_refused", "control connection from uid %d refused" % peer_uid)
                return
            reply = self._dispatch(line)
            conn.sendall(json.dumps(reply, sort_keys=True).encode("utf-8") + b"\n")
        except OSError as exc:
            self.log.warning("control connection failed: %s", exc)
        finally:
            conn.close()

    def _dispatch(self, line):
        try:
            message = json.loads(line.decode("utf-8"))
            cmd = message.get("cmd") if isinstance(message, dict) else None
        except ValueError:
            return {"ok": False, "error": "request is not a JSON object line"}
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "side": self.side}
        if cmd == "reload":
            return self.reload("control socket")
        if cmd == "stats":
            return dict(self.stats(), ok=True, control_refused=self.control_refused)
        if cmd == "show":
            return dict(self.show(), ok=True)
        return {"ok": False, "error": "unknown command %r; use ping, reload, stats or show" % (cmd,)}

    # -- signals --------------------------------------------------------------
    def _install_signals(self):
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        signal.set_wakeup_fd(self._wakeup_w.fileno())
        self.watch(self._wakeup_r, self._drain_wakeup)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self):
        if self._wakeup_r is None:
            return
        signal.set_wakeup_fd(-1)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        self.unwatch(self._wakeup_r)
        self._wakeup_r.close()
        self._wakeup_w.close()
        self._wakeup_r = self._wakeup_w = None

    def _on_signal(self, signum, _frame):
        self._pending_signals.append(signum)

    def _drain_wakeup(self, sock):
        try:
            while sock.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _handle_signals(self):
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            if signum == signal.SIGHUP:
                self.reload("SIGHUP")
            else:
                self.log.info("received %s, shutting down", signal.Signals(signum).name)
                self.stopping = True


# SO_RCVBUFFORCE / SO_SNDBUFFORCE (Linux values) let root exceed rmem_max/wmem_max:
# a burst of small datagrams overflows the default 208 KiB long before the CPU is busy.
_FORCED = {socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", 33),
           socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", 32)}


def set_buffer(sock, option, size):
    """Ask for a big socket buffer; without privilege the kernel caps it at rmem_max/wmem_max."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _FORCED[option], size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL, errno.ENOPROTOOPT):
            raise
    sock.setsockopt(socket.SOL_SOCKET, option, size)


def run_daemon(daemon):
    """Start, serve, shut down; returns an exit code (messages go to stderr/log)."""
    try:
        daemon.start()
    except (DaemonError, OSError) as exc:
        if isinstance(exc, DaemonError):
            message, code = str(exc), exc.exit_code
        else:
            message, code = "cannot start with config directory %s: %s" % (daemon.directory, exc), 1
        sys.stderr.write("%s: %s\n" % (SIDES[daemon.side]["program"], message))
        if daemon.log:
            daemon.log.error("%s", message)
        daemon.shutdown()
        return code
    try:
        return daemon.run()
    finally:
        daemon.shutdown()
