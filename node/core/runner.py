"""One node's rounds, synchronous and transport-free: the part the simulator and the daemon share.

    out = runner.step(active)        # local steps, messages, the spend committed to the budget
    (caller sends out.duals / out.primal)
    runner.absorb(received)          # when the round closes: what the neighbours sent
    runner.skip_to(r)                # rejoin in step at round r (nothing run or charged before)
    runner.charge_earlier_run(h)     # neighbours heard rounds up to h from an earlier run
    runner.consensus_distance(...)   # and the numbers its metrics record reports

`step` commits the round's spend to the budget (privacy.budget) before it returns: in the
daemon, whose budget keeps the ledger, the spend is on disk before anything is sent.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import InitVar, dataclass, field

import torch
from torch import Tensor

from node.config import RunConfig
from node.core.algorithm import Gossip, Outgoing
from node.core.assemble import NodeSetup
from node.core.metrics import Evaluation
from privacy.accountant import Accountant, Release
from privacy.budget import Budget
from privacy.ledger import Ledger
from privacy.lifetime import Lifetime


@dataclass
class RoundOutput:
    """What one round produced; `duals` go to each neighbour, `primal` (if any) to all."""

    round: int
    duals: dict[int, Outgoing]  # dense tensors, or compressed payloads (--compress)
    primal: Tensor | None
    loss: float
    releases: list[Release]
    compute_seconds: float = 0.0


@dataclass
class NodeRunner:
    """Drives one NodeSetup round by round and keeps the numbers its metrics report. `ledger`
    and `lifetime` (the daemon's): the budget commits each round's spend to them first."""

    cfg: RunConfig
    setup: NodeSetup
    ledger: InitVar[Ledger | None] = None
    lifetime: InitVar[Lifetime | None] = None
    round: int = 0
    last_loss: float = math.nan
    last_accuracy: float | None = None
    last_auroc: float | None = None
    last_balanced_accuracy: float | None = None
    budget: Budget = field(init=False)
    # Rounds before this one are charged for every earlier run of this node (by its ledger,
    # which `resume` continues, or by `charge_earlier_run`).
    accounted_before: int = 0

    def __post_init__(self, ledger: Ledger | None, lifetime: Lifetime | None) -> None:
        self.budget = self.setup.plan.budget(ledger, lifetime)

    @property
    def node(self) -> int:
        return self.setup.node

    @property
    def accountant(self) -> Accountant:
        """What the node has spent, in memory (the budget's)."""
        return self.budget.accountant

    def next_releases(self) -> list[Release]:
        """What the next round charges (the same whoever is up: see `MessageDP.releases`)."""
        return self.setup.plan.releases(self.cfg.local_steps)

    def over_budget(self) -> bool:
        """Would the next round's releases push ε past the target? Then the node must stop."""
        return self.budget.would_exceed(self.next_releases())

    @property
    def sends_model(self) -> bool:
        """Whether the messages are the model itself (gossip), not duals."""
        return isinstance(self.setup.algorithm, Gossip)

    def step(self, active: Collection[int]) -> RoundOutput:
        """Run round `self.round`: local steps and the outgoing messages to `active`."""
        setup = self.setup
        if not active and not setup.plan.moves_alone:
            # Message mode may only move the private state when the move is released; with
            # nobody to release to, the node waits (no data touched). The round is charged all
            # the same: the spend follows the fixed schedule, not who happened to be up.
            duals: dict[int, Outgoing] = {}
            loss = math.nan
        else:
            loss = setup.algorithm.local_steps(setup.trainer.gradient, active)
            duals = dict(setup.algorithm.messages(active, setup.noise))
        releases = self.next_releases()
        self.budget.commit(round=self.round, releases=releases,
                           lifetime=setup.plan.lifetime_releases(self.cfg.local_steps))
        every = self.cfg.primal_every
        send_primal = not self.sends_model and every > 0 and self.round % every == 0
        primal = setup.algorithm.w if send_primal and active else None
        out = RoundOutput(self.round, duals, primal, loss, releases)
        self.last_loss = loss
        self.round += 1
        return out

    def skip_to(self, round: int) -> None:
        """Rejoin the neighbours at `round`: the rounds before it are not run, so nothing is
        released or charged for them, and the edges' shared message state is resynchronised
        (node.core.algorithm: nothing else needs repair)."""
        if round <= self.round:
            raise ValueError(f"round {round} is not ahead of round {self.round}.")
        self.round = round
        self.setup.algorithm.resync()

    def charge_earlier_run(self, heard: int) -> range:
        """Neighbours heard rounds up to `heard` from an earlier run of this node that its
        ledger does not hold (restored from a backup, or lost). Each round from
        `accounted_before` to `heard` (within the run) is charged once more, durably, before
        anything else is sent — a round this run released as well went out twice, and the
        others may have gone out once — and none of them is run again. Returns the rounds
        charged (none without a privacy claim)."""
        rounds = range(self.accounted_before, min(heard, self.cfg.rounds - 1) + 1)
        if not rounds or not self.setup.plan.claims_privacy:
            return range(0)
        ledger, releases = self.budget.ledger, self.next_releases()
        for r in rounds:
            again = ledger is not None and ledger.released(r)
            self.budget.commit(round=r, releases=releases, again=again,
                               lifetime=self.setup.plan.lifetime_releases(self.cfg.local_steps))
        self.accounted_before = rounds[-1] + 1
        if self.round <= rounds[-1]:
            self.skip_to(rounds[-1] + 1)
        return rounds

    def peer_rejoined(self, peer: int) -> None:
        """Neighbour `peer` skipped rounds and is back in step: resynchronise its edge."""
        self.setup.algorithm.resync([peer])

    def absorb(self, received: Mapping[int, Outgoing]) -> None:
        """The neighbours' messages of the round that just closed (a missing one keeps its
        old dual, or its weight goes back to self)."""
        self.setup.algorithm.absorb(received)

    def models_heard(self, received: Mapping[int, Outgoing]) -> dict[int, Tensor]:
        """Gossip: the neighbour models the round's messages stand for (after `absorb`)."""
        algorithm = self.setup.algorithm
        return algorithm.neighbour_models(received) if isinstance(algorithm, Gossip) else {}

    def suspects(self) -> list[int]:
        """Neighbours the robust screen marks suspicious (empty without `clip+screen`)."""
        robust = self.setup.algorithm.robust
        return robust.suspects() if robust is not None else []

    def due_for_evaluation(self, round: int) -> bool:
        return round % self.cfg.eval_every == 0 or round == self.cfg.rounds - 1

    def evaluate(self) -> Evaluation:
        result = self.setup.trainer.evaluate(self.setup.algorithm.w)
        self.last_accuracy = result.accuracy
        self.last_auroc, self.last_balanced_accuracy = result.auroc, result.balanced_accuracy
        return result

    def epsilon(self) -> float | None:
        """ε to print (the mechanism's rule; None without a proven claim)."""
        return self.setup.plan.epsilon(self.budget)

    def lifetime_epsilon(self) -> float | None:
        """ε of everything ever released from the node's data (None where none is proven)."""
        return self.setup.plan.lifetime_epsilon(self.budget)

    def consensus_distance(self, primals: Mapping[int, Tensor]) -> float | None:
        """‖w_i − mean of received neighbour primals‖/√d, or None when none arrived."""
        if not primals:
            return None
        mean = torch.stack(list(primals.values())).mean(dim=0)
        w = self.setup.algorithm.w
        return float((w - mean).norm()) / math.sqrt(w.numel())
