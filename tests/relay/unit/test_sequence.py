"""Loss / duplicate / reorder accounting."""

from multicast_proxy.sequence import SequenceTracker, WINDOW

BASE = 1700000000 << 32


def observe(*seqs):
    tracker = SequenceTracker()
    for seq in seqs:
        tracker.observe(BASE + seq)
    return tracker.lost, tracker.duplicates, tracker.reordered


def test_in_order_is_clean():
    assert observe(1, 2, 3, 4) == (0, 0, 0)


def test_gap_counts_loss():
    assert observe(1, 2, 5, 6) == (2, 0, 0)


def test_late_frame_is_reordered_not_lost():
    assert observe(1, 3, 2, 4) == (0, 0, 1)


def test_repeat_is_a_duplicate():
    assert observe(1, 2, 2, 3, 1) == (0, 2, 0)


def test_late_after_a_big_jump_is_outside_the_window():
    assert observe(1, 2 + WINDOW * 2, 2) == (WINDOW * 2, 0, 1)


def test_server_restart_is_not_loss():
    tracker = SequenceTracker()
    tracker.observe(BASE + 1)
    tracker.observe(BASE + 2)
    tracker.observe(BASE + (5 << 32) + 1)
    tracker.observe(BASE + (5 << 32) + 2)
    assert (tracker.lost, tracker.duplicates, tracker.reordered) == (0, 0, 0)
    assert tracker.highest == BASE + (5 << 32) + 2
