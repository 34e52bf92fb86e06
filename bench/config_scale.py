#!/usr/bin/env python3
"""Configuration scale of the server relay: load + apply time, memory, change cost.

Two measurements, each in a fresh relay process inside a throw-away network
namespace (mcpb-cfg, a veth pair with a route for 224.0.0.0/4, so every
group really is bound and joined):

1. a 1024-group x 1024-member config: the daemon's own start path
   (``ServerDaemon.start()``: read the file, parse, validate, open and join
   every group socket) timed, its resident memory (VmRSS after start,
   ru_maxrss for the peak) recorded; parse + validate alone timed apart;
2. a 256 x 256 config: one member added to (then removed from) one group,
   applied with ``ServerDaemon.reload()``, the path SIGHUP and
   ``server_reload_list reload`` take; each change timed, and checked to
   touch only that group (no other group's socket closed or reopened).

Run as root from the repository root:

    .venv/bin/python bench/config_scale.py            # writes docs/performance/config-scale.json

The relay package is imported read-only from files/; nothing is sent on any
network, the namespace is removed on exit.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMESPACE = "mcpb-cfg"
SERVER_PORT = 5500
GROUP_PORT = 5600
CHANGE_REPEATS = 6
PROFILE_ENV = "MCPB_CONFIG_SCALE_PROFILE"
PROFILE_LINES = 20


class ScaleError(Exception):
    """The measurement cannot go on; the message says why."""


def group_ip(index):
    return "239.100.%d.%d" % (index // 256, index % 256)


def member_ip(index):
    return "10.214.%d.%d" % (index // 250, 1 + index % 250)


def server_config(groups, members, extra_member_in=None):
    """A config in the seed format; ``extra_member_in`` gets one more member."""
    member_array = [member_ip(m) for m in range(members)]
    entries = []
    for g in range(groups):
        entry_members = member_array
        if g == extra_member_in:
            entry_members = member_array + [member_ip(members)]
        entries.append({"group_ip": group_ip(g), "server_port": SERVER_PORT, "group_port": GROUP_PORT,
                        "member_array": list(entry_members)})
    return {"multi_group_array": entries}


# --------------------------------------------------------------------------
# Child side: runs inside the namespace, imports the relay from files/.

def vm_rss_kib():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class Timer:
    """Times one call; under --profile also records where the time went (the
    timings are then inflated by the profiler and only the profile counts)."""

    def __init__(self):
        self.profiler = cProfile.Profile() if os.environ.get(PROFILE_ENV) else None
        self.seconds = []

    def call(self, function, *args):
        if self.profiler:
            self.profiler.enable()
        started = time.perf_counter()
        try:
            return function(*args)
        finally:
            self.seconds.append(time.perf_counter() - started)
            if self.profiler:
                self.profiler.disable()

    def profile_text(self):
        if not self.profiler:
            return None
        out = io.StringIO()
        pstats.Stats(self.profiler, stream=out).sort_stats("cumulative").print_stats(PROFILE_LINES)
        return out.getvalue()


def child_load(directory):
    from multicast_proxy import relay_config as config
    from multicast_proxy.server import ServerDaemon

    rss_before = vm_rss_kib()
    daemon = ServerDaemon(directory)
    timer = Timer()
    timer.call(daemon.start)
    start_seconds = timer.seconds[0]
    rss_after = vm_rss_kib()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    joined = sum(1 for group in daemon.groups.values() if not group.error)
    errors = sorted({group.error for group in daemon.groups.values() if group.error})[:3]
    members = sum(len(group.members) for group in daemon.groups.values())
    open_fds = len(os.listdir("/proc/self/fd"))
    daemon.shutdown()

    with open(os.path.join(directory, config.SERVER_CONFIG_NAME)) as handle:
        text = handle.read()
    started = time.perf_counter()
    config.load_server_config(text)
    parse_seconds = time.perf_counter() - started
    return {"start_seconds": start_seconds, "parse_validate_seconds": parse_seconds,
            "apply_seconds_estimate": start_seconds - parse_seconds,
            "groups_joined": joined, "group_errors": errors, "members_configured": members,
            "rss_kib_before": rss_before, "rss_kib_after_start": rss_after,
            "rss_kib_added": rss_after - rss_before, "ru_maxrss_kib": peak_kib,
            "open_fds": open_fds, "config_bytes": len(text), "profile": timer.profile_text()}


def child_change(directory, groups, members):
    from multicast_proxy import relay_config as config
    from multicast_proxy.server import ServerDaemon

    daemon = ServerDaemon(directory)
    daemon.start()
    path = os.path.join(directory, config.SERVER_CONFIG_NAME)
    changed_group = groups // 2
    timer, problems = Timer(), []
    try:
        for repeat in range(CHANGE_REPEATS):
            # Alternate: add one member to one group, then take it out again.
            add = repeat % 2 == 0
            text = config.dump_config(server_config(groups, members, changed_group if add else None))
            with open(path + ".tmp", "w") as handle:
                handle.write(text)
            os.replace(path + ".tmp", path)
            sockets_before = {ip: group.sock for ip, group in daemon.groups.items()}
            reply = timer.call(daemon.reload, "bench")
            if not reply.get("ok"):
                problems.append("reload refused: %s" % reply.get("error"))
                continue
            changes = reply["changes"]
            if changes.get("updated") != [group_ip(changed_group)]:
                problems.append("expected only %s updated, got %s" % (group_ip(changed_group), changes))
            touched = [ip for ip, group in daemon.groups.items() if group.sock is not sockets_before.get(ip)]
            if touched:
                problems.append("sockets replaced for %d groups: %s" % (len(touched), touched[:3]))
            wanted = members + 1 if add else members
            if len(daemon.groups[group_ip(changed_group)].members) != wanted:
                problems.append("group %s has %d members, expected %d"
                                % (group_ip(changed_group), len(daemon.groups[group_ip(changed_group)].members),
                                   wanted))
    finally:
        daemon.shutdown()
    timings = timer.seconds
    return {"changes_applied": len(timings), "reload_seconds": timings, "profile": timer.profile_text(),
            "reload_seconds_median": statistics.median(timings), "reload_seconds_max": max(timings),
            "problems": problems}


# --------------------------------------------------------------------------
# Parent side: namespace, config files, children, report.

def run(cmd, check=True, env=None, timeout=600):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            env=env, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise ScaleError("%s failed (exit %d): %s" % (" ".join(cmd[:8]), result.returncode,
                                                      result.stderr.strip()[-3000:]))
    return result


def create_namespace():
    if NAMESPACE in run(["ip", "netns", "list"]).stdout.split():
        # Left by an interrupted run of this script (nobody else uses the name).
        run(["ip", "netns", "del", NAMESPACE])
    run(["ip", "netns", "add", NAMESPACE])
    for cmd in (["link", "set", "lo", "up"],
                # A veth pair inside the namespace: an Ethernet interface to join on that leads nowhere.
                ["link", "add", "mcpbcfg0", "type", "veth", "peer", "name", "mcpbcfg1"],
                ["addr", "add", "10.214.255.1/16", "dev", "mcpbcfg0"],
                ["link", "set", "mcpbcfg0", "up"],
                ["link", "set", "mcpbcfg1", "up"],
                ["route", "add", "224.0.0.0/4", "dev", "mcpbcfg0"]):
        run(["ip", "-n", NAMESPACE] + cmd)


def run_child(args, mode, directory, extra):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "files"), MULTICAST_CONF_DIR=directory)
    if args.profile:
        env[PROFILE_ENV] = "1"
    cmd = ["ip", "netns", "exec", NAMESPACE, args.relay_python, os.path.abspath(__file__), "--child", mode,
           directory] + [str(v) for v in extra]
    result = run(cmd, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_config(directory, cfg):
    sys.path.insert(0, os.path.join(REPO, "files"))
    from multicast_proxy import relay_config as config
    with open(os.path.join(directory, config.SERVER_CONFIG_NAME), "w") as handle:
        handle.write(config.dump_config(cfg))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--groups", type=int, default=1024, help="groups in the large config (default 1024)")
    parser.add_argument("--members", type=int, default=1024, help="members per group (default 1024)")
    parser.add_argument("--change-groups", type=int, default=256, help="groups in the change test (default 256)")
    parser.add_argument("--change-members", type=int, default=256,
                        help="members per group in the change test (default 256)")
    parser.add_argument("--relay-python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                        else sys.executable, help="interpreter that runs the relay (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "performance", "config-scale.json"),
                        help="JSON output file (default docs/performance/config-scale.json)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the timed calls (cProfile, top %d by cumulative time, printed and in "
                             "the JSON); timings are inflated by the profiler" % PROFILE_LINES)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.child:
        for name in ("groups", "members", "change_groups", "change_members"):
            if not 1 <= getattr(args, name) <= 1024:
                parser.error("--%s must be within 1..1024 (the relay's limits)" % name.replace("_", "-"))
        if args.change_members >= 1024:
            parser.error("--change-members must leave room for the one member the test adds (at most 1023)")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        mode, directory = args.child[0], args.child[1]
        if mode == "load":
            result = child_load(directory)
        else:
            result = child_change(directory, int(args.child[2]), int(args.child[3]))
        print(json.dumps(result))
        return 0
    if os.geteuid() != 0:
        raise ScaleError("run as root: the relay joins its groups in a network namespace created for the test")
    workdir = tempfile.mkdtemp(prefix="mcpb-cfg-")
    try:
        create_namespace()
        load_dir = os.path.join(workdir, "load")
        change_dir = os.path.join(workdir, "change")
        os.makedirs(load_dir)
        os.makedirs(change_dir)
        write_config(load_dir, server_config(args.groups, args.members))
        write_config(change_dir, server_config(args.change_groups, args.change_members))
        print("loading %d groups x %d members ..." % (args.groups, args.members), flush=True)
        load = run_child(args, "load", load_dir, [])
        print("changing one member of a %d x %d config, %d times ..."
              % (args.change_groups, args.change_members, CHANGE_REPEATS), flush=True)
        change = run_child(args, "change", change_dir, [args.change_groups, args.change_members])
    finally:
        run(["ip", "netns", "del", NAMESPACE], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    relay_version = run([args.relay_python, "--version"], check=False)
    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "profiled": args.profile,
              "relay_python": (relay_version.stdout or relay_version.stderr).strip(),
              "large": dict(load, groups=args.groups, members=args.members),
              "change": dict(change, groups=args.change_groups, members=args.change_members),
              "targets": {"large_start_seconds_max": 1.0, "large_rss_mib_max": 64,
                          "change_apply_seconds_max": 0.1}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
        handle.write("\n")
    print_report(report)
    print("wrote %s" % args.out)
    return 1 if change["problems"] or load["group_errors"] else 0


def print_report(report):
    large, change = report["large"], report["change"]
    print()
    print("%d groups x %d members (%d bytes of config)" % (large["groups"], large["members"], large["config_bytes"]))
    print("  start (read + parse + validate + join every group): %.3f s" % large["start_seconds"])
    print("  of which parse + validate:                          %.3f s" % large["parse_validate_seconds"])
    print("  groups joined: %d, errors: %s" % (large["groups_joined"], large["group_errors"] or "none"))
    print("  VmRSS after start: %.1f MiB (%.1f MiB for the config); peak ru_maxrss %.1f MiB"
          % (large["rss_kib_after_start"] / 1024.0, large["rss_kib_added"] / 1024.0, large["ru_maxrss_kib"] / 1024.0))
    print("  open file descriptors: %d%s" % (large["open_fds"], "  (more than systemd's default soft limit of 1024: "
                                             "the unit needs LimitNOFILE)" if large["open_fds"] > 1000 else ""))
    print("one-member change to %d x %d: reload median %.1f ms, max %.1f ms over %d changes"
          % (change["groups"], change["members"], 1000 * change["reload_seconds_median"],
             1000 * change["reload_seconds_max"], change["changes_applied"]))
    print("  problems: %s" % ("; ".join(change["problems"]) or "none (only the changed group was touched)"))
    if report["profiled"]:
        print("\ntimings above are inflated by the profiler\n\nprofile of the large start:\n%s\n"
              "profile of the %d changes:\n%s" % (large["profile"], change["changes_applied"], change["profile"]))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ScaleError as exc:
        sys.stderr.write("config_scale: %s\n" % exc)
        sys.exit(1)
