#!/usr/bin/env python3
"""Probe sender: send numbered, self-checking datagrams to a multicast group.

The relay's ``python3 -m multicast_proxy probe send`` under the command line
the test suites use; the implementation and the payload layout are in
files/multicast_proxy/probe.py.  Copy this file together with the
multicast_proxy package directory (next to it, or run it from the source
tree).

Example:
    mcsend.py --group 239.1.1.1 --port 5001 --count 10000 --rate 5000
prints one JSON line at the end, e.g. {"sent": 10000, ...}.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# A copied package next to this file wins over the source tree's.
for _candidate in (os.path.join(_HERE, "..", "..", "files"), _HERE):
    if os.path.isfile(os.path.join(_candidate, "multicast_proxy", "probe.py")):
        sys.path.insert(0, _candidate)

from multicast_proxy.probe import (  # noqa: E402  (needs the path above)
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    Pacer,
    build_payload,
    filler,
    parse_send_args as parse_args,
    send_main,
)

__all__ = ["HEADER", "HEADER_SIZE", "MAGIC", "MAX_PAYLOAD", "Pacer", "build_payload", "filler", "parse_args", "main"]


def main(argv=None):
    return send_main(sys.argv[1:] if argv is None else argv, name="mcsend")


if __name__ == "__main__":
    sys.exit(main())
