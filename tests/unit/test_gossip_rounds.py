"""Round bookkeeping: deadlines, bounded future buffering, stale drops, duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from gossip.messages import Dual, Primal
from gossip.rounds import RoundBook, RoundConfig, Verdict


def dual(sender: int, r: int, value: float = 0.0) -> Dual:
    return Dual(sender, r, r * 10 + sender, np.full(2, value, np.float32))


def test_ready_when_everyone_delivered_or_at_the_deadline() -> None:
    book = RoundBook([1, 2], RoundConfig(deadline=5.0))
    book.start_round(0, now=100.0)
    assert book.receive(dual(1, 0), 100.1) is Verdict.CURRENT
    assert not book.ready(101.0)
    assert book.ready(105.0)  # deadline reached with peer 2 missing
    assert book.ready(101.0, alive={1})  # or peer 2 is known down
    assert book.receive(dual(2, 0), 101.2) is Verdict.CURRENT
    assert book.ready(101.2)
    result = book.close()
    assert (result.round, sorted(result.duals), result.missing, result.timed_out) == (
        0,
        [1, 2],
        frozenset(),
        False,
    )


def test_a_timed_out_round_reports_who_is_missing() -> None:
    book = RoundBook([1, 2, 3], RoundConfig(deadline=1.0))
    book.start_round(4, now=0.0)
    book.receive(dual(2, 4), 0.5)
    assert book.ready(1.0)
    result = book.close()
    assert result.missing == {1, 3} and result.timed_out and list(result.duals) == [2]


def test_future_rounds_are_buffered_within_the_window_only() -> None:
    book = RoundBook([1], RoundConfig(deadline=1.0, future_window=2))
    book.start_round(0, 0.0)
    assert book.receive(dual(1, 1, 1.0), 0.1) is Verdict.BUFFERED
    assert book.receive(dual(1, 2, 2.0), 0.1) is Verdict.BUFFERED
    assert book.receive(dual(1, 3, 3.0), 0.1) is Verdict.TOO_FAR
    assert book.peer_round[1] == 3
    book.close()
    book.start_round(1, 1.0)
    assert book.ready(1.0)  # the buffered message completes round 1 at once
    np.testing.assert_array_equal(book.close().duals[1], [1.0, 1.0])
    # Skipping round 2 drops what was buffered for it; the round-3 message, too far ahead when
    # it came, was kept aside and completes round 3.
    book.start_round(3, 2.0)
    assert book.counts[Verdict.STALE] == 1
    assert book.complete()
    np.testing.assert_array_equal(book.close().duals[1], [3.0, 3.0])


def test_a_node_skipping_far_ahead_finds_the_newest_message_kept_aside() -> None:
    book = RoundBook([1, 2], RoundConfig(deadline=1.0, future_window=2), first_round=30)
    for r in (41, 44, 43):  # out of order: the newest round is kept, one per sender and kind
        assert book.receive(dual(1, r, float(r)), 0.0) is Verdict.TOO_FAR
    assert book.peer_round[1] == 44
    book.start_round(44, 0.0)
    assert not book.complete()  # node 2 was never heard: assumed in step, waited for
    book.saw(2, 44)
    assert book.receive(dual(2, 44, 2.0), 0.0) is Verdict.CURRENT
    np.testing.assert_array_equal(book.close().duals[1], [44.0, 44.0])
    assert book._beyond == {}


def test_a_round_waits_for_neighbours_behind_but_not_past_it_or_far_behind() -> None:
    book = RoundBook([1, 2, 3, 4, 5], RoundConfig(deadline=5.0, future_window=4))
    book.start_round(10, 0.0)
    book.saw(1, 10)  # in the round
    book.saw(2, 9)  # one behind: still collecting round 9, its round-10 message will come
    book.saw(3, 11)  # past it: closed round 10 without us, will never send it
    book.saw(4, 7)  # three behind: catching up, it skips straight to round 10
    book.saw(5, 2)  # more than the window behind: not in step, not waited for
    assert [book.in_step(p) for p in (1, 2, 3, 4, 5)] == [True, True, False, False, False]
    assert [book.far_behind(p) for p in (1, 2, 3, 4, 5)] == [False, False, False, False, True]
    book.receive(dual(1, 10), 0.1)
    book.receive(dual(2, 10), 0.2)
    assert not book.complete()
    book.receive(dual(4, 10), 0.3)
    assert book.complete()
    book.saw(4, 2, restarted=True)  # a Hello after a restart may move a neighbour back
    assert book.peer_round[4] == 2
    book.saw(4, 1)  # anything else only moves it forward
    assert book.peer_round[4] == 2
    # Rounds now: 1 at 10, 2 at 10 (its dual), 3 at 11, 4 at 2, 5 at 2; 6 never heard.
    assert book.median_round([1, 2, 3, 4, 5], 0) == 10 == book.median_round([1, 2, 3, 4, 5], 0,
                                                                             upper=True)
    assert (book.median_round([1, 3], 0), book.median_round([1, 3], 0, upper=True)) == (10, 11)
    assert book.median_round([3, 6], 10) == 10  # the unheard one counts as the round given
    assert book.median_round([], 0) is None


def test_memory_is_bounded_by_the_window() -> None:
    book = RoundBook(range(1, 5), RoundConfig(future_window=3))
    book.start_round(0, 0.0)
    for r in range(1000):
        for p in range(1, 5):
            book.receive(dual(p, r), 0.0)
    assert len(book._slots) <= 4  # the open round + 3 ahead
    assert book.counts[Verdict.TOO_FAR] == (1000 - 4) * 4


def test_stale_and_duplicate_messages() -> None:
    book = RoundBook([1], RoundConfig())
    book.start_round(5, 0.0)
    assert book.receive(dual(1, 4), 0.0) is Verdict.STALE
    assert book.receive(dual(1, 5, 1.0), 0.0) is Verdict.CURRENT
    assert book.receive(dual(1, 5, 2.0), 0.0) is Verdict.DUPLICATE
    assert book.receive(Primal(1, 5, 99, np.zeros(2, np.float32)), 0.0) is Verdict.CURRENT
    assert book.receive(dual(9, 5), 0.0) is Verdict.UNKNOWN_PEER
    result = book.close()
    assert result.duals[1][0] == 1.0  # the first copy wins
    assert book.receive(dual(1, 5), 0.0) is Verdict.STALE  # the round is closed


def test_a_round_waits_for_duals_not_primals() -> None:
    book = RoundBook([1], RoundConfig())
    book.start_round(0, 0.0)
    book.receive(Primal(1, 0, 7, np.zeros(2, np.float32)), 0.0)
    assert not book.complete()
    book.receive(dual(1, 0), 0.0)
    assert book.complete()


def test_rounds_only_move_forward() -> None:
    book = RoundBook([1], RoundConfig(), first_round=10)
    assert book.receive(dual(1, 10), 0.0) is Verdict.BUFFERED  # before the first start
    book.start_round(10, 0.0)
    assert book.complete()
    with pytest.raises(ValueError):
        book.start_round(10, 1.0)
