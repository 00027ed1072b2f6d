"""One node's rounds, synchronous and transport-free: the part the simulator and the daemon share.

`NodeRunner.round()` takes the messages that arrived for the previous round and the set of active
neighbours, runs the algorithm, charges the privacy accountant, and returns what to send. The
caller makes the spend durable (the daemon's ledger) *before* it sends anything, and turns the
returned numbers into a metrics record with `metrics_record()`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from node.config import RunConfig
from node.federation import NodeSetup, reported_epsilon
from privacy.accountant import Accountant

Event = tuple[float, float, int]


@dataclass
class RoundOutput:
    """What one round produced; `duals` go to each neighbour, `primal` (if any) to all."""

    round: int
    duals: dict[int, Tensor]
    primal: Tensor | None
    loss: float
    events: list[Event]
    compute_seconds: float = 0.0


@dataclass
class NodeRunner:
    """Drives one NodeSetup round by round and keeps the numbers its metrics report."""

    cfg: RunConfig
    setup: NodeSetup
    accountant: Accountant = field(default_factory=Accountant)
    round: int = 0
    last_loss: float = math.nan
    last_accuracy: float | None = None
    last_test_loss: float | None = None

    @property
    def node(self) -> int:
        return self.setup.node

    def next_events(self, active: Collection[int]) -> list[Event]:
        return self.setup.plan.round_events(len(active), self.cfg.local_steps)

    def over_budget(self, active: Collection[int]) -> bool:
        """Would the next round's releases push ε past the target? Then the node must stop."""
        plan = self.setup.plan
        if plan.mode == "none" or plan.target_epsilon is None or not plan.formal:
            return False
        events = self.next_events(active)
        if not events:
            return False
        if self._dominated_by_plan(events):
            return False
        # Calibration and the accountant compute ε the same way, so a calibrated run lands
        # exactly on its target and is not stopped early.
        return self.accountant.epsilon_after(plan.delta, events) > plan.target_epsilon

    def _dominated_by_plan(self, events: list[Event]) -> bool:
        """True when the history plus `events` is provably within the calibrated schedule: at
        most `steps_per_node` releases, each with the planned q and at least the planned z.
        ε is monotone in both, so the budget holds without a PLD evaluation."""
        plan = self.setup.plan
        history = [*self.accountant.history, *events]
        if any(q != plan.sample_rate or z < plan.noise_multiplier for z, q, _ in history):
            return False
        return sum(count for _, _, count in history) <= plan.steps_per_node

    def step(self, received: Mapping[int, Tensor], active: Collection[int]) -> RoundOutput:
        """Run round `self.round`: absorb `received`, local steps, outgoing messages."""
        setup = self.setup
        if setup.plan.mode == "message" and not active:
            # Message mode may only move the private state when the move is released; with
            # nobody to release to, the node waits (no data touched, nothing spent).
            setup.algorithm.absorb(received)
            duals: dict[int, Tensor] = {}
            loss = math.nan
        else:
            duals, loss = setup.algorithm.step(received, setup.trainer.gradient, active,
                                               setup.noise)
        events = self.next_events(active) if duals or setup.plan.mode == "gradient" else []
        for z, q, count in events:
            self.accountant.spend(z, q, count)
        every = self.cfg.primal_every
        send_primal = self.cfg.algorithm != "dpsgd" and every > 0 and self.round % every == 0
        primal = setup.algorithm.w if send_primal and active else None
        out = RoundOutput(self.round, duals, primal, loss, events)
        self.last_loss = loss
        self.round += 1
        return out

    def due_for_evaluation(self, round: int) -> bool:
        return round % self.cfg.eval_every == 0 or round == self.cfg.rounds - 1

    def evaluate(self) -> float:
        test_loss, accuracy = self.setup.trainer.evaluate(self.setup.algorithm.w)
        self.last_accuracy, self.last_test_loss = accuracy, test_loss
        return accuracy

    def epsilon(self) -> float | None:
        plan = self.setup.plan
        if plan.mode == "none":
            return None
        return reported_epsilon(plan, self.accountant.epsilon(plan.delta))

    def consensus_distance(self, primals: Mapping[int, Tensor]) -> float | None:
        """‖w_i − mean of received neighbour primals‖/√d, or None when none arrived."""
        if not primals:
            return None
        mean = torch.stack(list(primals.values())).mean(dim=0)
        w = self.setup.algorithm.w
        return float((w - mean).norm()) / math.sqrt(w.numel())

    def metrics_record(self, round: int, *, time: float, accuracy: float | None,
                       consensus: float | None, epsilon: float | None, bytes_sent: int,
                       bytes_received: int, peers_alive: int, round_seconds: float,
                       compute_seconds: float, wait_seconds: float, loss: float) -> dict[str, Any]:
        """One line of metrics.jsonl with exactly the contract's keys (CONTRACTS.md)."""
        return {
            "round": round,
            "node": self.node,
            "time": time,
            "loss": None if math.isnan(loss) else loss,
            "accuracy": accuracy,
            "dual_norm": self.setup.algorithm.dual_norm(),
            "consensus_distance": consensus,
            "epsilon": epsilon,
            "bytes_sent": bytes_sent,
            "bytes_received": bytes_received,
            "peers_alive": peers_alive,
            "round_seconds": round_seconds,
            "compute_seconds": compute_seconds,
            "wait_seconds": wait_seconds,
        }
