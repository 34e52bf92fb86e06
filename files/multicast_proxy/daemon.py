"""What the server and client daemons share: paths, logging, systemd
notification, the control socket, signals and the event loop.

A daemon subclass provides ``load_config_text``/``apply_config`` (diff-apply),
``stats``/``show`` and ``close_data_sockets``; this module owns everything
else so that both sides behave the same for an operator.
"""

import errno
import json
import logging
import logging.handlers
import os
import select
import signal
import socket
import stat
import sys
import time
import traceback

from . import auth, control, metrics, relay_config as config, relay_contract as contract

# Repeated drop messages (a misbehaving sender can cause thousands a second)
# are logged once per reason per this many seconds, with a count; events a
# local user can cause (DropLog.event) a few lines per kind per interval.
DROP_LOG_INTERVAL = 60.0
# The log file is rotated at this size and this many old files are kept
# (<side>_log.txt.1 is the newest): 60 MiB at most per side.  The
# environment variables override them for one service (systemctl edit).
LOG_MAX_BYTES = 10 << 20
LOG_BACKUPS = 5
LOG_MAX_BYTES_ENV = "MULTICAST_LOG_MAX_BYTES"
LOG_BACKUPS_ENV = "MULTICAST_LOG_BACKUPS"
# After a failed rotation (the directory became read-only), the next attempt
# waits this long: meanwhile the current file takes the lines.
LOG_ROTATE_RETRY = 60.0


class DaemonError(Exception):
    """The daemon cannot start; the message says why and what to do.

    ``exit_code`` follows the table in docs/relay.md: 2 for an invalid config
    file, 1 for everything else.
    """

    def __init__(self, message, exit_code=contract.EXIT_FAILURE):
        self.exit_code = exit_code
        super(DaemonError, self).__init__(message)


def side_path(side, what, directory=None):
    """The path of ``side``'s "config", "log" or "socket" (names: relay_contract.SIDES)."""
    return contract.SIDES[side].path(what, directory or contract.conf_dir())


def _log_limit(name, default, minimum):
    """The integer in environment variable ``name``, else ``default``; DaemonError when it is not one."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise DaemonError("%s=%r is not a whole number of at least %d; fix or unset it "
                          "(default %d)" % (name, text, minimum, default))
    return value


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """A size-rotated log whose new file keeps the old one's mode and owner.

    Without this the file opened after a rotation would get the process's
    umask, which may be looser than what the operator set on the log.  A
    rotation that fails (a directory made read-only) is reported once on
    stderr, not as a traceback per line, and retried after LOG_ROTATE_RETRY.
    """

    def __init__(self, path, max_bytes, backups):
        super(RotatingLogFile, self).__init__(path, maxBytes=max_bytes, backupCount=backups)
        self._retry_at = 0.0

    def shouldRollover(self, record):
        if time.monotonic() < self._retry_at:
            return False
        return super(RotatingLogFile, self).shouldRollover(record)

    def doRollover(self):
        try:
            before = os.stat(self.baseFilename)
        except FileNotFoundError:
            # Deleted by hand: the lines went to the unlinked file; a new one starts now.
            before = None
        try:
            super(RotatingLogFile, self).doRollover()
            if before is not None:
                self._take_attributes(before)
        except OSError as exc:
            self._retry_at = time.monotonic() + LOG_ROTATE_RETRY
            sys.stderr.write("cannot rotate %s: %s; logging goes on in the same file, next attempt in %d s; "
                             "make %s writable\n" % (self.baseFilename, exc.strerror or exc, LOG_ROTATE_RETRY,
                                                     os.path.dirname(self.baseFilename)))
            if self.stream is None:
                self.stream = self._open()

    def _take_attributes(self, before):
        fd = self.stream.fileno()
        os.fchmod(fd, stat.S_IMODE(before.st_mode))
        new = os.fstat(fd)
        if (new.st_uid, new.st_gid) != (before.st_uid, before.st_gid):
            try:
                os.fchown(fd, before.st_uid, before.st_gid)
            except OSError:
                # Not root, or chown filtered out (the units' SystemCallFilter):
                # the new file stays the daemon's own, with the old mode.
                pass


def setup_logging(side, directory):
    """Log to <conf_dir>/<side>_log.txt (rotated by size) and to stderr (journald under systemd).

    Raises DaemonError when the file cannot be opened or a size variable is wrong.
    """
    logger = logging.getLogger("multicast_proxy.%s" % side)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    max_bytes = _log_limit(LOG_MAX_BYTES_ENV, LOG_MAX_BYTES, 4096)
    backups = _log_limit(LOG_BACKUPS_ENV, LOG_BACKUPS, 1)
    path = side_path(side, "log", directory)
    try:
        file_handler = RotatingLogFile(path, max_bytes, backups)
    except OSError as exc:
        raise DaemonError("cannot open the log file %s: %s; make %s writable for the daemon's user "
                          "or point MULTICAST_CONF_DIR elsewhere" % (path, exc.strerror or exc, os.path.dirname(path)))
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file_handler)
    stream_handler = logging.StreamHandler(sys.stderr)
    stream_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(stream_handler)
    return logger


class _Window:
    """One kind's current interval: when it began, lines written, lines suppressed."""

    __slots__ = ("start", "written", "suppressed", "write", "noun")

    def __init__(self, start, write, noun):
        self.start = start
        self.written = 0
        self.suppressed = 0
        self.write = write
        self.noun = noun


class DropLog:
    """Rate-limits the log lines that others can cause at will, per kind.

    A remote sender causes drops, a local user causes events (joining a group
    moves its delivery).  Each kind gets at most ``lines`` lines per interval;
    the rest are counted, and the count is reported once: appended to the
    kind's next line, or by ``flush`` (called every second) as a line of its
    own when the interval ends quietly.
    """

    def __init__(self, logger, interval=DROP_LOG_INTERVAL, clock=time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._windows = {}

    def drop(self, reason, detail):
        """Log the drop of one datagram for ``reason``, at most once per interval."""
        return self._write(reason, 1, self.logger.warning, "drops", "drop %s: %s", (reason, detail))

    def event(self, kind, lines, fmt, *args):
        """Log ``fmt % args`` (info) unless ``lines`` lines of ``kind`` were written in this interval."""
        return self._write(kind, lines, self.logger.info, "messages", fmt, args)

    def warning(self, kind, lines, fmt, *args):
        """As ``event``, at warning level."""
        return self._write(kind, lines, self.logger.warning, "messages", fmt, args)

    def error(self, kind, lines, fmt, *args):
        """As ``event``, at error level."""
        return self._write(kind, lines, self.logger.error, "messages", fmt, args)

    def _write(self, kind, lines, write, noun, fmt, args):
        # Formatting waits until the line is written: a flood is mostly suppressed lines.
        now = self.clock()
        window = self._windows.get(kind)
        more = ""
        if window is None or now - window.start >= self.interval:
            if window is not None and window.suppressed:
                more = " (%d more %s %s since the last message)" % (window.suppressed, kind, window.noun)
            window = self._windows[kind] = _Window(now, write, noun)
        elif window.written >= lines:
            window.suppressed += 1
            return False
        window.written += 1
        write(fmt + "%s", *(args + (more,)))
        return True

    def flush(self):
        """Report the suppressed lines of every interval that has ended."""
        now = self.clock()
        for kind, window in list(self._windows.items()):
            if now - window.start < self.interval:
                continue
            del self._windows[kind]
            if window.suppressed:
                window.write("%d more %s %s suppressed in the last %d s", window.suppressed, kind, window.noun,
                             self.interval)


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


def request(side, message, directory=None, timeout=control.CLIENT_TIMEOUT):
    """Send one control request to ``side``'s daemon; its reply (see control.request for the errors)."""
    return control.request(side_path(side, "socket", directory), message, timeout)


def daemon_running(side, directory=None):
    try:
        return bool(request(side, {"cmd": "ping"}, directory, timeout=2.0).get("ok"))
    except (OSError, ValueError):
        return False


class Daemon:
    """Event loop, control socket, signals and reload for one side."""

    side = None  # "server" or "client", set by subclasses

    def __init__(self, directory=None):
        self.directory = directory or contract.conf_dir()
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
        # auth_required: the marker file <conf dir>/auth_required exists (read at
        # start and every reload).  auth_failure: why the keys it requires are not
        # loaded; while it is set the data sockets are read by the refusing
        # readers of the subclass, so the relaying readers never test it.
        self.auth_required = False
        self.auth_failure = None
        self.auth_load_failures = 0
        self.keys_loaded = False
        self.keys_description = auth.describe(None)
        # Reloads since the start (metrics and -P): counts, and when and how the last one went.
        self.reloads = {"success": 0, "failure": 0, "last_time": None, "last_ok": True}
        # The metrics endpoint and textfile; ``metrics_override`` holds the -R flags
        # (--metrics ...), which win over the config file's settings.
        self.metrics = metrics.Metrics(self)
        self.metrics_override = {}
        # When ``timer`` runs next (monotonic): subclasses with sub-second work set it.
        self.next_timer = float("inf")
        # The smallest socket buffer of each kind the kernel granted (-P --json "socket_buffers").
        self.socket_buffers = {}

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

    def watch_data_sockets(self):
        """Point every data socket at the reader ``auth_failure`` calls for (relaying or refusing)."""
        raise NotImplementedError

    def auth_status(self):
        """The ``auth_status`` of the stats reply: required, refusing and why, counters."""
        return {"required": self.auth_required, "keys": self.keys_loaded, "refusing": self.auth_failure is not None,
                "error": self.auth_failure, "load_failures": self.auth_load_failures}

    def tick(self):
        """Called about once a second."""

    def timer(self):
        """Called when ``next_timer`` has come (dynamic membership's sub-second steps); sets the next one."""
        self.next_timer = float("inf")

    # -- lifecycle ----------------------------------------------------------
    def read_config(self):
        return self.load_config_text(config.read_config_text(self.config_path))

    def read_auth_keys(self):
        """The validated key file, or None without one; raises config.ConfigError (which never holds a secret)."""
        return auth.read_key_file(auth.key_file_path(self.directory))

    def read_keys_as_required(self):
        """(required, keys, failure) for a start or reload.

        ``failure`` says why the keys that the marker requires are missing or
        unusable (the daemon then relays nothing); without the marker a bad
        key file raises config.ConfigError, as it always did.
        """
        required = auth.auth_required(self.directory)
        try:
            keys = self.read_auth_keys()
        except config.ConfigError as exc:
            if not required:
                raise
            return required, None, str(exc)
        if keys is None and required:
            return required, None, "%s does not exist" % auth.key_file_path(self.directory)
        return required, keys, None

    def set_auth(self, required, keys, failure, origin):
        """Install ``keys`` (or none) and say what that means, loudly when it refuses or turns checks off."""
        had_keys = self.keys_loaded
        self.auth_required = required
        self.auth_failure = failure
        self.keys_loaded = keys is not None
        self.keys_description = auth.describe(keys)
        self.apply_auth(keys)
        if failure is not None:
            self.auth_load_failures += 1
            self.drop_log.error("auth_required", 4, "%s: authentication is required (%s exists) but the keys cannot "
                                "be loaded: %s; the %s relays NOTHING until the key file is fixed and the daemon "
                                "reloaded", origin, auth.required_path(self.directory), failure, self.side)
        elif keys is None and had_keys:
            self.log.warning("%s: the key file %s is gone: authentication is now OFF (%s); write the keys back and "
                             "reload, and create %s to make a missing key file stop the relay instead", origin,
                             auth.key_file_path(self.directory),
                             "frames are sent untagged" if self.side == "server" else "frames are accepted unchecked",
                             auth.required_path(self.directory))
        else:
            self.log.info("authentication: %s%s", auth.describe(keys), ", required" if required else "")

    def auth_summary(self):
        """What ``changes.auth`` of a reload says."""
        if self.auth_failure is not None:
            return "required but unavailable, relaying nothing: %s" % self.auth_failure
        return self.keys_description

    def start(self):
        """Check for another instance, load the config, open every socket."""
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, 0o755)
        self.log = setup_logging(self.side, self.directory)
        self.drop_log = DropLog(self.log)
        self._open_control_socket()
        try:
            cfg = self.read_config()
            required, keys, failure = self.read_keys_as_required()
        except config.ConfigError as exc:
            self._close_control_socket()
            raise DaemonError("%s; fix the file, the daemon did not start" % exc, exit_code=contract.EXIT_USAGE)
        except OSError as exc:
            self._close_control_socket()
            raise DaemonError("cannot read %s: %s" % (self.config_path, exc.strerror))
        self._install_signals()
        # Keys before any socket: the first reader of a group is already the right one.
        self.set_auth(required, keys, failure, "start")
        changes = self.apply_config(cfg)
        self.cfg = cfg
        metrics_change = self.apply_metrics(cfg)
        if metrics_change:
            changes["metrics"] = metrics_change
        self.log.info("%s started (pid %d, config %s): %s", contract.SIDES[self.side].admin, os.getpid(),
                      self.config_path, json.dumps(changes, sort_keys=True))
        sd_notify("READY=1\nSTATUS=%s" % self.status())

    def status_line(self):
        return "running"

    def status(self):
        """The systemd STATUS: the side's summary, after a refusal to relay when there is one."""
        if self.auth_failure is not None:
            return "RELAYING NOTHING, authentication is required but the keys cannot be loaded (%s); %s" % (
                self.auth_failure, self.status_line())
        return self.status_line()

    def metrics_settings(self, cfg):
        """The metrics settings in force: the config's, with the -R flags over them."""
        settings = dict((key, cfg.get(key)) for key in ("metrics_listen", "metrics_textfile", "metrics_detail"))
        settings.update(self.metrics_override)
        return settings

    def apply_metrics(self, cfg):
        """Start, move or stop the metrics endpoint and textfile as ``cfg`` says; what changed, or None."""
        return self.metrics.configure(self.metrics_settings(cfg))

    def watch(self, sock, callback):
        """Call ``callback(sock)`` from the loop whenever ``sock`` is readable."""
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = (callback, sock)

    def modify(self, sock, write):
        """Wake the watched ``sock``'s callback when it is writable (``write``) instead of readable."""
        self._epoll.modify(sock.fileno(), select.EPOLLOUT if write else select.EPOLLIN)

    def rewatch(self, sock, callback):
        """Give the watched ``sock`` another callback (the next readable event calls it)."""
        self._handlers[sock.fileno()] = (callback, sock)

    def unwatch(self, sock):
        fd = sock.fileno()
        del self._handlers[fd]
        self._epoll.unregister(fd)

    def run(self):
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        next_tick = time.monotonic() + 1.0
        poll = self._epoll.poll
        handlers = self._handlers
        exporter = self.metrics
        while not self.stopping:
            # While a metrics textfile is being written, one step of it per round.
            timeout = 0.0 if exporter.busy() else max(0.0, min(next_tick, self.next_timer) - time.monotonic())
            try:
                for fd, _events in poll(timeout):
                    # Looked up now, not when poll returned: an earlier callback of
                    # this round (a reload) may have closed the socket.
                    handler = handlers.get(fd)
                    if handler is not None:
                        handler[0](handler[1])
            except Exception as exc:  # pylint: disable=broad-except
                # Once per poll round, not per datagram.  The sockets left unserved
                # in this round are still readable at the next poll.
                self.handler_failed("callback", exc)
            self._handle_signals()
            if exporter.busy():
                try:
                    exporter.step()
                except Exception as exc:  # pylint: disable=broad-except
                    self.handler_failed("metrics textfile", exc)
            if time.monotonic() >= self.next_timer:
                try:
                    self.timer()
                except Exception as exc:  # pylint: disable=broad-except
                    self.next_timer = time.monotonic() + 1.0
                    self.handler_failed("timer", exc)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 1.0
                self.drop_log.flush()
                try:
                    exporter.tick()
                    self.tick()
                except Exception as exc:  # pylint: disable=broad-except
                    # Housekeeping must never end a daemon that still relays.
                    self.drop_log.drop("tick", "housekeeping failed, the relay goes on: %s: %s" % (type(exc).__name__, exc))
                    self.log.debug("housekeeping failure", exc_info=True)
        return 0

    def handler_failed(self, what, exc):
        """Log an unexpected exception of a handler (rate-limited, with its traceback); the daemon goes on."""
        self.drop_log.error("handler_" + what, 4, "%s failed, the daemon goes on: %s: %s\n%s", what,
                            type(exc).__name__, exc, traceback.format_exc().rstrip())

    def shutdown(self):
        # Every step runs even when an earlier one fails: the control socket
        # must never outlive the daemon (a stale one misleads the commands).
        try:
            sd_notify("STOPPING=1")
            self.metrics.close()
            self.close_data_sockets()
        finally:
            try:
                self._close_control_socket()
                self._restore_signals()
            finally:
                self._handlers.clear()
                self._epoll.close()
                if self.log:
                    if self.cfg is not None:
                        self.log.info("%s stopped", contract.SIDES[self.side].admin)
                    for handler in list(self.log.handlers):
                        self.log.removeHandler(handler)
                        handler.close()

    def reload(self, origin):
        """Re-read the file and diff-apply it; an invalid file keeps the running config.

        Never raises: whatever goes wrong is logged and answered, and the
        daemon keeps serving (SIGHUP and the control socket call this).
        """
        sd_notify("RELOADING=1")
        result = {"ok": False}
        try:
            result = self._reload(origin)
            return result
        except Exception as exc:  # pylint: disable=broad-except
            self.handler_failed("reload (%s)" % origin, exc)
            return {"ok": False, "error": "reload failed: %s: %s; the daemon keeps running, parts of the new config "
                                          "may be applied: see -P and the log" % (type(exc).__name__, exc)}
        finally:
            ok = bool(result.get("ok"))
            self.reloads["success" if ok else "failure"] += 1
            self.reloads["last_time"] = time.time()
            self.reloads["last_ok"] = ok
            sd_notify("READY=1\nSTATUS=%s" % self.status())

    def _reload(self, origin):
        try:
            cfg = self.read_config()
            required, keys, failure = self.read_keys_as_required()
        except (config.ConfigError, OSError, ValueError) as exc:
            self.log.error("reload (%s) refused, still running the previous config: %s", origin, exc)
            return {"ok": False, "error": "%s; the daemon keeps running the previous config and keys" % exc}
        refusing_before = self.auth_failure is not None
        # Keys first: a group added by this reload must not send one untagged frame.
        self.set_auth(required, keys, failure, "reload (%s)" % origin)
        changes = self.apply_config(cfg)
        if (failure is not None) != refusing_before:
            self.watch_data_sockets()
        changes["auth"] = self.auth_summary()
        self.cfg = cfg
        metrics_change = self.apply_metrics(cfg)
        if metrics_change:
            changes["metrics"] = metrics_change
        self.log.info("reload (%s) applied: %s", origin, json.dumps(changes, sort_keys=True))
        if failure is not None:
            return {"ok": False, "changes": changes,
                    "error": "the config was applied, but authentication is required (%s) and the keys cannot be "
                             "loaded: %s; the daemon relays nothing until the key file is fixed and the daemon "
                             "reloaded" % (auth.required_path(self.directory), failure)}
        return {"ok": True, "changes": changes}

    # -- control socket -------------------------------------------------------
    def _open_control_socket(self):
        if os.path.exists(self.socket_path) or os.path.islink(self.socket_path):
            if daemon_running(self.side, self.directory):
                raise DaemonError("another %s -R is already running with config directory %s (it answers on %s); "
                                  "stop it first (service %s stop)"
                                  % (contract.SIDES[self.side].admin, self.directory, self.socket_path,
                                     "multis_monitord" if self.side == "server" else "multic_monitord"))
            self.log.info("removing stale control socket %s", self.socket_path)
            os.unlink(self.socket_path)
        listener = control.open_listener(self.socket_path)
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
        except OSError as exc:
            # Out of descriptors (EMFILE) or a connection reset before accept: the next one may work.
            self.drop_log.drop("control_accept", "cannot accept a control connection: %s" % (exc.strerror or exc))
            return
        # The admin command sends its request at once; a stuck peer cannot hold
        # the data path for longer than this.
        conn.settimeout(control.PEER_TIMEOUT)
        try:
            # The socket's mode already keeps others out; this holds even if
            # someone loosened the mode or the directory by hand.
            peer_uid = control.peer_uid(conn)
            line = control.read_line(conn)
            if not control.peer_allowed(peer_uid):
                # Read the request first so the peer gets the answer, not a broken pipe.
                self.control_refused += 1
                conn.sendall(control.encode(control.REFUSED))
                self.drop_log.drop("control_refused", "control connection from uid %d refused" % peer_uid)
                return
            try:
                reply = self._dispatch(line)
            except Exception as exc:  # pylint: disable=broad-except
                self.handler_failed("control request", exc)
                reply = {"ok": False, "error": "the daemon failed to answer: %s: %s; it goes on, see its log"
                                               % (type(exc).__name__, exc)}
            conn.sendall(control.encode(reply))
        except OSError as exc:
            self.drop_log.drop("control_error", "control connection failed: %s" % exc)
        finally:
            conn.close()

    def _dispatch(self, line):
        cmd, error = control.parse_request(line)
        if error is not None:
            return error
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "side": self.side}
        if cmd == "reload":
            return self.reload("control socket")
        if cmd == "stats":
            return dict(self.stats(), ok=True, control_refused=self.control_refused, auth_status=self.auth_status(),
                        reloads=dict(self.reloads), metrics=self.metrics.status(),
                        socket_buffers=dict(self.socket_buffers))
        # control.COMMANDS: "show" is the last one.
        return dict(self.show(), ok=True)

    def set_buffer(self, sock, option, size):
        """``set_buffer`` of the module, and the buffer the kernel granted noted and reported.

        The first buffer of each kind is logged (INFO when it is what was
        asked, else a WARNING that names the sysctl), and so is every later
        one smaller than the smallest so far; ``socket_buffers`` keeps the
        smallest for ``-P --json``.
        """
        granted = set_buffer(sock, option, size)
        kind, limit = _BUFFER_KINDS[option]
        known = self.socket_buffers.get(kind)
        if known is None or granted < known["granted"]:
            self.socket_buffers[kind] = {"asked": size, "granted": granted}
            if granted >= size:
                self.log.info("socket %s buffers: %d KiB", kind, granted >> 10)
            else:
                self.log.warning("socket %s buffers: %d KiB of the %d KiB asked: without CAP_NET_ADMIN the kernel "
                                 "caps them at %s; raise it (the roles set it in /etc/sysctl.d/60-multicast-proxy.conf)"
                                 ", or bursts may be dropped", kind, granted >> 10, size >> 10, limit)
        return granted

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
        except OSError as exc:
            # The pending signals are in _pending_signals whatever happens to the wake-up bytes.
            self.drop_log.drop("signal_wakeup", "cannot read the signal wake-up socket: %s" % exc)

    def _handle_signals(self):
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            if signum == signal.SIGHUP:
                # reload() answers every failure itself; it never raises.
                self.reload("SIGHUP")
            else:
                self.stopping = True
                try:
                    self.log.info("received %s, shutting down", signal.Signals(signum).name)
                except Exception as exc:  # pylint: disable=broad-except
                    self.handler_failed("signal %d" % signum, exc)


# SO_RCVBUFFORCE / SO_SNDBUFFORCE (Linux values) let root exceed rmem_max/wmem_max:
# a burst of small datagrams overflows the default 208 KiB long before the CPU is busy.
_FORCED = {socket.SO_RCVBUF: getattr(socket, "SO_RCVBUFFORCE", 33),
           socket.SO_SNDBUF: getattr(socket, "SO_SNDBUFFORCE", 32)}


_BUFFER_KINDS = {socket.SO_RCVBUF: ("receive", "net.core.rmem_max"),
                 socket.SO_SNDBUF: ("send", "net.core.wmem_max")}


def set_buffer(sock, option, size):
    """Ask for a big socket buffer; returns the bytes granted.

    With CAP_NET_ADMIN the FORCE option sets it whatever the limit; without
    (the units grant no CAP_NET_ADMIN) plain SO_RCVBUF / SO_SNDBUF, which the
    kernel caps at net.core.rmem_max / wmem_max.  The kernel doubles the value
    for its bookkeeping; the granted size is the half it reports.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, _FORCED[option], size)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EINVAL, errno.ENOPROTOOPT):
            raise
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    return sock.getsockopt(socket.SOL_SOCKET, option) // 2


def run_daemon(daemon):
    """Start, serve, shut down; returns an exit code (messages go to stderr/log).

    The shutdown (which removes the control socket) runs on every way out,
    an unexpected exception of the start or the loop included; that
    exception is logged with its traceback and the exit code is 1.
    """
    admin = contract.SIDES[daemon.side].admin
    try:
        try:
            daemon.start()
        except (DaemonError, OSError) as exc:
            if isinstance(exc, DaemonError):
                message, code = str(exc), exc.exit_code
            else:
                message, code = "cannot start with config directory %s: %s" % (daemon.directory, exc), 1
            sys.stderr.write("%s: %s\n" % (admin, message))
            if daemon.log:
                daemon.log.error("%s", message)
            return code
        return daemon.run()
    except Exception as exc:  # pylint: disable=broad-except
        sys.stderr.write("%s: unexpected failure, the daemon stops: %s: %s\n" % (admin, type(exc).__name__, exc))
        if daemon.log:
            daemon.log.error("unexpected failure, the daemon stops", exc_info=True)
        return contract.EXIT_FAILURE
    finally:
        daemon.shutdown()
