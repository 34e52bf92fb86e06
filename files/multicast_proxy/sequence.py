"""Loss, duplicate and reorder accounting from frame sequence numbers.

A sequence number is ``(server start time << 32) | counter``.  The tracker
keeps the highest number seen and a 64-entry bitmap of the ones just below
it (the anti-replay window of IPsec), which is enough to tell a late frame
(reordered, and no longer lost) from a repeated one (duplicate).
"""

WINDOW = 64
_WINDOW_MASK = (1 << WINDOW) - 1


class SequenceTracker:
    __slots__ = ("highest", "window", "lost", "duplicates", "reordered")

    def __init__(self):
        self.highest = None
        self.window = 0
        self.lost = 0
        self.duplicates = 0
        self.reordered = 0

    def observe(self, seq):
        highest = self.highest
        if highest is None or (seq >> 32) > (highest >> 32):
            # First frame, or the server restarted: its counter starts over, so
            # the gap to the old run is not loss.
            self.highest = seq
            self.window = 1
            return
        if seq > highest:
            gap = seq - highest
            self.lost += gap - 1
            self.window = ((self.window << gap) | 1) & _WINDOW_MASK if gap < WINDOW else 1
            self.highest = seq
            return
        behind = highest - seq
        if behind >= WINDOW:
            # Too old to tell apart; a frame from a previous server run lands here too.
            self.reordered += 1
            return
        bit = 1 << behind
        if self.window & bit:
            self.duplicates += 1
        else:
            self.window |= bit
            self.reordered += 1
            self.lost -= 1

    def observe_run(self, first, count):
        """Observe ``first`` .. ``first + count - 1``, in order (a burst of consecutive numbers)."""
        highest = self.highest
        if highest is not None and (first >> 32) == (highest >> 32) and first <= highest:
            # Some of the run may be late or repeated: each number decides for itself.
            for seq in range(first, first + count):
                self.observe(seq)
            return
        self.observe(first)
        if count > 1:
            # Each further number is the highest plus one: no loss, one more bit in the window.
            self.window = ((self.window << (count - 1)) | ((1 << (count - 1)) - 1)) & _WINDOW_MASK
            self.highest = first + count - 1
