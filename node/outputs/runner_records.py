"""A node's records, built from its runner: one builder for every driver.

The daemon (node.daemon.loop) and the simulator (node.sim.simulate) drive the same
`NodeRunner`; each knows only what its own network did (bytes, who was up, who was heard) and
how long things took. Everything else a record holds is the runner's, read here in one place,
so the two drivers cannot drift apart in what a metrics line or a node's entry says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from node.core.metrics import Evaluation
from node.core.runner import NodeRunner
from node.outputs.records import ExitReason, metrics_record, node_entry


@dataclass(frozen=True)
class Traffic:
    """What the driver's network did in a round."""

    bytes_sent: int
    bytes_received: int
    peers_alive: int
    neighbours_heard: int


@dataclass(frozen=True)
class Timing:
    """Wall time of one round: all of it, the node's own work, and the wait for neighbours."""

    round_seconds: float
    compute_seconds: float
    wait_seconds: float


def round_record(runner: NodeRunner, round: int, *, time: float, loss: float,
                 evaluation: Evaluation | None, primals: Mapping[int, Tensor],
                 traffic: Traffic, timing: Timing) -> dict[str, Any]:
    """The round's line of metrics.jsonl."""
    return metrics_record(
        round=round, node=runner.node, time=time, loss=loss, evaluation=evaluation,
        dual_norm=runner.setup.algorithm.dual_norm(),
        consensus_distance=runner.consensus_distance(primals), epsilon=runner.epsilon(),
        lifetime_epsilon=runner.lifetime_epsilon(), bytes_sent=traffic.bytes_sent,
        bytes_received=traffic.bytes_received, peers_alive=traffic.peers_alive,
        neighbours_heard=traffic.neighbours_heard, round_seconds=timing.round_seconds,
        compute_seconds=timing.compute_seconds, wait_seconds=timing.wait_seconds,
        suspects=runner.suspects())


def runner_entry(runner: NodeRunner, *, bytes_sent: int, exit: ExitReason) -> dict[str, Any]:
    """The node's entry in summary.json and the first keys of its final.json."""
    return node_entry(accuracy=runner.last_accuracy, auroc=runner.last_auroc,
                      balanced_accuracy=runner.last_balanced_accuracy, loss=runner.last_loss,
                      epsilon=runner.epsilon(), lifetime_epsilon=runner.lifetime_epsilon(),
                      bytes_sent=bytes_sent, rounds_completed=runner.round, exit=exit)
