"""Round bookkeeping, sans-I/O: which neighbours' messages arrived for the current round, and
where each neighbour is.

The runtime drives one `RoundBook` per node:

    book.saw(peer, r)                 # every accepted message: the round its sender is in
    book.start_round(r, now)          # opens round r; its deadline is now + cfg.deadline
    book.receive(msg, now)            # every accepted Dual/Primal -> a Verdict
    book.ready(now, alive)            # every in-step alive neighbour delivered, or the deadline
    result = book.close()             # the duals/primals of round r, and who is missing

Rules:
- Rounds only move forward: `start_round(r)` needs r greater than the last round started; a
  node that fell behind skips ahead (`GossipProtocol.catch_up`).
- A message for the open round is kept (the first of each kind per sender; later copies are
  DUPLICATE). A message for an older round, or for the open round after `close`, is STALE.
- A message for one of the next `future_window` rounds is BUFFERED and handed over when that
  round starts, so memory is bounded by future_window × neighbours × 2 tensors. Anything
  further ahead is TOO_FAR; the newest such message of each kind per sender is kept aside (one
  more tensor per neighbour and kind) and used if this node skips ahead to exactly its round,
  as a node catching up after a restart does.
- `peer_round` is the round each neighbour was last seen in, from any message (a Hello sets it
  even when it is lower: the neighbour restarted from an older round).
- `released` is the highest round each neighbour sent us a Dual or Primal for (whatever its
  verdict: each is a release), and `released_before_hello` the same as it stood at the
  neighbour's latest Hello: what it released before its present run, which a neighbour
  restored from a backup no longer knows (`GossipProtocol.heartbeat` tells it).
- A round does not wait for a neighbour already past it: that neighbour will never send its
  message for it. A neighbour behind is waited for (up to the deadline): it is in the round
  before ours, or it is catching up and skips straight to our round
  (`GossipProtocol.catch_up`), so its message comes within one of its rounds — unless it is
  more than `future_window` rounds behind (`far_behind`): one that far back is not in step
  and may not catch up at once (it skips only to a round most of its neighbours agree on),
  and waiting for it would cost a deadline every round.
- Every verdict is counted in `counts`.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from gossip.messages import Dual, DualPayload, PeerId, Primal, Tensor

__all__ = ["RoundBook", "RoundConfig", "RoundResult", "Verdict"]


class Verdict(enum.Enum):
    """What `RoundBook.receive` did with a message."""

    CURRENT = "current"
    BUFFERED = "buffered"
    DUPLICATE = "duplicate"
    STALE = "stale"
    TOO_FAR = "too_far"
    UNKNOWN_PEER = "unknown_peer"


@dataclass(frozen=True, slots=True)
class RoundConfig:
    """Round timing.

    Attributes:
        deadline: seconds a round waits for its neighbours after it starts.
        future_window: how many rounds ahead of the open one are buffered.

    A round waits for duals only: primals are for monitoring, and a round that waited for
    them would stall on a node that sends none.
    """

    deadline: float = 5.0
    future_window: int = 2

    def __post_init__(self) -> None:
        if self.deadline <= 0 or self.future_window < 0:
            raise ValueError("a round needs deadline > 0 and future_window >= 0.")


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What arrived for one round.

    Attributes:
        round: the round number.
        duals: sender -> dual y_{j|i} addressed to us.
        primals: sender -> primal w_j.
        missing: neighbours whose Dual did not arrive.
        timed_out: whether the round was closed with someone it waited for missing.
    """

    round: int
    duals: dict[PeerId, DualPayload]
    primals: dict[PeerId, Tensor]
    missing: frozenset[PeerId]
    timed_out: bool


@dataclass(slots=True)
class _Slot:
    duals: dict[PeerId, DualPayload] = field(default_factory=dict)
    primals: dict[PeerId, Tensor] = field(default_factory=dict)


class RoundBook:
    """Collects one node's incoming round messages; see the module docstring."""

    def __init__(
        self, neighbours: Iterable[PeerId], cfg: RoundConfig, *, first_round: int = 0
    ) -> None:
        """Create the book; messages for rounds first_round .. first_round+window-1 are buffered
        before the first `start_round`."""
        self.neighbours = frozenset(neighbours)
        self.cfg = cfg
        self.round = first_round - 1  # last round started
        self.deadline = float("-inf")
        self.is_open = False
        self.counts: Counter[Verdict] = Counter()
        self.peer_round: dict[PeerId, int] = {}
        self.released: dict[PeerId, int] = {}
        self.released_before_hello: dict[PeerId, int] = {}
        self._slots: dict[int, _Slot] = {}
        self._beyond: dict[tuple[PeerId, bool], Dual | Primal] = {}  # newest TOO_FAR per kind

    def saw(self, peer: PeerId, r: int, *, restarted: bool = False) -> None:
        """Record that `peer` is in round `r` (any message says so; a Hello after a restart may
        move it back)."""
        if peer in self.neighbours:
            known = self.peer_round.get(peer, r)
            self.peer_round[peer] = r if restarted else max(r, known)
            if restarted:
                self.released_before_hello[peer] = self.released.get(peer, -1)

    def start_round(self, r: int, now: float) -> None:
        """Open round `r` with its deadline; older buffered messages are dropped as STALE."""
        if r <= self.round:
            raise ValueError(f"round {r} does not follow round {self.round}.")
        for old in [k for k in self._slots if k < r]:
            slot = self._slots.pop(old)
            self.counts[Verdict.STALE] += len(slot.duals) + len(slot.primals)
        for key, msg in list(self._beyond.items()):
            if msg.round <= r + self.cfg.future_window:
                del self._beyond[key]
                if msg.round >= r:  # a skip ahead landed within reach of what was kept aside
                    self._put(self._slots.setdefault(msg.round, _Slot()), msg)
        self._slots.setdefault(r, _Slot())
        self.round = r
        self.deadline = now + self.cfg.deadline
        self.is_open = True

    def receive(self, msg: Dual | Primal, now: float) -> Verdict:
        """File one message; `now` is accepted for symmetry and future use (late arrivals)."""
        verdict = self._file(msg)
        self.counts[verdict] += 1
        return verdict

    def _file(self, msg: Dual | Primal) -> Verdict:
        sender, r = msg.sender, msg.round
        if sender not in self.neighbours:
            return Verdict.UNKNOWN_PEER
        self.saw(sender, r)
        self.released[sender] = max(r, self.released.get(sender, -1))
        if r < self.round or (r == self.round and not self.is_open):
            return Verdict.STALE
        if r > self.round + self.cfg.future_window:
            key = (sender, isinstance(msg, Dual))
            if key not in self._beyond or self._beyond[key].round < r:
                self._beyond[key] = msg
            return Verdict.TOO_FAR
        if not self._put(self._slots.setdefault(r, _Slot()), msg):
            return Verdict.DUPLICATE
        return Verdict.CURRENT if r == self.round else Verdict.BUFFERED

    @staticmethod
    def _put(slot: _Slot, msg: Dual | Primal) -> bool:
        """File `msg` in `slot`; False if one of its kind from its sender is already there."""
        held: dict[PeerId, Any] = slot.duals if isinstance(msg, Dual) else slot.primals
        if msg.sender in held:
            return False
        held[msg.sender] = msg.payload
        return True

    def in_step(self, peer: PeerId) -> bool:
        """Whether `peer` is in the open (or last closed) round r or in r − 1, as far as we know
        (never heard: assumed in step)."""
        p = self.peer_round.get(peer)
        return p is None or self.round - 1 <= p <= self.round

    def complete(self, alive: Collection[PeerId] | None = None) -> bool:
        """Whether every peer in `alive` (default: all neighbours) that is not past the open
        round delivered it (module docstring: who a round waits for)."""
        slot = self._slots.get(self.round)
        if not self.is_open or slot is None:
            return False
        expected = self.neighbours if alive is None else self.neighbours & frozenset(alive)
        expected = frozenset(p for p in expected if p in slot.duals
                             or not (self.ran_ahead(p) or self.far_behind(p)))
        return expected <= slot.duals.keys()

    def ran_ahead(self, peer: PeerId) -> bool:
        """Whether `peer` was last heard in a round after the open (or last closed) one."""
        return self.peer_round.get(peer, self.round) > self.round

    def median_round(self, peers: Collection[PeerId], unheard: int, *,
                     upper: bool = False) -> int | None:
        """The median of the rounds `peers` were seen in, a peer never heard counting as at
        round `unheard` (None for no peers). The lower median is a round a majority has
        reached, the upper one a round a majority has not passed; for two peers, the smaller
        and the larger. A minority cannot move either past every other neighbour's round,
        however far ahead or behind it claims to be."""
        seen = sorted(self.peer_round.get(p, unheard) for p in peers)
        if not seen:
            return None
        return seen[len(seen) // 2] if upper else seen[(len(seen) - 1) // 2]

    def far_behind(self, peer: PeerId) -> bool:
        """Whether `peer` was last seen more than `future_window` rounds before the open one: it
        is catching up (or cannot), and a round does not wait for it. A position that stale is
        not an artefact of lost messages: that takes a window's worth of losses in a row."""
        p = self.peer_round.get(peer)
        return p is not None and p < self.round - self.cfg.future_window

    def ready(self, now: float, alive: Collection[PeerId] | None = None) -> bool:
        """Whether the open round can be closed: complete, or its deadline has passed."""
        return self.is_open and (now >= self.deadline or self.complete(alive))

    def close(self, alive: Collection[PeerId] | None = None) -> RoundResult:
        """Close the open round and hand over what arrived for it."""
        if not self.is_open:
            raise ValueError("no round is open.")
        timed_out = not self.complete(alive)
        slot = self._slots.pop(self.round, _Slot())
        self.is_open = False
        missing = self.neighbours - slot.duals.keys()
        return RoundResult(self.round, slot.duals, slot.primals, frozenset(missing), timed_out)
