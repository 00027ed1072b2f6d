"""Everything ever released from one dataset, over every run: the lifetime ledger.

A run's ledger (privacy.ledger) holds that run's rounds and lives in its run directory: a rerun,
a new directory or a ledger moved away starts it from nothing, yet the people in the data have
paid for every earlier run. The lifetime ledger is kept per dataset (the caller names it by a
fingerprint of the data), outside any run directory, and every run on that data appends its
releases to it. It is a `Ledger` (the same checksummed, fsynced, locked file), whose "rounds"
are a sequence number: entry k is the k-th round ever released from this data, by whichever run.

Its ε is the PLD composition of all of those releases (`Accountant` composes groups with
different (z, q), as runs with different settings make them), never a sum of per-run ε's.
Discrete-Gaussian releases (`--secure-noise`, privacy.discrete), which that PLD does not cover,
are kept in a second file beside it; once there are any, ε is the Rényi composition of both. A
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
from pathlib import Path
from typing import Any

from privacy.accountant import Accountant, Release
from privacy.ledger import Ledger, recorded

#: A release without a proven bound (z = 0 at q = 1): ε = ∞ for the data from then on.
UNBOUNDED = Release(0.0, 1.0, 1)


def identity(fingerprint: str) -> dict[str, Any]:
    """What a lifetime ledger's file must say it is about (and a run ledger never says)."""
    return {"lifetime_of": fingerprint}


def discrete_path(path: str | os.PathLike[str]) -> Path:
    """Where the data's discrete-Gaussian releases (`--secure-noise`) are kept, beside `path`:
    the PLD accountant of the main file does not cover them (privacy.discrete)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.discrete{path.suffix}")


def discrete_identity(fingerprint: str) -> dict[str, Any]:
    return {**identity(fingerprint), "noise": "discrete"}


class Lifetime:
    """The lifetime spend of one dataset; `Lifetime.open` it and close it when the run ends.
    Discrete-Gaussian releases go to a second ledger (`discrete_path`), created on the first."""

    def __init__(self, ledger: Ledger, discrete_ledger: Ledger | None = None,
                 fingerprint: str = "") -> None:
        self.ledger = ledger
        self.discrete = discrete_ledger
        self.fingerprint = fingerprint
        # One sequence over both files: entry k is the k-th round, whichever file holds it.
        last = [*ledger.rounds, *(discrete_ledger.rounds if discrete_ledger else [])]
        self._next = max(last) + 1 if last else 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], fingerprint: str) -> Lifetime:
        """Load (or start) the lifetime ledger of the data `fingerprint` names, and lock it:
        another run on the same data at the same time is refused, so the cap checked before
        this run cannot be passed by a run started beside it."""
        ledger = Ledger.open(path, identity(fingerprint))
        try:
            other = discrete_path(path)
            kept = Ledger.open(other, discrete_identity(fingerprint)) if other.exists() else None
        except BaseException:
            ledger.close()
            raise
        return cls(ledger, kept, fingerprint)

    @property
    def accountant(self) -> Accountant:
        return self.ledger.accountant

    @property
    def unbounded(self) -> bool:
        """Whether a release without a proven bound was ever made from this data."""
        return any(z == 0.0 and q > 0.0 for z, q, _ in self.accountant.history)

    def record(self, releases: Sequence[Release], *, discrete: bool = False) -> None:
        """Durably append one round's releases (call it before the round is sent); `discrete`:
        they are discrete Gaussians (a release without a bound still goes to the main file).
        Further unbounded releases add nothing once one is recorded, so a run without privacy
        writes the file once, not every round."""
        events = [e for e in releases
                  if e.steps > 0 and not (e.noise_multiplier == 0.0 and self.unbounded)]
        other = [e for e in events if discrete and e.noise_multiplier > 0.0]
        events = [e for e in events if not (discrete and e.noise_multiplier > 0.0)]
        if other:
            if self.discrete is None:
                self.discrete = Ledger.open(discrete_path(self.ledger.path),
                                            discrete_identity(self.fingerprint))
            self.discrete.record(self._next, other)
        if events:
            self.ledger.record(self._next, events)
        if events or other:
            self._next += 1

    def epsilon(self, delta: float) -> float:
        """ε of every release ever recorded from this data, at δ: PLD, or Rényi DP once there
        are discrete releases (privacy.discrete.combined_epsilon)."""
        if self.discrete is None or not self.discrete.accountant.history:
            return self.ledger.epsilon(delta)
        from privacy import discrete  # torch and numpy: only where discrete releases exist
        return discrete.combined_epsilon(self.accountant.history,
                                         self.discrete.accountant.history, delta)

    def close(self) -> None:
        self.ledger.close()
        if self.discrete is not None:
            self.discrete.close()

    def discard(self) -> None:
        """Close, removing the file if `open` created it and nothing was recorded since."""
        self.ledger.discard()
        if self.discrete is not None:
            self.discrete.close()   # `open` never creates it: it existed already


def lifetime_history(path: str | os.PathLike[str], fingerprint: str) -> list[Release]:
    """The releases the lifetime ledger at `path` records, read without creating, locking or
    changing anything (empty if there is none); LedgerError if it cannot be trusted."""
    rounds = recorded(path, identity(fingerprint)) or {}
    return [event for r in sorted(rounds) for event in rounds[r]]


def discrete_history(path: str | os.PathLike[str], fingerprint: str) -> list[Release]:
    """The discrete-Gaussian releases kept beside the lifetime ledger at `path`, read only."""
    rounds = recorded(discrete_path(path), discrete_identity(fingerprint)) or {}
    return [event for r in sorted(rounds) for event in rounds[r]]


def epsilon_after(history: Sequence[Release], planned: Sequence[Release], delta: float,
                  discrete_releases: Sequence[Release] = ()) -> float:
    """The lifetime ε if every planned release were made after `history`; with
    `discrete_releases` (recorded and planned) composed in by Rényi DP."""
    if discrete_releases:
        from privacy import discrete
        return discrete.combined_epsilon([*history, *planned], discrete_releases, delta)
    accountant = Accountant()
    for z, q, count in [*history, *planned]:
        accountant.spend(z, q, count)
    return accountant.epsilon(delta)
