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

import json
import os

WINDOW = 1024
_MASK = (1 << WINDOW) - 1


class ReplayWindow:
    __slots__ = ("highest", "bitmap", "bound")

    def __init__(self):
        self.highest = None
        # Bit i set: sequence number highest - i was accepted.
        self.bitmap = 0
        # The entry's server has sent a valid tag that names it: from then on
        # a legacy tag from it is a downgrade (auth.Verifier.check).
        self.bound = False

    def resume(self, highest):
        """Continue after ``highest``, the highest number a previous window accepted: it and all below are refused.

        A restarted client (or an entry removed and added again) knows only
        the highest number, not which numbers below it arrived; refusing all
        of them loses at most frames that were already late.
        """
        if self.highest is None or highest > self.highest:
            self.highest = highest
            self.bitmap = _MASK

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


# The client's highest accepted sequence number per entry, kept across its
# restarts (see ClientDaemon.save_replay_state).
CLIENT_STATE_FILE = ".client_replay"
MAX_STATE_BYTES = 4 << 20
MAX_SEQ = (1 << 64) - 1


def state_key(server_ip, server_port, group_ip, group_port):
    """How an entry is named in CLIENT_STATE_FILE."""
    return "%s %d %s %d" % (server_ip, server_port, group_ip, group_port)


def parse_state(data):
    """The {state_key: (highest, bound)} of CLIENT_STATE_FILE's bytes; raises ValueError saying what is wrong.

    ``bound``: the entry's server sends tags that name it (ReplayWindow.bound).
    A file of a release before 1.0.0 has no "bound" list: no entry is bound.
    """
    if len(data) > MAX_STATE_BYTES:
        raise ValueError("larger than %d bytes" % MAX_STATE_BYTES)
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text")
    except ValueError as exc:
        raise ValueError("not JSON (%s)" % exc)
    if not isinstance(obj, dict) or not isinstance(obj.get("highest"), dict):
        raise ValueError('not an object with "highest": {entry: sequence number}')
    bound = obj.get("bound", [])
    if not isinstance(bound, list) or not all(isinstance(key, str) and key in obj["highest"] for key in bound):
        raise ValueError('"bound" is not a list of entries of "highest"')
    state = {}
    for key, value in obj["highest"].items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
            raise ValueError("highest[%s] is not a sequence number" % json.dumps(key))
        state[key] = (value, key in bound)
    return state


def dump_state(state):
    """The bytes of CLIENT_STATE_FILE for {state_key: (highest, bound)}."""
    return (json.dumps({"highest": dict((key, value[0]) for key, value in state.items()),
                        "bound": sorted(key for key, value in state.items() if value[1])},
                       sort_keys=True) + "\n").encode("utf-8")


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
