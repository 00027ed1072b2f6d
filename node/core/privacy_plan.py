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
from topologies import max_degree as graph_max_degree


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
    n: float = 0.0  # the public dataset size n̂ that q and the normaliser q·n̂ come from
    clip: float = 1.0

    @property
    def expected_batch(self) -> float:
        """The normaliser q·n̂ of the clipped-gradient sum: public, fixed before training."""
        return self.sample_rate * self.n

    def round_noise_multiplier(self, active_degree: int) -> float:
        """z actually achieved in a round whose messages went to `active_degree` neighbours."""
        if self.mode != "message":
            return self.noise_multiplier
        return message_mode_noise_multiplier(
            self.sigma, lr=self.lr, beta=self.beta, eta=self.eta, degree=active_degree,
            sample_rate=self.sample_rate, n=self.n, clip=self.clip,
        )

    def round_events(self, local_steps: int) -> list[Release]:
        """The releases one round charges: always the calibrated schedule's (z*, q).

        In message mode the z a round achieves depends on how many neighbours are up, which
        depends on what happened before: a running tally of achieved z's would compose
        adaptively chosen parameters, which the PLD accountant does not cover. σ is chosen so
        that every round's z is at least z* whatever the degree (`round_noise_multiplier`),
        so charging z* each round — a fixed, non-adaptive schedule — is a proven bound; a
        round with nobody to send to is charged too (it releases nothing, which z* dominates).
        """
        if self.mode == "none":
            return []
        if self.mode == "gradient":
            return [Release(self.noise_multiplier, self.sample_rate, local_steps)]
        return [Release(self.noise_multiplier, self.sample_rate, 1)]


class GaussianDualNoise:
    """Independent N(0, σ²) per outgoing dual coordinate, from an explicit generator."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        self.std = std
        self.generator = generator

    def sample(self, numel: int) -> torch.Tensor:
        # Drawn where the generator lives (a GPU node's private generator is on its device);
        # added to the CPU duals the messages are made of.
        return gaussian_noise(numel, self.std, self.generator).cpu()


def sample_rate(cfg: RunConfig, public_examples: int | None, node: int) -> tuple[float, float]:
    """(q, n̂): the Poisson rate and the public dataset size it is fixed from, before training.

    q is `cfg.sample_rate` when given, else B/n̂ with n̂ = `cfg.public_examples` or the size the
    caller declares public (`public_examples`: a shard of a public dataset). A private run with
    neither, or with q ≥ 1, is refused: q from the private data itself is not covered by the
    accountant, and q ≥ 1 leaves no subsampling to amplify with."""
    declared = cfg.public_examples if cfg.public_examples is not None else public_examples
    if cfg.sample_rate is not None:
        # Given directly, q fixes the expected batch size B = q·n̂ with n̂ = B/q.
        q = cfg.sample_rate
        n = float(declared) if declared is not None else cfg.batch_size / q
    elif declared is not None:
        n, q = float(declared), min(cfg.batch_size, declared) / declared
    else:
        raise ConfigError(f"node {node} reads its own data, whose size is private; declare the "
                          "Poisson sampling rate (sample_rate = q) or a public dataset size "
                          "(public_examples = n) so that q is fixed before training.")
    if cfg.private and not q < 1:
        raise ConfigError(f"node {node}: batch_size {cfg.batch_size} is not below its public "
                          f"dataset size {n:g}, so the sampling rate q = {q:.3g} would be ≥ 1; "
                          "lower --batch-size (or sample_rate) below the number of examples.")
    return q, n


def formal_guarantee(cfg: RunConfig, *, released: bool) -> bool:
    """Whether a proof covers what this run prints. Message mode needs K = 1 (DESIGN.md §2).
    A fixed noise seed in a run whose messages are really sent (`released`: the daemon) lets
    every peer — they all hold the same config — regenerate the noise and the batches; the
    simulator releases nothing, so its seeded noise stands for the OS-entropy noise."""
    if cfg.effective_privacy_mode == "message" and cfg.local_steps > 1:
        return False
    return not (released and cfg.noise_seed is not None)


def privacy_plan(cfg: RunConfig, graph: nx.Graph, node: int,
                 public_examples: int | None, *, released: bool = False,
                 max_degree: int | None = None) -> PrivacyPlan:
    """Calibrate the noise for this node's public dataset size and degree (always on the safe
    side). `public_examples` is the node's dataset size where that is public (a shard of a
    public dataset, or any run without a privacy claim), None where it is not (a node's own
    file in a private run). `max_degree` is the graph's, when the caller already has it (the
    simulator, for N nodes of one graph)."""
    q, n = sample_rate(cfg, public_examples, node)
    if not cfg.private:
        return PrivacyPlan("none", cfg.delta, None, q, 0.0, 0.0, 0, formal=True, n=n)
    try:
        check_delta(cfg.delta, math.ceil(n))
        mode = cfg.effective_privacy_mode
        if mode == "gradient":
            steps = cfg.rounds * cfg.local_steps
            z = calibrate_noise_multiplier(cfg.epsilon, cfg.delta, q, steps)
            return PrivacyPlan("gradient", cfg.delta, cfg.epsilon, q, z, 0.0, steps,
                               formal=formal_guarantee(cfg, released=released), n=n,
                               clip=cfg.clip)
        if max_degree is None:
            max_degree = graph_max_degree(graph)
        params = PrimalDualParams.from_config(cfg, max_degree)
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
                           formal=formal_guarantee(cfg, released=released), lr=cfg.lr,
                           beta=params.beta,
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
