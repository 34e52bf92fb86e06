"""The imperative shell of the commands: run a parsed Action.

Edits take the config lock, load the file, apply a pure edit from the config
model, write the result atomically and ask the daemon to reload.  Queries
read from the daemon when it runs, else from the file.  Every function here
returns an exit code (see docs/relay.md) and writes messages to the given
streams.
"""

import json
import os
import sys
import time

from . import auth, cli, relay_config as config, relay_contract as contract, daemon

EXIT_OK = contract.EXIT_OK
EXIT_FAILURE = contract.EXIT_FAILURE
EXIT_USAGE = contract.EXIT_USAGE
EXIT_NOT_RUNNING = contract.EXIT_NOT_RUNNING

DAEMON_NAMES = {"server": "server daemon (multis_admin -R, service multis_monitord)",
                "client": "client daemon (multic_admin -R, service multic_monitord)"}


# Edit errors name the config field; on the command line the flag is what the user typed.
_FLAG_OF_FIELD = {
    "server": {"group_ip": "-m", "member_array": "-j/-q", "server_port": "-p", "group_port": "-g"},
    "client": {"server_ip": "-i", "group_port": "-g", "server_port": "-s", "group_ip": "-m"},
}
# The schema's other options of -A: their long flag (--set KEY= names its own).
for _place, _side_name in ((config.GROUP, "server"), (config.ENTRY, "client")):
    for _option in config.optional_rows(_place):
        if _option.cli:
            _FLAG_OF_FIELD[_side_name].setdefault(_option.key, _option.cli)


class CommandFailed(Exception):
    def __init__(self, code, message):
        self.code = code
        super(CommandFailed, self).__init__(message)


def _side(program):
    return "server" if program in (cli.SERVER, cli.SERVER_RELOAD) else "client"


def _loader(side):
    return config.load_server_config if side == "server" else config.load_client_config


def read_config_file(side, directory):
    """The current config of ``side``; a missing file is an empty config."""
    path = daemon.side_path(side, "config", directory)
    try:
        text = config.read_config_text(path)
    except OSError as exc:
        raise CommandFailed(EXIT_FAILURE, "cannot read %s: %s" % (path, exc.strerror))
    except config.ConfigError as exc:
        raise CommandFailed(EXIT_USAGE, "%s\nFix the file (or restore it), then run the command again; "
                                        "nothing was changed." % exc)
    try:
        return _loader(side)(text, path)
    except config.ConfigError as exc:
        raise CommandFailed(EXIT_USAGE, "%s\nFix the file (or restore it), then run the command again; "
                                        "nothing was changed." % exc)


def write_atomically(path, text, err=None):
    """Replace ``path`` with ``text`` (relay_contract.write_file_atomically): readers see old or new, never half.

    The file keeps its mode and owner (0644 when new).  When the rename is
    done but the directory sync fails, the warning goes to ``err``: the new
    file is in place, so the edit is reported as made.
    """
    result = contract.write_file_atomically(path, text.encode("utf-8"))
    warning = result.warning()
    if warning:
        (err or sys.stderr).write("warning: %s\n" % warning)
    return result


def _edit_function(action):
    if action.command == "set":
        place = config.SERVER if action.program == cli.SERVER else config.CLIENT
        return lambda cfg: config.set_settings(cfg, place, action.settings)
    if action.program == cli.SERVER:
        if action.command == "add":
            return lambda cfg: config.server_add(cfg, action.group_ip, action.members or [],
                                                 server_port=action.port, group_port=action.group_port,
                                                 options=action.options)
        if action.command == "quit":
            return lambda cfg: config.server_quit(cfg, action.group_ip, action.members)
        if action.command == "delete":
            return lambda cfg: config.server_delete(cfg, action.group_ip)
        return lambda cfg: config.empty_server_config()
    if action.command == "add":
        return lambda cfg: config.client_add(cfg, action.server_ip, action.group_port, action.server_port,
                                             action.group_ip, options=action.options)
    if action.command == "delete":
        return lambda cfg: config.client_delete(cfg, action.server_ip, action.group_port, action.group_ip)
    return lambda cfg: config.empty_client_config()


def _edit_file(action, side, directory, out, err=None):
    """Load, edit, validate, write; the caller holds the config lock."""
    path = daemon.side_path(side, "config", directory)
    current = read_config_file(side, directory)
    try:
        new = _edit_function(action)(current)
    except config.ConfigError as exc:
        if action.command == "set":
            flag = "--set %s=" % exc.path if exc.path in (action.settings or {}) else None
        else:
            flag = _FLAG_OF_FIELD[side].get(exc.path)
        where = "%s (%s)" % (flag, exc.path) if flag else exc.path
        raise CommandFailed(EXIT_USAGE, "%s: %s\nNothing was changed." % (where, exc.problem))
    # -C keeps the top-level settings (interface, ...): it clears groups, not host facts.
    if action.command == "clear":
        for option in config.optional_rows(config.SERVER if side == "server" else config.CLIENT):
            if option.key in current:
                new[option.key] = current[option.key]
    if new == current and os.path.exists(path):
        out.write("%s unchanged\n" % path)
        return
    try:
        write_atomically(path, config.dump_config(new), err)
    except OSError as exc:
        raise CommandFailed(EXIT_FAILURE, "cannot write %s: %s; nothing was changed" % (path, exc.strerror))
    out.write("saved %s\n" % path)


def run_edit(action, directory, out, err=None):
    side = _side(action.program)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, 0o755)
        except OSError as exc:
            raise CommandFailed(EXIT_FAILURE, "cannot create %s: %s" % (directory, exc.strerror))
    try:
        with config.ConfigLock(directory, side):
            _edit_file(action, side, directory, out, err)
    except OSError as exc:
        # Only taking the lock gets here: _edit_file turns its own I/O errors into CommandFailed.
        raise CommandFailed(EXIT_FAILURE, "cannot take the config lock in %s: %s (run the command as root)"
                            % (directory, exc.strerror))
    return _ask_reload(side, directory, out)


def _request(side, cmd, directory):
    """Ask the daemon; None when no daemon listens.  A socket we may not use is an error,
    not an absent daemon."""
    try:
        return daemon.request(side, {"cmd": cmd}, directory)
    except PermissionError:
        raise CommandFailed(EXIT_FAILURE, "permission denied on %s; the control socket is for root only"
                            % daemon.side_path(side, "socket", directory))
    except (OSError, ValueError):
        return None


def _ask_reload(side, directory, out):
    reply = _request(side, "reload", directory)
    if reply is None:
        raise CommandFailed(EXIT_NOT_RUNNING, "saved; the %s is not running, the change will apply when the "
                                              "daemon starts" % DAEMON_NAMES[side])
    if not reply.get("ok"):
        raise CommandFailed(EXIT_FAILURE, "the %s refused the reload: %s" % (DAEMON_NAMES[side], reply.get("error")))
    out.write("applied by the running daemon\n")
    return EXIT_OK


def _query(side, cmd, directory):
    """Ask the daemon; None when it is not running."""
    reply = _request(side, cmd, directory)
    if reply is None:
        return None
    if not reply.get("ok"):
        raise CommandFailed(EXIT_FAILURE, "the %s answered with an error: %s" % (DAEMON_NAMES[side], reply.get("error")))
    return reply


def format_table(headers, rows):
    """Left-aligned columns separated by two spaces."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


def _dump_json(obj, out):
    out.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _running_or_saved_config(side, directory):
    """The daemon's running config when it runs (it may differ from an unreloaded hand edit), else the file."""
    reply = _query(side, "show", directory)
    if reply is not None:
        return reply["config"], "daemon"
    return read_config_file(side, directory), "file"


def run_show(action, directory, out):
    """multis_admin -S: the groups, from the daemon (with interface state) or the file."""
    reply = _query("server", "show", directory)
    if reply is not None:
        cfg = reply["config"]
        runtime = dict((g["group_ip"], g) for g in reply["groups"])
        source = "daemon"
    else:
        cfg = read_config_file("server", directory)
        runtime = {}
        source = "file"
    groups = []
    for group in cfg[config.SERVER_TOP_KEY]:
        item = dict(group)
        state = runtime.get(group["group_ip"])
        item["interface"] = state["interface"] if state else group.get("interface", cfg.get("interface", ""))
        if state:
            item["interfaces"] = state["interfaces"]
            if state["join_problem"]:
                item["join_problem"] = state["join_problem"]
        item["state"] = state["state"] if state else "not running"
        if state and state["error"]:
            item["error"] = state["error"]
        groups.append(item)
    if action.json:
        _dump_json({"source": source, "groups": groups}, out)
        return EXIT_OK
    rows = [(g["group_ip"], g["group_port"], g["server_port"], len(g["member_array"]), _where_joined(g, cfg),
             g["state"]) for g in groups]
    out.write(format_table(("GROUP", "GROUP_PORT", "SERVER_PORT", "MEMBERS", "INTERFACE", "STATE"), rows))
    for group in groups:
        if group.get("error"):
            out.write("error %s: %s\n" % (group["group_ip"], group["error"]))
        if group.get("join_problem"):
            out.write("not joined %s: %s\n" % (group["group_ip"], group["join_problem"]))
    if source == "file":
        out.write("(from %s; the server daemon is not running)\n" % daemon.side_path("server", "config", directory))
    return EXIT_OK


def _where_joined(group, cfg):
    """The INTERFACE column: where the daemon joined the group, else what the config asks for."""
    if group.get("interfaces"):
        return ",".join(group["interfaces"])
    if group.get("interface"):
        return group["interface"]
    join = group.get("join_interfaces", cfg.get("join_interfaces", config.JOIN_ALL))
    return "(%s)" % (join if isinstance(join, str) else ",".join(join))


def _joined_by_daemon(group_ip, directory):
    """The running daemon's state of one group (interfaces, join_problem, ...), or None."""
    reply = _query("server", "show", directory)
    for state in (reply or {}).get("groups", ()):
        if state["group_ip"] == group_ip:
            return state
    return None


def run_server_list(action, directory, out):
    """multis_admin -L -m G: the members of one group."""
    config.parse_group_ip(action.group_ip, "-m")
    cfg, source = _running_or_saved_config("server", directory)
    group = config.server_find_group(cfg, action.group_ip)
    if group is None:
        raise CommandFailed(EXIT_USAGE, "group %s is not configured; see the configured groups with multis_admin -S"
                            % action.group_ip)
    state = _joined_by_daemon(action.group_ip, directory) if source == "daemon" else None
    interfaces = state["interfaces"] if state else None
    dynamic = state.get("dynamic_members", []) if state else []
    if action.json:
        listing = {"source": source, "group_ip": group["group_ip"], "group_port": group["group_port"],
                   "server_port": group["server_port"], "members": group["member_array"],
                   "interfaces": interfaces, "join_problem": state["join_problem"] if state else ""}
        if group.get("allow"):
            listing.update(allow=group["allow"], dynamic_members=dynamic)
        _dump_json(listing, out)
        return EXIT_OK
    out.write("group %s:%d, members receive on port %d, picked up on %s\n"
              % (group["group_ip"], group["group_port"], group["server_port"],
                 ",".join(interfaces) if interfaces else _where_joined(group, cfg)))
    if state and state["join_problem"]:
        out.write("not joined: %s\n" % state["join_problem"])
    if not group.get("allow"):
        out.write(format_table(("MEMBER",), [(m,) for m in group["member_array"]]))
        return EXIT_OK
    out.write("subscriptions from %s, at most %d dynamic members, lease %s s\n" % (
        ",".join(group["allow"]), group.get("max_members", config.DEFAULT_MAX_MEMBERS),
        group.get("lease", config.DEFAULT_LEASE)))
    rows = [(m, "config", "-") for m in group["member_array"]]
    rows += [(m["member_ip"], "subscription", "%.1f s" % m["lease_age"]) for m in dynamic]
    out.write(format_table(("MEMBER", "JOINED_BY", "LEASE_AGE"), rows))
    return EXIT_OK


def run_client_list(action, directory, out):
    """multic_admin -L: every configured server entry."""
    cfg, source = _running_or_saved_config("client", directory)
    entries = cfg[config.CLIENT_TOP_KEY]
    if action.json:
        _dump_json({"source": source, "entries": entries, "interface": cfg.get("interface")}, out)
        return EXIT_OK
    out.write(format_table(("SERVER_IP", "SERVER_PORT", "GROUP_IP", "GROUP_PORT"),
                           [(e["server_ip"], e["server_port"], e["group_ip"], e["group_port"]) for e in entries]))
    return EXIT_OK


def _stats_or_fail(side, directory):
    reply = _query(side, "stats", directory)
    if reply is None:
        raise CommandFailed(EXIT_NOT_RUNNING, "the %s is not running; statistics exist only while it runs"
                            % DAEMON_NAMES[side])
    return reply


def run_stats(action, directory, out):
    side = _side(action.program)
    reply = _stats_or_fail(side, directory)
    if side == "server":
        groups = reply["groups"]
        if action.group_ip is not None:
            config.parse_group_ip(action.group_ip, "-m")
            groups = [g for g in groups if g["group_ip"] == action.group_ip]
            if not groups:
                raise CommandFailed(EXIT_USAGE, "group %s is not running in the server daemon; see multis_admin -S"
                                    % action.group_ip)
        if action.json:
            _dump_json({"side": "server", "started": reply["started"], "auth": reply.get("auth"),
                        "auth_status": reply.get("auth_status"), "reloads": reply.get("reloads"),
                        "metrics": reply.get("metrics"), "sender": reply.get("sender"),
                        "socket_buffers": reply.get("socket_buffers"), "subscriptions": reply.get("subscriptions"),
                        "groups": groups}, out)
            return EXIT_OK
        write_server_stats(groups, out)
        write_subscription_status(reply.get("subscriptions"), out)
        write_daemon_status(reply, out)
        return EXIT_OK
    entries = reply["entries"]
    if action.server_ip is not None:
        port = config.parse_port(action.group_port, "-g")
        entries = [e for e in entries if e["server_ip"] == action.server_ip and e["group_port"] == port]
        if not entries:
            raise CommandFailed(EXIT_USAGE, "no entry for server %s, group port %d; see multic_admin -L"
                                % (action.server_ip, port))
    if action.json:
        _dump_json({"side": "client", "started": reply["started"], "auth": reply.get("auth"),
                    "auth_status": reply.get("auth_status"), "reloads": reply.get("reloads"),
                    "metrics": reply.get("metrics"), "socket_buffers": reply.get("socket_buffers"),
                    "drops": reply["drops"],
                    "listen_errors": reply["listen_errors"], "entries": entries}, out)
        return EXIT_OK
    write_client_stats(entries, reply["drops"], reply["listen_errors"], out)
    write_daemon_status(reply, out)
    return EXIT_OK


def write_daemon_status(reply, out):
    """The lines on the daemon as a whole that follow its table: where copies leave from (server),
    authentication, reloads, metrics."""
    write_sender_status(reply.get("sender"), out)
    write_auth_status(reply.get("auth_status"), out)
    write_reloads(reply.get("reloads"), out)
    write_metrics_status(reply.get("metrics"), out)
    write_socket_buffers(reply.get("socket_buffers"), out)


def write_sender_status(status, out):
    """One line on the server's source port (the stats reply's ``sender``), when one is configured."""
    if not status or not status.get("source_port"):
        return
    if status["error"]:
        out.write("source port: NOT bound: %s\n" % status["error"])
    else:
        out.write("source port: copies leave from UDP port %d\n" % status["source_port"])


def write_socket_buffers(buffers, out):
    """One line on the smallest socket buffers the kernel granted (the stats reply's ``socket_buffers``)."""
    if not buffers:
        return
    parts = []
    for kind, limit in (("receive", "net.core.rmem_max"), ("send", "net.core.wmem_max")):
        if kind in buffers:
            granted, asked = buffers[kind]["granted"], buffers[kind]["asked"]
            part = "%s %d KiB" % (kind, granted >> 10)
            if granted < asked:
                part += " (%d KiB asked: raise %s)" % (asked >> 10, limit)
            parts.append(part)
    out.write("socket buffers: %s\n" % ", ".join(parts))


def write_reloads(reloads, out):
    """One line on the config reloads since the start (the stats reply's ``reloads``), when there were any."""
    if not reloads or not (reloads["success"] or reloads["failure"]):
        return
    out.write("reloads: %d applied, %d failed; the last one %s at %s\n" % (
        reloads["success"], reloads["failure"], "succeeded" if reloads["last_ok"] else "FAILED (see the log)",
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reloads["last_time"]))))


def write_metrics_status(status, out):
    """One line per configured metrics output (the stats reply's ``metrics``)."""
    if not status:
        return
    if status.get("listen"):
        if status["serving"]:
            out.write("metrics: serving http://%s/metrics (%d scrapes, last rendered in %.3f s)\n"
                      % (status["listen"], status["scrapes"], status["last_render_seconds"]))
        else:
            out.write("metrics: NOT serving on %s: %s\n" % (status["listen"], status["error"]))
    if status.get("textfile"):
        if status["textfile_error"]:
            out.write("metrics: textfile NOT written: %s\n" % status["textfile_error"])
        else:
            pending = "" if status["textfile_written"] else " (not written yet)"
            out.write("metrics: textfile %s%s\n" % (status["textfile"], pending))


def write_server_stats(groups, out):
    rows = []
    for g in groups:
        drops = " ".join("%s=%d" % (k, v) for k, v in sorted(g["drops"].items()) if v) or "-"
        rows.append((g["group_ip"], g["group_port"], ",".join(g.get("interfaces") or ()) or g["interface"] or "-",
                     g["state"], g["rx_packets"], g["rx_bytes"], drops))
    out.write(format_table(("GROUP", "GROUP_PORT", "INTERFACE", "STATE", "RX_PACKETS", "RX_BYTES", "DROPS"), rows))
    for g in groups:
        if g["error"]:
            out.write("error %s: %s\n" % (g["group_ip"], g["error"]))
        if g.get("join_problem"):
            out.write("not joined %s: %s\n" % (g["group_ip"], g["join_problem"]))
        out.write("\n%s members (server port %s):\n" % (g["group_ip"], g["server_port"]))
        if g.get("dynamic") is None:
            out.write(format_table(("MEMBER", "TX_PACKETS", "TX_BYTES", "SEND_ERRORS", "LAST_ERROR"),
                                   [(m["member_ip"], m["tx_packets"], m["tx_bytes"], m["send_errors"],
                                     m["last_error"] or "-") for m in g["members"]]))
            continue
        out.write(format_table(("MEMBER", "JOINED_BY", "LEASE_AGE", "TX_PACKETS", "TX_BYTES", "SEND_ERRORS",
                                "LAST_ERROR"),
                               [(m["member_ip"], m["joined_by"], "%.1f s" % m["lease_age"] if "lease_age" in m
                                 else "-", m["tx_packets"], m["tx_bytes"], m["send_errors"], m["last_error"] or "-")
                                for m in g["members"]]))
        dynamic = g["dynamic"]
        out.write("subscriptions: %s\n" % " ".join("%s=%d" % item for item in sorted(dynamic["events"].items())))
        for gone in dynamic["departed"][-4:]:
            out.write("departed: %s by %s after %.1f s, sent %s copies\n" % (
                gone["member_ip"], gone["left_by"], gone["subscribed_seconds"], gone.get("tx_packets", "?")))


def write_subscription_status(status, out):
    """The server's subscription refusals (the stats reply's ``subscriptions``), when any group takes them."""
    if not status or not status["ports"]:
        return
    refused = " ".join("%s=%d" % item for item in sorted(status["refusals"].items()) if item[1]) or "none"
    out.write("subscriptions: ports %s, %d dynamic members; refused: %s\n" % (
        ",".join(str(port) for port in status["ports"]), status["members"], refused))
    for reason, sources in sorted((status.get("refused_sources") or {}).items()):
        out.write("subscriptions: refused as %s, the last sources: %s\n" % (
            reason, ", ".join("%s (%d)" % (item["source"], item["count"]) for item in sources)))
    for error in status["errors"]:
        out.write("subscriptions: NOT taken: %s\n" % error)


def write_client_stats(entries, drops, listen_errors, out):
    out.write(format_table(
        ("SERVER_IP", "SERVER_PORT", "GROUP", "INTERFACES", "RX_PACKETS", "RX_BYTES", "DELIVERED", "LOST",
         "DUPLICATES", "REORDERED"),
        [(e["server_ip"], e["server_port"], "%s:%d" % (e["group_ip"], e["group_port"]),
          ",".join(e["interfaces"]) or "-", e["rx_packets"], e["rx_bytes"], e["delivered_packets"], e["lost"],
          e["duplicates"], e["reordered"]) for e in entries]))
    for e in entries:
        if e.get("dynamic"):
            state = e["dynamic"]
            out.write("dynamic %s:%d from %s: %s%s, %s\n" % (
                e["group_ip"], e["group_port"], e["server_ip"], state["state"],
                " (%s)" % state["refusal"] if state["refusal"] else "",
                " ".join("%s=%d" % item for item in sorted(state["counters"].items()))))
    out.write("drops: %s\n" % (" ".join("%s=%d" % (k, v) for k, v in sorted(drops.items()))))
    for message in listen_errors:
        out.write("error: %s\n" % message)


def write_auth_status(status, out):
    """One line on authentication (the stats reply's ``auth_status``), and one more for unchecked tags."""
    if not status:
        return
    if status["refusing"]:
        out.write("authentication: REQUIRED but the keys cannot be loaded, NOTHING is relayed: %s "
                  "(%d failed key loads; fix the key file and reload)\n" % (status["error"], status["load_failures"]))
    else:
        state = "on" if status["keys"] else "off"
        failures = status["load_failures"]
        required = ", required" if status["required"] else ""
        counted = ", %d failed key loads since the start" % failures if failures else ""
        out.write("authentication: %s%s%s\n" % (state, required, counted))
    if status.get("unverified"):
        out.write("authentication: %d tagged frames were delivered unchecked: this client has no key file\n"
                  % status["unverified"])
    if status.get("legacy_tags"):
        out.write("authentication: tags in the legacy form that does not name this server (legacy_tags), "
                  "for clients before 1.0.0: turn it off once every client runs 1.0.0 or later\n")
    if status.get("accepted_unbound"):
        out.write("authentication: %d frames accepted with legacy tags (a server before 1.0.0, or with "
                  "legacy_tags): finish the upgrade of the servers\n" % status["accepted_unbound"])
    if status.get("refused_unbound"):
        out.write("authentication: %d frames with legacy tags REFUSED (auth_unbound): their server already sent "
                  "tags that name it, or keys are required; a downgrade, or a server whose legacy_tags was turned "
                  "on again\n" % status["refused_unbound"])


def run_check_config(action, out):
    side = _side(action.program)
    try:
        with open(action.file, "rb") as handle:
            data = handle.read(config.MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise CommandFailed(EXIT_USAGE, "cannot read %s: %s" % (action.file, exc.strerror))
    try:
        cfg = _loader(side)(data, action.file)
    except config.ConfigError as exc:
        raise CommandFailed(EXIT_USAGE, str(exc))
    if side == "server":
        out.write("%s: valid, %d groups\n" % (action.file, len(cfg[config.SERVER_TOP_KEY])))
    else:
        out.write("%s: valid, %d entries\n" % (action.file, len(cfg[config.CLIENT_TOP_KEY])))
    return EXIT_OK


def run_check_auth(action, out):
    """Validate a key file as the daemon would load it (mode and owner included); prints key ids only."""
    try:
        keys = auth.read_key_file(action.file)
    except config.ConfigError as exc:
        raise CommandFailed(EXIT_USAGE, str(exc))
    if keys is None:
        raise CommandFailed(EXIT_USAGE, "cannot read %s: no such file" % action.file)
    out.write("%s: valid, %s\n" % (action.file, auth.describe(keys)))
    return EXIT_OK


def run_reload_list(action, directory, out, stdin):
    side = _side(action.program)
    command = action.command
    if command == "prompt":
        out.write(cli.RELOAD_PROMPT)
        out.flush()
        command = stdin.readline().strip()
        if command not in ("reload", "list"):
            raise CommandFailed(EXIT_USAGE, "unknown command %r; type reload or list" % command)
    if command == "reload":
        reply = _request(side, "reload", directory)
        if reply is None:
            raise CommandFailed(EXIT_NOT_RUNNING, "the %s is not running; start it and the file applies at start"
                                % DAEMON_NAMES[side])
        if not reply.get("ok"):
            raise CommandFailed(EXIT_USAGE, "reload refused: %s" % reply.get("error"))
        out.write("reload done: %s\n" % json.dumps(reply.get("changes"), sort_keys=True))
        return EXIT_OK
    reply = _stats_or_fail(side, directory)
    if side == "server":
        write_server_stats(reply["groups"], out)
    else:
        write_client_stats(reply["entries"], reply["drops"], reply["listen_errors"], out)
    write_daemon_status(reply, out)
    return EXIT_OK


def run_daemon(program, directory, overrides=None):
    """Run the side's daemon; ``overrides`` are the -R flags' settings (they win over the config file's)."""
    if program == cli.SERVER:
        from .server import ServerDaemon
        instance = ServerDaemon(directory)
    else:
        from .client import ClientDaemon
        instance = ClientDaemon(directory)
    instance.metrics_override = dict(overrides or {})
    return daemon.run_daemon(instance)


def execute(action, directory=None, out=None, err=None, stdin=None):
    """Run one Action; returns the exit code."""
    directory = directory or contract.conf_dir()
    out = out or sys.stdout
    err = err or sys.stderr
    stdin = stdin or sys.stdin
    try:
        if action.command == "help":
            out.write(cli.help_text(action.program))
            return EXIT_OK
        if action.program in (cli.SERVER_RELOAD, cli.CLIENT_RELOAD):
            return run_reload_list(action, directory, out, stdin)
        if action.command == "check_config":
            return run_check_config(action, out)
        if action.command == "check_auth":
            return run_check_auth(action, out)
        if action.command == "doctor":
            from . import doctor
            return doctor.run(_side(action.program), directory, out, as_json=action.json)
        if action.command == "run":
            return run_daemon(action.program, directory, action.settings)
        if action.command in ("add", "quit", "delete", "clear", "set"):
            return run_edit(action, directory, out, err)
        if action.command == "show":
            return run_show(action, directory, out)
        if action.command == "stats":
            return run_stats(action, directory, out)
        if action.program == cli.SERVER:
            return run_server_list(action, directory, out)
        return run_client_list(action, directory, out)
    except CommandFailed as exc:
        err.write("%s: %s\n" % (action.program, exc))
        return exc.code
    except config.ConfigError as exc:
        err.write("%s: %s\n" % (action.program, exc))
        return EXIT_USAGE


def main(program, argv):
    try:
        action = cli.parse(program, argv)
    except cli.UsageError as exc:
        sys.stderr.write("%s: %s\nusage: %s\n" % (program, exc, exc.usage))
        return EXIT_USAGE
    return execute(action)
