"""Replay protection for authenticated frames: a sliding window of sequence numbers.

The same scheme as IPsec's anti-replay window, wider: the highest sequence
number accepted so far and a bitmap of the WINDOW numbers just below it.  A
frame whose number is in the bitmap already, or is older than the window, is
a replay (or too late to tell apart from one) and is refused.  Sequence
numbers carry the server's start time in their upper half, so a restarted
server's numbers are all above the previous run's and old captures stay
refused.

Only authenticated frames go through the window: without a key an attacker
can forge any sequence number, and the window would only let them push the
real stream out of it.
"""

import os

WINDOW = 1024
_MASK = (1 << WINDOW) - 1


class ReplayWindow:
    __slots__ = ("highest", "bitmap")

    def __init__(self):
        self.highest = None
        # Bit i set: sequence number highest - i was accepted.
        self.bitmap = 0

    def admit(self, seq):
        """Record ``seq`` and return True when it is new; False for a replay or a frame older than the window."""
        highest = self.highest
        if highest is None or seq > highest:
            gap = WINDOW if highest is None else seq - highest
            self.bitmap = ((self.bitmap << gap) | 1) & _MASK if gap < WINDOW else 1
            self.highest = seq
            return True
        behind = highest - seq
        if behind >= WINDOW:
            return False
        bit = 1 << behind
        if self.bitmap & bit:
            return False
        self.bitmap |= bit
        return True


# The second a server run puts in the upper half of its sequence numbers is
# kept here, in the config directory, so the next run can stay above it.
RUN_FILE = ".server_run"


def claim_run_second(path, now):
    """The upper half of this server run's sequence numbers.

    Normally the start second.  A run that starts within the same second as
    the previous one, or after the clock stepped back, takes the previous
    run's second plus one instead: otherwise clients with keys would refuse
    its frames as replays until its counter overtook the previous run's.
    The claim is written to ``path``; when that fails (no such directory, a
    read-only one) the start second is used, as without this file.
    """
    try:
        with open(path) as handle:
            previous = int(handle.read().strip())
    except (OSError, ValueError):
        previous = 0
    second = max(int(now), previous + 1) & 0xFFFFFFFF
    temporary = path + ".new"
    try:
        with open(temporary, "w") as handle:
            handle.write("%d\n" % second)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
    return second
