"""Loss / duplicate / reorder accounting."""

from hypothesis import given, settings, strategies as st

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


@settings(max_examples=300, deadline=None)
@given(before=st.lists(st.integers(min_value=0, max_value=200), max_size=20),
       first=st.integers(min_value=0, max_value=200), count=st.integers(min_value=1, max_value=100),
       restart=st.booleans())
def test_a_run_counts_as_its_numbers_one_by_one(before, first, count, restart):
    one_by_one, at_once = SequenceTracker(), SequenceTracker()
    for tracker in (one_by_one, at_once):
        for seq in before:
            tracker.observe(BASE + seq)
    start = BASE + first + ((1 << 32) if restart else 0)
    for seq in range(start, start + count):
        one_by_one.observe(seq)
    at_once.observe_run(start, count)
    fields = ("highest", "window", "lost", "duplicates", "reordered")
    assert [getattr(at_once, name) for name in fields] == [getattr(one_by_one, name) for name in fields]
