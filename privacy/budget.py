"""One node's privacy spend in one object: the accountant (what was spent, in memory), the ledger
(the same, on disk, in the daemon) and the target it must not pass.

    budget.would_exceed(next_releases)   # the stop rule, before a round touches the data
    budget.commit(round=r, releases=...) # the ledger first (fsynced), then the accountant
    budget.epsilon()                     # ε of everything committed
    budget.lifetime_epsilon()            # ε of everything ever released from the data
    Budget.from_ledger(ledger, ...)      # a restarted node: its spend is the ledger's

`commit` is the only way a spend is recorded, so the two stores cannot drift apart: the ledger
is written before anything of the round is sent (privacy/ledger.py), and the accountant only
once the ledger has it. In the daemon the data's lifetime ledger (privacy.lifetime) is written
right after the run's: a crash between the two loses a round that was not sent either.
"""

from __future__ import annotations

from collections.abc import Sequence

from privacy.accountant import Accountant, Release
from privacy.ledger import Ledger
from privacy.lifetime import Lifetime


class Budget:
    """A node's spend against its target ε at δ.

    `target` None: nothing to stop at (no privacy claim, or none that a proof covers).
    `schedule` (z*, q, T): the calibrated plan; a history within it is within the target by
    construction, which spares a PLD evaluation per round."""

    def __init__(self, *, delta: float, target: float | None = None,
                 schedule: Release | None = None, discrete: bool = False) -> None:
        self.delta = delta
        self.target = target
        self.schedule = schedule
        # `discrete`: releases of the discrete Gaussian (privacy.discrete), accounted as such.
        self.accountant = Accountant(discrete=discrete)
        self.ledger: Ledger | None = None
        # Every release ever made from the node's data, over all runs (the daemon's).
        self.lifetime: Lifetime | None = None

    @classmethod
    def from_ledger(cls, ledger: Ledger, *, delta: float, target: float | None = None,
                    schedule: Release | None = None, discrete: bool = False) -> Budget:
        """A budget that continues from what `ledger` records and commits to it."""
        budget = cls(delta=delta, target=target, schedule=schedule, discrete=discrete)
        budget.accountant.history = list(ledger.accountant.history)
        budget.ledger = ledger
        return budget

    def continued(self, ledger: Ledger) -> Budget:
        """This budget after what `ledger` records: its spend is the ledger's. It commits where
        it did: to this ledger (`from_ledger`), or in memory only, for a caller that records
        to the ledger itself."""
        if self.ledger is not None and self.ledger is not ledger:
            raise ValueError(f"this budget commits to {self.ledger.path}, not {ledger.path}.")
        budget = Budget.from_ledger(ledger, delta=self.delta, target=self.target,
                                    schedule=self.schedule,
                                    discrete=self.accountant.discrete)
        budget.ledger = self.ledger
        budget.lifetime = self.lifetime
        return budget

    def would_exceed(self, releases: Sequence[Release]) -> bool:
        """Would committing `releases` (the next round's) take ε past the target?"""
        if self.target is None or not releases:
            return False
        if self._within_schedule(releases):
            return False
        # Calibration and the accountant compute ε the same way, so a calibrated run lands
        # exactly on its target and is not stopped early.
        return self.accountant.epsilon_after(self.delta, releases) > self.target

    def commit(self, *, round: int, releases: Sequence[Release], again: bool = False,
               lifetime: Sequence[Release] | None = None) -> None:
        """Record round `round`'s releases: durably first (the ledger, which refuses a round
        it already holds unless `again`: a repeat that happened; then the lifetime ledger,
        charged `lifetime` where given: what the round costs the data even where the run
        claims nothing), then in memory. Call it before anything of the round is sent."""
        if self.ledger is not None:
            self.ledger.record(round, releases, again=again)
        if self.lifetime is not None:
            # Every release counts once more over the data's lifetime, a repeat included.
            self.lifetime.record(releases if lifetime is None else lifetime,
                                 discrete=self.accountant.discrete)
        for z, q, count in releases:
            self.accountant.spend(z, q, count)

    def epsilon(self) -> float:
        """ε (PLD) of everything committed, at δ."""
        return self.accountant.epsilon(self.delta)

    def lifetime_epsilon(self) -> float | None:
        """ε (PLD) of every release ever recorded from the data, this run's included, at δ;
        None without a lifetime ledger."""
        return None if self.lifetime is None else self.lifetime.epsilon(self.delta)

    def _within_schedule(self, releases: Sequence[Release]) -> bool:
        """True when the history plus `releases` is provably within the calibrated schedule: at
        most T releases, each with the planned q and at least the planned z. ε is monotone in
        both, so the budget holds without a PLD evaluation."""
        if self.schedule is None:
            return False
        z_plan, q_plan, steps = self.schedule
        history = [*self.accountant.history, *releases]
        if any(q != q_plan or z < z_plan for z, q, _ in history):
            return False
        return sum(count for _, _, count in history) <= steps
