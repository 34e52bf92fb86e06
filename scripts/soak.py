#!/usr/bin/env python3
"""Soak test: hold a rate for a while across four members and watch loss and memory.

Builds a VPC of network namespaces with tests/relay/netns/vpc.py (a source
running the server and four members running the client and an mcrecv
receiver each), sends one stream with tests/tools/mcsend.py and reports:

- loss per member and in total (target: below 0.1%),
- resident memory (VmRSS) of the server and of every client at the start,
  the middle and the end of the run (target: flat),

prints the figures and writes them as JSON (default docs/soak.json).

The rate held is --rate; else half of --max-rate; else half of a maximum
measured first: a 3-second unpaced burst through the same relays, whose
slowest member's delivery rate is taken as the maximum (the sender may be
the limit, so it is a lower bound).  With --auth (the default) the relays
use a key file, so every frame is tagged and checked.

Needs root (namespaces).  Everything it builds is removed at the end, also
on failure or Ctrl-C.  Example:

    sudo .venv/bin/python scripts/soak.py                 # measure, then 60 s at half of it
    sudo .venv/bin/python scripts/soak.py --max-rate 6000 --duration 60
"""

import argparse
import json
import os
import platform
import secrets
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "relay" / "netns"))

import vpc as vpc_module  # noqa: E402

GROUP = "239.77.9.1"
GROUP_PORT = 5091
SERVER_PORT = 6091
MEMBERS = ("m1", "m2", "m3", "m4")
PAYLOAD_SIZE = 256
LOSS_TARGET_PERCENT = 0.1
# RSS may grow by this much over the run and still count as flat: the
# interpreter's allocator settles during the first seconds.
FLAT_RSS_KIB = 1024
MEASURE_SECONDS = 3.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rate", type=float, help="datagrams per second to hold")
    parser.add_argument("--max-rate", type=float, help="a known maximum; the soak holds half of it")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to hold the rate (default 60)")
    parser.add_argument("--no-auth", dest="auth", action="store_false", help="relay without a key file")
    parser.add_argument("--output", default=str(REPO / "docs" / "soak.json"), help="JSON result file")
    args = parser.parse_args()
    for name in ("rate", "max_rate"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error("--%s must be positive" % name.replace("_", "-"))
    if args.duration < 10:
        parser.error("--duration must be at least 10 seconds: start, middle and end need to be apart")
    return args


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def write_key_file(host, secret):
    path = host.conf_dir / "auth_keys.json"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"send_key_id": 1, "keys": [{"id": 1, "secret": secret}]}, handle)


def configure(vpc, use_auth):
    source = vpc["src"]
    members = [vpc[name] for name in MEMBERS]
    source.relay("multis_admin", "-A", "-m", GROUP, "-j", ",".join(m.ip for m in members),
                 "-p", SERVER_PORT, "-g", GROUP_PORT, check=False)
    for member in members:
        member.relay("multic_admin", "-A", "-i", source.ip, "-g", GROUP_PORT, "-s", SERVER_PORT, "-m", GROUP,
                     check=False)
    if use_auth:
        secret = secrets.token_hex(32)
        for host in [source] + members:
            write_key_file(host, secret)
    source.start_relay("server")
    for member in members:
        member.start_relay("client")
    return source, members


def client_delivered(member):
    (entry,) = member.control("client", {"cmd": "stats"})["entries"]
    return entry["delivered_packets"]


def measure_max_rate(source, members):
    """Unpaced burst; the slowest member's delivered datagrams per second."""
    before = [client_delivered(m) for m in members]
    count = 200000
    started = time.monotonic()
    sender = source.send(GROUP, GROUP_PORT, count, rate=0, size=PAYLOAD_SIZE, stream_id=99, background=True)
    time.sleep(MEASURE_SECONDS)
    sender.stop()
    # Let the relays drain what they hold.
    time.sleep(1.0)
    elapsed = time.monotonic() - started - 1.0
    delivered = [client_delivered(m) - b for m, b in zip(members, before)]
    return min(delivered) / elapsed


def main():
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("soak.py needs root (network namespaces)")
    vpc_module.sweep_leftovers()
    result = {"command": " ".join(["scripts/soak.py"] + sys.argv[1:]), "python": platform.python_version(),
              "kernel": platform.release(), "cpus": os.cpu_count(), "members": len(MEMBERS),
              "payload_bytes": PAYLOAD_SIZE, "auth": args.auth, "duration_seconds": args.duration,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with vpc_module.Vpc(dict([("src", 1)] + [(name, 1) for name in MEMBERS])) as vpc:
        source, members = configure(vpc, args.auth)
        if args.rate:
            rate, result["rate_source"] = args.rate, "--rate"
        elif args.max_rate:
            rate, result["rate_source"] = args.max_rate / 2, "half of --max-rate %g" % args.max_rate
            result["max_rate"] = args.max_rate
        else:
            measured = measure_max_rate(source, members)
            result["max_rate"] = round(measured)
            result["rate_source"] = ("half of the measured maximum (unpaced %g s burst, slowest member)"
                                     % MEASURE_SECONDS)
            rate = measured / 2
        rate = max(1, int(rate))
        result["rate"] = rate
        count = int(rate * args.duration)
        receivers = [m.start_receiver("soak-recv", GROUP, GROUP_PORT, expect=count, idle_timeout=15,
                                      duration=args.duration + 60) for m in members]
        pids = {"server": source.relays["server"].pid}
        pids.update(("client@%s" % m.name, m.relays["client"].pid) for m in members)
        print("holding %d datagrams/s for %g s across %d members (%s, auth %s)"
              % (rate, args.duration, len(members), result["rate_source"], "on" if args.auth else "off"), flush=True)
        sender = source.send(GROUP, GROUP_PORT, count, rate=rate, size=PAYLOAD_SIZE, stream_id=1, background=True)
        started = time.monotonic()
        samples = {}
        for label, at in (("start", 2.0), ("middle", args.duration / 2), ("end", args.duration - 2.0)):
            time.sleep(max(0.0, started + at - time.monotonic()))
            samples[label] = dict((name, rss_kib(pid)) for name, pid in pids.items())
            print("  %-6s t=%4.1fs  RSS KiB: %s" % (label, time.monotonic() - started, " ".join(
                "%s=%d" % item for item in sorted(samples[label].items()))), flush=True)
        sent = sender.json_result(timeout=args.duration + 120)
        result["sent"] = sent["sent"]
        result["send_seconds"] = round(time.monotonic() - started, 2)
        per_member = {}
        for member, receiver in zip(members, receivers):
            summary = receiver.json_result(timeout=120)
            lost = result["sent"] - summary["unique"]
            per_member[member.name] = {"received": summary["unique"], "lost": lost,
                                       "loss_percent": round(100.0 * lost / max(1, result["sent"]), 4),
                                       "duplicates": summary["duplicates"], "corrupt": summary["corrupt"]}
        result["per_member"] = per_member
        total_lost = sum(m["lost"] for m in per_member.values())
        result["loss_percent"] = round(100.0 * total_lost / max(1, result["sent"] * len(members)), 4)
        server_stats = source.control("server", {"cmd": "stats"})
        result["server_send_errors"] = sum(m["send_errors"] for g in server_stats["groups"] for m in g["members"])
        result["client_drops"] = dict((m.name, dict((k, v) for k, v in m.control(
            "client", {"cmd": "stats"})["drops"].items() if v)) for m in members)
    result["rss_kib"] = samples
    growth = dict((name, samples["end"][name] - samples["start"][name]) for name in pids)
    result["rss_growth_kib"] = growth
    result["loss_ok"] = result["loss_percent"] < LOSS_TARGET_PERCENT
    result["memory_flat"] = all(value <= FLAT_RSS_KIB for value in growth.values())
    result["memory_flat_rule"] = "VmRSS at the end at most %d KiB above the start, every process" % FLAT_RSS_KIB
    print("sent %d at %d/s; loss %.4f%% in total (target < %g%%): %s" % (
        result["sent"], rate, result["loss_percent"], LOSS_TARGET_PERCENT,
        ", ".join("%s %.4f%%" % (name, m["loss_percent"]) for name, m in sorted(per_member.items()))))
    print("RSS growth start->end KiB: %s (%s)" % (
        " ".join("%s=%+d" % item for item in sorted(growth.items())), "flat" if result["memory_flat"] else "GROWING"))
    Path(args.output).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print("wrote %s" % args.output)
    return 0 if result["loss_ok"] and result["memory_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
