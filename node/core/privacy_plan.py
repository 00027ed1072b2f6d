"""What one node releases per round and how it is accounted (DESIGN.md §2): the privacy plan,
its calibration, the dual-noise source, and the noise seeds of experiments.

The plan is fixed before training from public quantities (target ε, δ, rounds, K, the sampling
rate, the clip, the degree); the accountant charges `round_events` for each round actually run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import networkx as nx
import torch

from node.config import RunConfig
from node.core.algorithm import PrimalDualParams
from node.errors import ConfigError
from privacy.accountant import Release, calibrate_noise_multiplier, check_delta
from privacy.errors import PrivacyError
from privacy.mechanisms import gaussian_noise
from privacy.modes import message_mode_noise_multiplier, message_mode_sigma


@dataclass(frozen=True)
class PrivacyPlan:
    """What one node releases per round and how it is accounted (DESIGN.md §2).

    `noise_multiplier` is the per-release z the accountant charges at full degree; in message
    mode `sigma` is the per-edge std of the dual noise, chosen so that z is at least the target
    for every number of active neighbours from 1 to the full degree.
    """

    mode: Literal["none", "gradient", "message"]
    delta: float
    target_epsilon: float | None
    sample_rate: float
    noise_multiplier: float
    sigma: float
    steps_per_node: int
    formal: bool
    # message-mode inputs, kept to recompute z when the active degree changes
    lr: float = 0.0
    beta: float = 1.0
    eta: float = 0.0
    n: int = 0
    clip: float = 1.0

    def round_noise_multiplier(self, active_degree: int) -> float:
        """z actually achieved in a round whose messages went to `active_degree` neighbours."""
        if self.mode != "message":
            return self.noise_multiplier
        return message_mode_noise_multiplier(
            self.sigma, lr=self.lr, beta=self.beta, eta=self.eta, degree=active_degree,
            sample_rate=self.sample_rate, n=self.n, clip=self.clip,
        )

    def round_events(self, active_degree: int, local_steps: int) -> list[Release]:
        """The (z, q, count) releases one round adds to the accountant."""
        if self.mode == "none" or (active_degree == 0 and self.mode == "message"):
            return []
        if self.mode == "gradient":
            return [Release(self.noise_multiplier, self.sample_rate, local_steps)]
        return [Release(self.round_noise_multiplier(active_degree), self.sample_rate, 1)]


class GaussianDualNoise:
    """Independent N(0, σ²) per outgoing dual coordinate, from an explicit generator."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        self.std = std
        self.generator = generator

    def sample(self, numel: int) -> torch.Tensor:
        return gaussian_noise(numel, self.std, self.generator)


def privacy_plan(cfg: RunConfig, graph: nx.Graph, node: int, n: int) -> PrivacyPlan:
    """Calibrate the noise for this node's shard size and degree (always on the safe side)."""
    q = min(cfg.batch_size, n) / n
    if not cfg.private:
        return PrivacyPlan("none", cfg.delta, None, q, 0.0, 0.0, 0, formal=True)
    try:
        check_delta(cfg.delta, n)
        mode = cfg.effective_privacy_mode
        if mode == "gradient":
            steps = cfg.rounds * cfg.local_steps
            z = calibrate_noise_multiplier(cfg.epsilon, cfg.delta, q, steps)
            return PrivacyPlan("gradient", cfg.delta, cfg.epsilon, q, z, 0.0, steps, formal=True)
        params = PrimalDualParams.from_config(cfg, max(d for _, d in graph.degree()))
        z = calibrate_noise_multiplier(cfg.epsilon, cfg.delta, q, cfg.rounds)
        degree = graph.degree(node)
        # z(E) is not monotone in E; the largest σ over every degree the node can have keeps
        # each round's z at or above the calibrated one when neighbours go down.
        sigma = max(
            message_mode_sigma(z, lr=cfg.lr, beta=params.beta, eta=params.eta, degree=e,
                               sample_rate=q, n=n, clip=cfg.clip)
            for e in range(1, degree + 1)
        )
        return PrivacyPlan("message", cfg.delta, cfg.epsilon, q, z, sigma, cfg.rounds,
                           formal=cfg.local_steps == 1, lr=cfg.lr, beta=params.beta,
                           eta=params.eta, n=n, clip=cfg.clip)
    except PrivacyError as exc:
        raise ConfigError(str(exc)) from None


def reported_epsilon(plan: PrivacyPlan, spent: float) -> float | None:
    """ε to print: None without DP or where no proof covers the configuration."""
    if plan.mode == "none" or not plan.formal or not math.isfinite(spent):
        return None
    return spent


def noise_seed(base: int | None, node: int) -> int | None:
    """Node `node`'s fixed noise seed from an experiment's seed `base`; None = OS entropy.

    Every fixed seed is derived here: with the same seed on two nodes their noise would be
    the same draws, and with a seed from public values anyone could subtract the noise."""
    return None if base is None else base * 1_000_003 + node


def restart_noise_seed(base: int, node: int, round: int) -> int:
    """The seed a fixed-seed node reseeds with when it resumes at `round`: replaying round 0's
    draws after a restart would release two messages with the same noise."""
    return base * 1_000_003 * 1_000_033 + node * 1_000_033 + round
