"""Everything ever released from one dataset, over every run: the lifetime ledger.

A run's ledger (privacy.ledger) holds that run's rounds and lives in its run directory: a rerun,
a new directory or a ledger moved away starts it from nothing, yet the people in the data have
paid for every earlier run. The lifetime ledger is kept per dataset (the caller names it by a
fingerprint of the data), outside any run directory, and every run on that data appends its
releases to it. It is a `Ledger` (the same checksummed, fsynced, locked file), whose "rounds"
are a sequence number: entry k is the k-th round ever released from this data, by whichever run.

Its ε is the PLD composition of all of those releases (`Accountant` composes groups with
different (z, q), as runs with different settings make them), never a sum of per-run ε's. A
release that no proof covers (no noise, or a mechanism without a formal guarantee) is recorded
as `UNBOUNDED`: from then on the data's lifetime ε is infinite, which is printed as null.

    lifetime = Lifetime.open(path, fingerprint)   # locked for the whole run
    lifetime.record(releases)                     # after the run ledger, before the send
    lifetime.epsilon(delta)
    lifetime_history(path, fingerprint)           # read-only, for the check before a run
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from privacy.accountant import Accountant, Release
from privacy.ledger import Ledger, recorded

#: A release without a proven bound (z = 0 at q = 1): ε = ∞ for the data from then on.
UNBOUNDED = Release(0.0, 1.0, 1)


def identity(fingerprint: str) -> dict[str, Any]:
    """What a lifetime ledger's file must say it is about (and a run ledger never says)."""
    return {"lifetime_of": fingerprint}


class Lifetime:
    """The lifetime spend of one dataset; `Lifetime.open` it and close it when the run ends."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._next = ledger.rounds[-1] + 1 if ledger.rounds else 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], fingerprint: str) -> Lifetime:
        """Load (or start) the lifetime ledger of the data `fingerprint` names, and lock it:
        another run on the same data at the same time is refused, so the cap checked before
        this run cannot be passed by a run started beside it."""
        return cls(Ledger.open(path, identity(fingerprint)))

    @property
    def accountant(self) -> Accountant:
        return self.ledger.accountant

    @property
    def unbounded(self) -> bool:
        """Whether a release without a proven bound was ever made from this data."""
        return any(z == 0.0 and q > 0.0 for z, q, _ in self.accountant.history)

    def record(self, releases: Sequence[Release]) -> None:
        """Durably append one round's releases (call it before the round is sent). Further
        unbounded releases add nothing once one is recorded, so a run without privacy writes
        the file once, not every round."""
        events = [e for e in releases
                  if e.steps > 0 and not (e.noise_multiplier == 0.0 and self.unbounded)]
        if events:
            self.ledger.record(self._next, events)
            self._next += 1

    def epsilon(self, delta: float) -> float:
        """ε (PLD) of every release ever recorded from this data, at δ."""
        return self.ledger.epsilon(delta)

    def close(self) -> None:
        self.ledger.close()

    def discard(self) -> None:
        """Close, removing the file if `open` created it and nothing was recorded since."""
        self.ledger.discard()


def lifetime_history(path: str | os.PathLike[str], fingerprint: str) -> list[Release]:
    """The releases the lifetime ledger at `path` records, read without creating, locking or
    changing anything (empty if there is none); LedgerError if it cannot be trusted."""
    rounds = recorded(path, identity(fingerprint)) or {}
    return [event for r in sorted(rounds) for event in rounds[r]]


def epsilon_after(history: Sequence[Release], planned: Sequence[Release], delta: float) -> float:
    """The lifetime ε if every planned release were made after `history`."""
    accountant = Accountant()
    for z, q, count in [*history, *planned]:
        accountant.spend(z, q, count)
    return accountant.epsilon(delta)
