#!/usr/bin/env python3
"""Run the interop suite (tests/relay/netns/test_interop.py) and publish its figures.

The suite's tests record what each application itself reported (datagrams,
file checksums, decoded audio, resolved services, cluster members) without
the relay, with it, and with it minus the option the application needs.
This script runs the suite with MCPT_INTEROP_FIGURES set, writes the result
to docs/interop.json and rewrites the figures table of docs/interop.md
between its markers.  Nothing is written when a test fails.

    scripts/interop-figures.py                 # run the suite (as root, about 2 minutes), then publish
    scripts/interop-figures.py --render-only   # rewrite the table from docs/interop.json
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "tests/relay/netns/test_interop.py"
FIGURES_JSON = REPO / "docs" / "interop.json"
DOC = REPO / "docs" / "interop.md"
START, END = "<!-- interop-figures:start -->", "<!-- interop-figures:end -->"
CASES = ("without_relay", "with_relay", "relay_without_option")


def _seconds(value):
    return "%.2f s" % value


def iperf(case):
    text = "%d of %d datagrams" % (case["datagrams_received"], case["datagrams_sent"])
    if case["first_datagram_s"] is not None:
        text += ", %d lost, first after %s" % (case["datagrams_lost"], _seconds(case["first_datagram_s"]))
    return text


def udpcast(case):
    text = "%d of %d copies intact" % (case["copies_intact"], case["receivers"])
    if case["transfer_s"] is not None:
        text += ", %d bytes in %s" % (case["bytes_received"], _seconds(case["transfer_s"]))
    return text


def gstreamer(case):
    text = "%d of %d bytes of audio" % (case["audio_bytes_decoded"], case["audio_bytes_sent"])
    if case["checksum_match"]:
        text += ", identical, first after %s" % _seconds(case["first_audio_s"])
    return text


def avahi(case):
    if case["resolved"] is None:
        return "not resolved (%d tries)" % case["attempts"]
    return "resolved to %s in %s" % (case["resolved"], _seconds(case["resolve_s"]))


def corosync(case):
    text = "members seen: %d and %d, %s" % (
        case["members_seen_by_a"], case["members_seen_by_b"],
        "quorate" if case["quorate_a"] and case["quorate_b"] else "not quorate")
    if "quorate_s" in case:
        text += " %s after start" % _seconds(case["quorate_s"])
    return text


# Application -> (what the application reports, how a case reads).
APPS = {
    "iperf": ("iperf's server: datagrams received of those sent (1 Mbit/s for 2 s)", iperf),
    "udpcast": ("udp-receiver: copies of a 1 MiB file with the original's SHA-256, 2 receivers", udpcast),
    "udpcast-any-role": ("as above, a to b and c, then b to a and c (snippet udpcast-any-role)", udpcast),
    "gstreamer": ("player: L16 audio decoded from RTP, identical to the sent audio", gstreamer),
    "gstreamer-loop-off": ("as above, sender with udpsink loop=false", gstreamer),
    "avahi": ("avahi-browse on another host: the published _iop._tcp service", avahi),
    "corosync": ("corosync-quorumtool on each of the 2 nodes", corosync),
}
# What a cell says for a case the suite does not run for that application.
NOT_RUN = {"without_relay": "as %(base)s", "relay_without_option": "no option needed"}
NOT_RUN_FOR = {("udpcast-any-role", "relay_without_option"): "not run (udpcast shows `preserve_source`)"}


def table(figures):
    lines = ["| application (Debian package) | measured | without relay | with relay | relay without the option |",
             "| --- | --- | --- | --- | --- |"]
    for app, (measured, describe) in APPS.items():
        entry = figures["apps"].get(app)
        if entry is None:
            lines.append("| %s | not measured in this run | | | |" % app)
            continue
        cells = []
        for case in CASES:
            value = entry.get(case)
            if value is None:
                cells.append(NOT_RUN_FOR.get((app, case), NOT_RUN[case] % {"base": app.split("-", maxsplit=1)[0]}))
            else:
                text = describe(value)
                if case == "with_relay" and entry.get("with_relay_reversed") is not None:
                    text += "; reversed: " + describe(entry["with_relay_reversed"])
                if case == "with_relay" and value.get("relay_datagrams") is not None:
                    text += "; %d datagrams relayed" % value["relay_datagrams"]
                if case == "relay_without_option":
                    text = "without `%s`: %s" % (value["option"], text)
                cells.append(text)
        row = [app + " (`%s` %s)" % (entry["package"], entry["version"]), measured] + cells
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Measured %s on %s (kernel %s), Python %s." % (
        figures["measured"], figures["machine"], figures["kernel"], figures["python"]))
    return "\n".join(lines)


def render(figures):
    text = DOC.read_text()
    before, rest = text.split(START, 1)
    _old, after = rest.split(END, 1)
    DOC.write_text(before + START + "\n" + table(figures) + "\n" + END + after)


def run_suite():
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "figures.json"
        env = dict(os.environ, MCPT_INTEROP_FIGURES=str(target))
        python = REPO / ".venv" / "bin" / "python"
        result = subprocess.run([str(python if python.exists() else sys.executable), "-m", "pytest", "-q",
                                 "-p", "no:cacheprovider", SUITE], cwd=str(REPO), env=env, check=False)
        if result.returncode != 0:
            sys.exit("interop-figures: the suite failed (exit %d); nothing written" % result.returncode)
        apps = json.loads(target.read_text())
    return {"measured": datetime.date.today().isoformat(), "machine": "%d-core %s" % (os.cpu_count(), platform.machine()),
            "kernel": platform.release(), "python": platform.python_version(), "command": "scripts/interop-figures.py",
            "apps": apps}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-only", action="store_true", help="rewrite the table from docs/interop.json")
    args = parser.parse_args()
    if args.render_only:
        figures = json.loads(FIGURES_JSON.read_text())
    else:
        figures = run_suite()
        FIGURES_JSON.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    render(figures)
    print(table(figures))


if __name__ == "__main__":
    main()
