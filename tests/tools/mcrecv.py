#!/usr/bin/env python3
"""Probe receiver: join a multicast group, count and check what arrives.

The relay's ``python3 -m multicast_proxy probe recv`` under the command line
the test suites use; the implementation, the statistics it prints and the
payload layout are described in files/multicast_proxy/probe.py.  Copy this
file together with the multicast_proxy package directory (next to it, or run
it from the source tree).
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
    Probe,
    ReceiverStats,
    filler,
    parse_recv_args as parse_args,
    membership_request,
    parse_payload,
    percentile,
    recv_main,
)

__all__ = [
    "HEADER", "HEADER_SIZE", "MAGIC", "Probe", "ReceiverStats", "filler", "membership_request",
    "parse_args", "parse_payload", "percentile", "main",
]


def main(argv=None):
    return recv_main(sys.argv[1:] if argv is None else argv, name="mcrecv")


if __name__ == "__main__":
    sys.exit(main())
