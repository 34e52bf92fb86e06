"""``python3 -m multicast_proxy <command> [flags...]``; the installed commands
(``/usr/local/bin/multis_admin`` ...) run exactly this.  A program whose
basename is a command name (a symlink) dispatches on that name instead.
``python3 -m multicast_proxy probe {send,recv} ...`` runs the probe stream
tools of playbooks/verify.yml (probe.py).
"""

import os
import sys

from . import admin, cli, probe


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    invoked_as = os.path.basename(argv[0]) if argv else ""
    if invoked_as in cli.COMMANDS:
        return admin.main(invoked_as, argv[1:])
    if len(argv) >= 2 and argv[1] == "probe":
        return probe.main(argv[2:])
    if len(argv) < 2 or argv[1] not in cli.COMMANDS:
        sys.stderr.write("usage: python3 -m multicast_proxy {%s} [flags...]\n"
                         "       python3 -m multicast_proxy probe {send,recv} [flags...]\n"
                         "  run '<command> -H' for the options of a command\n" % ",".join(cli.COMMANDS))
        return admin.EXIT_USAGE
    return admin.main(argv[1], argv[2:])


def run():
    try:
        return main()
    except BrokenPipeError:
        # The reader of our output went away (``multis_admin -P | head``): not an error
        # worth a traceback; stop writing to the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return admin.EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(run())
