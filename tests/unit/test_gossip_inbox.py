"""Receive filter: neighbours only, no impersonation, no replays, counted and rate-limited."""

from __future__ import annotations

import logging
import math

import msgpack
import numpy as np
import pytest

from gossip.codec import PROTOCOL_VERSION, encode
from gossip.errors import ReplayError
from gossip.inbox import Inbox, ReplayWindow
from gossip.messages import Dual, Heartbeat


def hb(sender: int, seq: int) -> list:
    return encode(Heartbeat(sender, 0, seq))


def test_accepts_a_neighbour_and_counts_it() -> None:
    inbox = Inbox([1, 2], expected_dim=3)
    msg = inbox.accept(b"1", encode(Dual(1, 0, 5, np.ones(3, np.float32))), now=0.0)
    assert isinstance(msg, Dual)
    assert inbox.accepted[1] == 1


@pytest.mark.parametrize("identity", [b"7", b"", b"\x00k\x8bEg", b"01x", b"99999999999"])
def test_non_neighbours_are_counted_under_none(identity: bytes) -> None:
    inbox = Inbox([1, 2])
    assert inbox.accept(identity, hb(7, 1), now=0.0) is None
    assert inbox.rejected[None]["PeerError"] == 1


def test_a_neighbour_cannot_speak_for_another() -> None:
    inbox = Inbox([1, 2])
    assert inbox.accept(b"1", hb(2, 1), now=0.0) is None
    assert inbox.rejected[1]["PeerError"] == 1
    assert inbox.accept(b"2", hb(2, 1), now=0.0) is not None  # node 2's window is untouched


def test_garbage_is_a_decode_error_of_that_peer() -> None:
    inbox = Inbox([1])
    assert inbox.accept(b"1", [b"\x00" * 22], now=0.0) is None
    assert inbox.rejected[1] == {"DecodeError": 1}
    assert inbox.accept(b"1", encode(Dual(1, 0, 1, np.ones(4, np.float32))), 0.0) is not None
    assert (
        Inbox([1], expected_dim=3).accept(b"1", encode(Dual(1, 0, 1, np.ones(4, np.float32))), 0.0)
        is None
    )


def test_duplicates_and_old_sequence_numbers_are_refused_reordering_is_not() -> None:
    inbox = Inbox([1], replay_window=8)
    accepted = [inbox.accept(b"1", hb(1, s), 0.0) is not None for s in [10, 12, 11, 12, 10, 3]]
    assert accepted == [True, True, True, False, False, False]
    assert inbox.rejected[1]["ReplayError"] == 3


def test_replay_window_slides() -> None:
    w = ReplayWindow(size=4)
    for s in [0, 1, 5, 3, 4]:
        w.check(s)
    for s in [5, 4, 1, 0]:
        with pytest.raises(ReplayError):
            w.check(s)
    w.check(2)  # age 3: still inside the window and unseen
    w.check(100)
    with pytest.raises(ReplayError):
        w.check(96)


def test_logging_is_rate_limited_per_peer_and_kind(caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox([1, 2], log_interval=10.0)
    with caplog.at_level(logging.WARNING, logger="gossip.inbox"):
        for i in range(100):
            inbox.accept(b"1", [b"junk"], now=i * 0.01)  # 100 in one second
        inbox.accept(b"2", [b"junk"], now=1.0)  # another peer gets its own line
        inbox.accept(b"1", [b"junk"], now=11.0)  # the next interval reports the suppressed
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "peer 1" in lines[0] and "peer 2" in lines[1]
    assert "99 similar suppressed" in lines[2]
    assert inbox.rejections(1) == 101


# ---- the RMS bound uses the decoder's one pass over the payload ----------------------------


def dual_frames(x: np.ndarray, seq: int = 1) -> list:
    """A Dual from node 1 carrying `x` as is, even NaN or inf (the encoder would refuse)."""
    header = msgpack.packb(
        {"v": PROTOCOL_VERSION, "t": "dual", "src": 1, "r": 0, "seq": seq,
         "f": [["float32", [len(x)]]]}
    )
    return [header, x.astype("<f4").tobytes()]


@pytest.mark.parametrize("bound", [math.inf, 10.0, 1e30])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
def test_non_finite_values_are_a_decode_error_whatever_the_bound(bad: float, bound: float) -> None:
    inbox = Inbox([1], expected_dim=8, max_rms=bound)
    x = np.ones(8, np.float32)
    x[5] = bad
    assert inbox.accept(b"1", dual_frames(x), 0.0) is None
    assert inbox.rejected[1] == {"DecodeError": 1}


def test_huge_but_finite_values_are_accepted_unless_above_the_bound() -> None:
    # Squares of 1e30 overflow float32: the RMS must come from the exact (float64) sum, not
    # from an overflowed inf that would reject every bound.
    x = np.full(8, 1e30, np.float32)
    assert Inbox([1], max_rms=math.inf).accept(b"1", dual_frames(x), 0.0) is not None
    assert Inbox([1], max_rms=2e30).accept(b"1", dual_frames(x), 0.0) is not None
    below = Inbox([1], max_rms=5e29)
    assert below.accept(b"1", dual_frames(x), 0.0) is None
    assert below.rejected[1] == {"NormError": 1}


def test_the_bound_is_on_the_rms_per_coordinate() -> None:
    inbox = Inbox([1], max_rms=2.0)
    assert inbox.accept(b"1", dual_frames(np.full(100, 1.99, np.float32), seq=1), 0.0)
    assert inbox.accept(b"1", dual_frames(np.full(100, 2.01, np.float32), seq=2), 0.0) is None
    assert inbox.rejected[1] == {"NormError": 1}


def test_the_bound_costs_no_second_read_of_the_payload(payload_reads: list[int]) -> None:
    inbox = Inbox([1], expected_dim=1000, max_rms=10.0)
    assert inbox.accept(b"1", dual_frames(np.ones(1000, np.float32)), 0.0) is not None
    assert payload_reads == [1000]
