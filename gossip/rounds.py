"""Round bookkeeping, sans-I/O: which neighbours' messages arrived for the current round.

The runtime drives one `RoundBook` per node:

    book.start_round(r, now)          # opens round r; its deadline is now + cfg.deadline
    book.receive(msg, now)            # every accepted Dual/Primal -> a Verdict
    book.ready(now, alive)            # all `alive` neighbours delivered, or the deadline passed
    result = book.close()             # the duals/primals of round r, and who is missing

Rules:
- Rounds only move forward: `start_round(r)` needs r greater than the last round started.
- A message for the open round is kept (the first of each kind per sender; later copies are
  DUPLICATE). A message for an older round, or for the open round after `close`, is STALE.
- A message for one of the next `future_window` rounds is BUFFERED and handed over when that
  round starts, so memory is bounded by future_window × neighbours × 2 tensors. Anything
  further ahead is TOO_FAR and dropped; `peer_round` still records it so the runtime can see
  that a neighbour is ahead.
- Every verdict is counted in `counts`.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

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
        require_primal: whether a round also waits for every alive neighbour's Primal.
    """

    deadline: float = 5.0
    future_window: int = 2
    require_primal: bool = False

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
        self._slots: dict[int, _Slot] = {}

    def start_round(self, r: int, now: float) -> None:
        """Open round `r` with its deadline; older buffered messages are dropped as STALE."""
        if r <= self.round:
            raise ValueError(f"round {r} does not follow round {self.round}.")
        for old in [k for k in self._slots if k < r]:
            slot = self._slots.pop(old)
            self.counts[Verdict.STALE] += len(slot.duals) + len(slot.primals)
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
        self.peer_round[sender] = max(r, self.peer_round.get(sender, r))
        if r < self.round or (r == self.round and not self.is_open):
            return Verdict.STALE
        if r > self.round + self.cfg.future_window:
            return Verdict.TOO_FAR
        slot = self._slots.setdefault(r, _Slot())
        if isinstance(msg, Dual):
            if sender in slot.duals:
                return Verdict.DUPLICATE
            slot.duals[sender] = msg.payload
        else:
            if sender in slot.primals:
                return Verdict.DUPLICATE
            slot.primals[sender] = msg.payload
        return Verdict.CURRENT if r == self.round else Verdict.BUFFERED

    def complete(self, alive: Collection[PeerId] | None = None) -> bool:
        """Whether every peer in `alive` (default: all neighbours) delivered the open round."""
        slot = self._slots.get(self.round)
        if not self.is_open or slot is None:
            return False
        expected = self.neighbours if alive is None else self.neighbours & frozenset(alive)
        # A neighbour already past this round will never send its message for it (it was lost,
        # or the neighbour ran on without us); waiting for it would only burn the deadline.
        r = self.round
        expected = frozenset(
            p for p in expected if p in slot.duals or self.peer_round.get(p, r) <= r
        )
        if not expected <= slot.duals.keys():
            return False
        return not self.cfg.require_primal or expected <= slot.primals.keys()

    def ran_ahead(self, peer: PeerId) -> bool:
        """Whether `peer` was last heard in a round after the open (or last closed) one."""
        return self.peer_round.get(peer, self.round) > self.round

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
