"""The privacy mechanism a node runs, as a type: the one place that knows what each mechanism
does (docs/PRIVACY.md). Every other module asks the mechanism instead of comparing its name
(tests/unit/test_mechanism_names.py fails otherwise).

    NoDP        no privacy claim: plain mini-batch gradients
    ClipOnly    the clipped, noise-free control: Poisson sampling and clipping, no claim
    GradientDP  DP-SGD noise on every local step's clipped gradient sum; messages are
                post-processing
    SecureGradientDP  the same with `--secure-noise`: exact discrete Gaussian noise on the
                clipped sum rounded to an integer grid, and its own accountant (privacy.discrete)
    MessageDP   clipped gradients, Gaussian noise on every outgoing dual (DP-Norm / DP-ECL)

An instance is one node's calibrated mechanism (`node.core.privacy_plan.privacy_plan` builds
it): the public numbers fixed before training (q, n̂, z, σ, δ) and what follows from them — its
gradient policy, its dual noise, the releases a round makes, whether a node may move with
nobody to send to, whether its ε is proven and what is printed, the budget it spends from, and
its record (final.json's "privacy"). `MECHANISMS` maps a name to its type, as Opacus maps an
accountant's name to its class; a new mechanism (pairwise-cancelling correlated noise, issue
33) is one more subclass and one more entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from node.config import RunConfig
from node.core.algorithm import DualNoise, NoNoise, PrimalDualParams
from node.core.model import GradientPolicy
from privacy.accountant import Release
from privacy.budget import Budget
from privacy.ledger import Ledger
from privacy.lifetime import UNBOUNDED, Lifetime
from privacy.mechanisms import gaussian_noise
from privacy.modes import has_formal_guarantee, message_mode_noise_multiplier, message_mode_sigma


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """One node's privacy mechanism, calibrated (see the module docstring).

    `noise_multiplier` z is what the accountant charges per release; `sigma` the per-edge std
    of dual noise (0 where there is none); `steps_per_node` the releases z is calibrated for;
    `n` the public dataset size n̂ that q and the normaliser q·n̂ come from; `formal` whether a
    proof covers what this run prints (`privacy_plan.formal_guarantee`)."""

    name: ClassVar[str]  # its key in MECHANISMS
    mode: ClassVar[str] = "none"  # what its record and its ledger call it
    claims_privacy: ClassVar[bool] = False  # prints an ε, spends a budget, keeps a ledger
    noises_duals: ClassVar[bool] = False  # its noise is sized from the primal-dual step
    moves_alone: ClassVar[bool] = True  # may train in a round with no neighbour up
    # Its releases are discrete Gaussians, accounted by privacy.discrete (`--secure-noise`).
    discrete: ClassVar[bool] = False

    delta: float
    target_epsilon: float | None
    sample_rate: float
    noise_multiplier: float = 0.0
    sigma: float = 0.0
    steps_per_node: int = 0
    formal: bool = True
    n: float = 0.0
    clip: float = 1.0

    @classmethod
    def steps(cls, cfg: RunConfig) -> int:
        """How many releases of one node the noise is calibrated for."""
        return 0

    @classmethod
    def proven(cls, cfg: RunConfig) -> bool:
        """Whether a proof covers this mechanism under `cfg` (before the noise seed)."""
        return True

    @classmethod
    def calibrated(cls, cfg: RunConfig, *, sample_rate: float, n: float,
                   noise_multiplier: float, formal: bool, degree: int,
                   params: PrimalDualParams | None) -> Mechanism:
        """The node's mechanism from the calibrated z; `degree` is the node's in the graph and
        `params` the primal-dual algorithm's (None for D-PSGD)."""
        return cls(delta=cfg.delta, target_epsilon=cfg.epsilon if cls.claims_privacy else None,
                   sample_rate=sample_rate, noise_multiplier=noise_multiplier,
                   steps_per_node=cls.steps(cfg), formal=formal, n=n, clip=cfg.clip)

    @property
    def expected_batch(self) -> float:
        """The normaliser q·n̂ of the clipped-gradient sum: public, fixed before training."""
        return self.sample_rate * self.n

    def gradient_policy(self) -> GradientPolicy:
        """How each local step touches the data (node.core.model.trainer)."""
        return GradientPolicy("plain")

    def dual_noise(self, generator: torch.Generator) -> DualNoise:
        """The noise added to every outgoing dual, drawn from the node's private generator."""
        return NoNoise()

    def releases(self, local_steps: int) -> list[Release]:
        """What one round charges: none without a claim."""
        return []

    def lifetime_releases(self, local_steps: int) -> list[Release]:
        """What one round costs the data over its lifetime: the round's releases where a proof
        covers them; otherwise a release without a proven bound (the data's lifetime ε is
        infinite from then on: whatever was sent is not covered by any ε)."""
        return self.releases(local_steps) if self.proven_claim else [UNBOUNDED]

    def planned_releases(self, done: int) -> list[Release]:
        """What the rest of this run may release, `done` releases into its schedule: the
        lifetime cap is checked against these before anything is released."""
        if not self.proven_claim:
            return [UNBOUNDED]
        left = max(0, self.steps_per_node - done)
        return [Release(self.noise_multiplier, self.sample_rate, left)] if left else []

    @property
    def proven_claim(self) -> bool:
        """Whether this run prints an ε: it claims one and a proof covers it."""
        return self.claims_privacy and self.formal

    def budget(self, ledger: Ledger | None = None, lifetime: Lifetime | None = None) -> Budget:
        """The spend this mechanism is held to: its target where its ε is proven (else none to
        stop at), its calibrated schedule, and — in the daemon — the ledger it commits to and
        the data's lifetime ledger."""
        target = self.target_epsilon if self.proven_claim else None
        schedule = Release(self.noise_multiplier, self.sample_rate, self.steps_per_node)
        if ledger is None:
            budget = Budget(delta=self.delta, target=target, schedule=schedule,
                            discrete=self.discrete)
        else:
            budget = Budget.from_ledger(ledger, delta=self.delta, target=target,
                                        schedule=schedule, discrete=self.discrete)
        budget.lifetime = lifetime
        return budget

    def epsilon(self, budget: Budget) -> float | None:
        """ε to print after `budget`'s spend: None without a claim or where no proof covers it."""
        if not self.claims_privacy:
            return None
        spent = budget.epsilon()
        return spent if self.formal and math.isfinite(spent) else None

    def lifetime_epsilon(self, budget: Budget) -> float | None:
        """ε of every release ever made from the node's data, this run's included, composed by
        the accountant; None where this run prints none, without a lifetime ledger (the
        simulator), or once a release without a proven bound was made from the data."""
        spent = budget.lifetime_epsilon() if self.proven_claim else None
        return spent if spent is not None and math.isfinite(spent) else None

    def record(self) -> dict[str, Any]:
        """final.json's "privacy": the calibration, enough for anyone to recompute ε."""
        return {"mode": self.mode, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "steps_per_node": self.steps_per_node,
                "sigma": self.sigma, "delta": self.delta, "formal": self.formal}

    def _clipped(self) -> GradientPolicy:
        """Poisson sampling at q and per-sample clipping, normalised by q·n̂; no noise."""
        return GradientPolicy("clipped", self.clip, 0.0, self.sample_rate, self.expected_batch)


class NoDP(Mechanism):
    name = "none"


class ClipOnly(Mechanism):
    """Clipped, noise-free control: it measures what clipping alone costs. It claims nothing,
    so its record says mode "none" like NoDP's."""

    name = "clip"

    def gradient_policy(self) -> GradientPolicy:
        return self._clipped()


class GradientDP(Mechanism):
    """Every local step is a Poisson-subsampled Gaussian on the clipped gradient sum: R·K
    releases per node, any K (privacy.modes)."""

    name = mode = "gradient"
    claims_privacy = True

    @classmethod
    def steps(cls, cfg: RunConfig) -> int:
        return cfg.rounds * cfg.local_steps

    def gradient_policy(self) -> GradientPolicy:
        return GradientPolicy("noisy", self.clip, self.noise_multiplier, self.sample_rate,
                              self.expected_batch)

    def releases(self, local_steps: int) -> list[Release]:
        return [Release(self.noise_multiplier, self.sample_rate, local_steps)]


class SecureGradientDP(GradientDP):
    """GradientDP with the floating-point-safe sampler (docs/PRIVACY.md, "Secure noise"): its z
    is calibrated and charged with the discrete Gaussian's accountant, in the run's ledger and
    in the data's lifetime ledger (`discrete` budget, privacy.lifetime)."""

    name = mode = "gradient-secure"
    discrete = True

    def gradient_policy(self) -> GradientPolicy:
        return GradientPolicy("secure", self.clip, self.noise_multiplier, self.sample_rate,
                              self.expected_batch)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "noise": "discrete"}


@dataclass(frozen=True, kw_only=True)
class MessageDP(Mechanism):
    """Clipped gradients and independent N(0, σ²) on every outgoing dual: one release per round
    (proven for K = 1 only). σ comes from the same `PrimalDualParams` the algorithm runs with,
    and a node with nobody to send to does not move: the private state may only change when
    the change is released."""

    name = mode = "message"
    claims_privacy = True
    noises_duals = True
    moves_alone = False

    params: PrimalDualParams

    @classmethod
    def steps(cls, cfg: RunConfig) -> int:
        return cfg.rounds

    @classmethod
    def proven(cls, cfg: RunConfig) -> bool:
        return has_formal_guarantee("message", cfg.local_steps)

    @classmethod
    def calibrated(cls, cfg: RunConfig, *, sample_rate: float, n: float,
                   noise_multiplier: float, formal: bool, degree: int,
                   params: PrimalDualParams | None) -> Mechanism:
        if params is None:
            raise ValueError("message mode noises duals: give the primal-dual parameters.")
        # z(E) is not monotone in E; the largest σ over every degree the node can have keeps
        # each round's z at or above the calibrated one when neighbours go down.
        sigma = max(message_mode_sigma(noise_multiplier, degree=e, sample_rate=sample_rate, n=n,
                                       clip=cfg.clip, **_shape(params))
                    for e in range(1, degree + 1))
        return cls(delta=cfg.delta, target_epsilon=cfg.epsilon, sample_rate=sample_rate,
                   noise_multiplier=noise_multiplier, sigma=sigma, steps_per_node=cls.steps(cfg),
                   formal=formal, n=n, clip=cfg.clip, params=params)

    def gradient_policy(self) -> GradientPolicy:
        return self._clipped()

    def dual_noise(self, generator: torch.Generator) -> DualNoise:
        return GaussianDualNoise(self.sigma, generator)

    def releases(self, local_steps: int) -> list[Release]:
        """Always the calibrated schedule's (z*, q). The z a round achieves depends on how many
        neighbours are up, which depends on what happened before: a running tally of achieved
        z's would compose adaptively chosen parameters, which the PLD accountant does not
        cover. σ makes every round's z at least z* whatever the degree
        (`round_noise_multiplier`), so charging z* each round — a fixed, non-adaptive schedule
        — is a proven bound; a round with nobody to send to is charged too (it releases
        nothing, which z* dominates)."""
        return [Release(self.noise_multiplier, self.sample_rate, 1)]

    def round_noise_multiplier(self, active_degree: int) -> float:
        """z actually achieved in a round whose messages went to `active_degree` neighbours."""
        return message_mode_noise_multiplier(self.sigma, degree=active_degree,
                                             sample_rate=self.sample_rate, n=self.n,
                                             clip=self.clip, **_shape(self.params))


def _shape(params: PrimalDualParams) -> dict[str, float]:
    """What the message-mode sensitivity needs of the primal-dual step (privacy.modes)."""
    return {"lr": params.lr, "beta": params.beta, "eta": params.eta}


class GaussianDualNoise:
    """Independent N(0, σ²) per outgoing dual coordinate, from an explicit generator."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        self.std = std
        self.generator = generator

    def sample(self, numel: int) -> torch.Tensor:
        # Drawn where the generator lives (a GPU node's private generator is on its device);
        # added to the CPU duals the messages are made of.
        return gaussian_noise(numel, self.std, self.generator).cpu()


MECHANISMS: dict[str, type[Mechanism]] = {
    kind.name: kind for kind in (NoDP, ClipOnly, GradientDP, SecureGradientDP, MessageDP)}


def mechanism_type(cfg: RunConfig) -> type[Mechanism]:
    """The mechanism `cfg` asks for: its privacy mode under a finite ε, else the clipped
    control (`clip_only`) or none."""
    if cfg.private:
        return MECHANISMS[cfg.effective_privacy_mode + ("-secure" if cfg.secure_noise else "")]
    return MECHANISMS["clip" if cfg.clip_only else "none"]


def claims_privacy(record: Mapping[str, Any]) -> bool:
    """Whether a mechanism's record (final.json's "privacy") is of one that claims an ε."""
    return MECHANISMS[record["mode"]].claims_privacy
