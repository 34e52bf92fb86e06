#!/usr/bin/env python3
"""Measure how long systemd takes to bring a relay daemon back after kill -9.

Runs on the target host, so the figure does not include Ansible's latency.
Before the kill it asks the daemon's control socket for its PID and its
running config ("ping" and "show", the requests multis_admin/multic_admin
send). It then sends SIGKILL and polls every 20 ms (monotonic clock) until
the control socket answers "ping" from another PID and systemd reports the
unit active with that PID as MainPID (the units are Type=notify: active means
the config is loaded). Polling talks to the socket directly and runs
systemctl only once a new daemon answers, so the measurement does not
compete with the restart for the CPU. Prints one JSON object: the seconds to
the socket answering and to ready, both PIDs, and whether the running config
after the restart equals the one before.

usage: restart_time.py SERVICE {server,client} [--conf-dir DIR] [--timeout SECONDS]
  e.g. restart_time.py multis_monitord server
Exit status: 0 when the daemon came back within the timeout with the same
config, 1 when not (the JSON says what was seen), 2 on bad usage.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

POLL_SECONDS = 0.02
SOCKET_NAMES = {"server": "multis.sock", "client": "multic.sock"}


def control_request(path, cmd):
    """One request on the daemon's control socket; the reply, or None when no daemon answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(path)
        sock.sendall(json.dumps({"cmd": cmd}).encode("utf-8") + b"\n")
        reply = b""
        while b"\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    except OSError:
        return None
    finally:
        sock.close()
    try:
        answer = json.loads(reply.split(b"\n", 1)[0].decode("utf-8"))
    except ValueError:
        return None
    return answer if isinstance(answer, dict) and answer.get("ok") else None


def unit_state(service):
    """(ActiveState, MainPID) of a systemd unit."""
    out = subprocess.run(
        ["systemctl", "show", "--property=ActiveState", "--property=MainPID", service],
        check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return props.get("ActiveState", ""), int(props.get("MainPID", "0") or 0)


def measure(service, socket_path, timeout):
    state, old_pid = unit_state(service)
    ping = control_request(socket_path, "ping")
    config_before = control_request(socket_path, "show")
    if state != "active" or old_pid == 0 or ping is None or ping.get("pid") != old_pid or config_before is None:
        return {"error": "%s is not running as expected before the kill (ActiveState=%s, MainPID=%d, "
                         "control socket %s answered %r)" % (service, state, old_pid, socket_path, ping)}

    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    result = {"service": service, "old_pid": old_pid, "new_pid": None,
              "seconds_to_socket": None, "seconds_to_ready": None, "config_intact": False}
    deadline = killed_at + timeout
    last_seen = "nothing answered on %s" % socket_path
    while time.monotonic() < deadline:
        ping = control_request(socket_path, "ping")
        if ping is not None and ping.get("pid") not in (None, old_pid):
            if result["seconds_to_socket"] is None:
                result["seconds_to_socket"] = round(time.monotonic() - killed_at, 3)
                result["new_pid"] = ping["pid"]
            state, main_pid = unit_state(service)
            last_seen = "ActiveState=%s, MainPID=%d, the control socket answers from PID %d" % (
                state, main_pid, ping["pid"])
            if state == "active" and main_pid == ping["pid"]:
                result["seconds_to_ready"] = round(time.monotonic() - killed_at, 3)
                break
        time.sleep(POLL_SECONDS)
    else:
        result["error"] = "%s was not back within %.1f s (%s)" % (service, timeout, last_seen)
        return result
    config_after = control_request(socket_path, "show")
    result["config_intact"] = config_after == config_before
    if not result["config_intact"]:
        result["config_before"] = config_before
        result["config_after"] = config_after
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("service", help="systemd unit, e.g. multis_monitord")
    parser.add_argument("side", choices=sorted(SOCKET_NAMES), help="which daemon the unit runs")
    parser.add_argument("--conf-dir", default="/etc/multicast",
                        help="the relay's config directory, where the control socket is (default /etc/multicast)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the restart before giving up (default 30)")
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error("--timeout must be a positive number of seconds, got %r" % args.timeout)
    result = measure(args.service, os.path.join(args.conf_dir, SOCKET_NAMES[args.side]), args.timeout)
    print(json.dumps(result, sort_keys=True))
    return 0 if result.get("config_intact") and "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
