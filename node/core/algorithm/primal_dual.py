"""DP-Norm and its primal-dual baselines (DP-ECL, ECL) as a pure, synchronous per-node state
machine; the round it keeps is `node.core.algorithm.round`.

Primal-dual family (docs/DESIGN.md §1; Fukami et al., IEEE TIFS 2024, on top of ECL/PDMM). Per
node i with duals z_{i|j}, edge signs A_{i|j} = ±1, μ = 1/lr, γ = αη, β = 1/(1+γ), κ = (1−γ)/(1+γ):

    local step:  w ← (μ·w − g + β·η·Σ_j A_{i|j}·z_{i|j}) / (μ + β·η·E_i)
    message:     y_{i|j} = κ·z_{i|j} − 2·β·A_{i|j}·w + ξ_{ij}
    continue:    w ← w − (1/(2β·E_i))·Σ_j A_{i|j}·ξ_{ij}      (message-mode noise only)
    dual:        z_{i|j} ← (1−θ)·z_{i|j} + θ·y_{j|i}

α = 0 and ξ = 0 is exactly ECL (PDMM for θ = 1); α > 0 is DP-Norm's dual regulariser −α‖Λ‖², which
turns the noise random walk of the duals into a bounded AR(1) process. The continuation makes the
node's hidden state a function of what its neighbours can jointly reconstruct from the messages,
which is what the message-mode privacy proof needs (docs/DESIGN.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from node.config import RunConfig
from node.core.algorithm.robust import dual_reference
from node.core.algorithm.round import DualNoise, GradientOracle, Outgoing, RoundAlgorithm
from node.errors import ConfigError
from topologies import edge_sign


@dataclass(frozen=True, slots=True)
class PrimalDualParams:
    """Hyper-parameters of one node of the primal-dual family."""

    lr: float
    eta: float
    theta: float = 1.0
    alpha: float = 0.0
    weight_decay: float = 0.0
    local_steps: int = 1

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.eta > 0:
            raise ValueError(f"eta must be positive, got {self.eta}")
        if not 0 < self.theta <= 1:
            raise ValueError(f"theta must be in (0, 1], got {self.theta}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")
        if not 0 <= self.gamma < 1:
            raise ValueError(
                f"gamma = alpha*eta = {self.gamma:.3g} must be below 1 (keep it in [0, 0.5]); "
                "lower alpha"
            )
        if self.local_steps < 1:
            raise ValueError(f"local_steps must be at least 1, got {self.local_steps}")

    @classmethod
    def from_config(cls, cfg: RunConfig, max_degree: int) -> PrimalDualParams:
        """The run's parameters; η from ECL-ISVR's formula unless given, α from γ unless given."""
        eta = cfg.eta if cfg.eta is not None else default_eta(cfg.lr, cfg.local_steps, max_degree)
        gamma = cfg.effective_gamma
        alpha = cfg.alpha if gamma is None else alpha_for_gamma(gamma, eta)
        try:
            return cls(lr=cfg.lr, eta=eta, theta=cfg.theta, alpha=alpha or 0.0,
                       weight_decay=cfg.weight_decay, local_steps=cfg.local_steps)
        except ValueError as exc:
            raise ConfigError(f"{exc}.") from None

    @property
    def mu(self) -> float:
        return 1.0 / self.lr

    @property
    def gamma(self) -> float:
        return self.alpha * self.eta

    @property
    def beta(self) -> float:
        return 1.0 / (1.0 + self.gamma)

    @property
    def kappa(self) -> float:
        return (1.0 - self.gamma) / (1.0 + self.gamma)


def default_eta(lr: float, local_steps: int, max_degree: int) -> float:
    """ECL-ISVR's edge penalty η = 1/(lr·(K·E + K − E)), with E the graph's maximum degree.

    Using one η for the whole network (rather than each node's own degree) keeps the fixed point
    the minimiser of Σ_i f_i on irregular graphs: with node-dependent η_i it would minimise
    Σ_i f_i/η_i instead.
    """
    k, e = local_steps, max_degree
    return 1.0 / (lr * (k * e + k - e))


def alpha_for_gamma(gamma: float, eta: float) -> float:
    """The α that gives the dimensionless denoising strength γ = α·η."""
    return gamma / eta



class PrimalDual(RoundAlgorithm):
    """One node of DP-Norm / DP-ECL / ECL: primal model w and one dual z per neighbour."""

    def __init__(
        self, node: int, neighbours: Sequence[int], w0: Tensor, params: PrimalDualParams
    ) -> None:
        self.node = node
        self.params = params
        self.w = w0.detach().clone()
        self.signs = {j: float(edge_sign(node, j)) for j in sorted(neighbours)}
        self.duals = {j: torch.zeros_like(self.w) for j in self.signs}
        self._sent: dict[int, Tensor] = {}  # the last message to each neighbour
        self._prior: dict[int, Tensor] = {}  # the one before, for edges sent this round
        self._sent_now: set[int] = set()
        self._w_before = self.w  # the model at the previous absorb

    @property
    def neighbours(self) -> list[int]:
        return list(self.signs)

    def absorb(self, received: Mapping[int, Outgoing]) -> None:
        """Dual update from the neighbours' messages; a missing neighbour keeps its old z."""
        theta = self.params.theta
        # A compressed payload is meaningless without the stream's copy
        # (node.core.algorithm.compressed).
        dense = {j: y for j, y in received.items() if isinstance(y, Tensor)}
        if self.robust is not None:
            # Only released values and the continued w (itself a function of the releases, see
            # dual_messages) enter: the clipping is post-processing (docs/PRIVACY.md).
            own = 2.0 * self.params.beta * float(torch.linalg.vector_norm(
                self.w - self._w_before))
            dense = self.robust.apply(dense, {j: self.expected(j) for j in dense}, own)
            self._w_before = self.w
        for j, y in dense.items():
            z = self.duals[j]
            if theta == 1.0:
                z.copy_(y)
            else:
                z.mul_(1.0 - theta).add_(y, alpha=theta)

    def local_steps(self, oracle: GradientOracle, active: Collection[int]) -> float:
        """K closed-form primal steps; returns the mean training loss over them."""
        p = self.params
        edges = [j for j in self.signs if j in active]
        pull = torch.zeros_like(self.w)
        for j in edges:
            pull.add_(self.duals[j], alpha=self.signs[j])
        pull.mul_(p.beta * p.eta)
        den = p.mu + p.beta * p.eta * len(edges)
        losses = []
        for _ in range(p.local_steps):
            g, loss = oracle(self.w)
            if p.weight_decay:
                g = g + p.weight_decay * self.w
            self.w = (p.mu * self.w - g + pull) / den
            losses.append(loss)
        return sum(losses) / len(losses)

    def messages(self, active: Collection[int], noise: DualNoise) -> Mapping[int, Outgoing]:
        return self.dual_messages(active, noise)

    def dual_messages(self, active: Collection[int], noise: DualNoise) -> dict[int, Tensor]:
        """Outgoing duals y_{i|j}, each with its own noise draw, then the continuation."""
        p = self.params
        edges = [j for j in self.signs if j in active]
        out: dict[int, Tensor] = {}
        released_noise = torch.zeros_like(self.w) if noise.std > 0 else None
        for j in edges:
            a = self.signs[j]
            y = p.kappa * self.duals[j] - (2.0 * p.beta * a) * self.w
            if released_noise is not None:
                xi = noise.sample(self.w.numel())
                y.add_(xi)
                released_noise.add_(xi, alpha=a)
            out[j] = y
        if self.robust is not None:
            self._remember(out)
        if released_noise is not None and edges:
            # Continue from what the neighbours can reconstruct jointly, so that the hidden state
            # never holds more private information than was released (docs/DESIGN.md §2).
            self.w = self.w - released_noise / (2.0 * p.beta * len(edges))
        return out

    def _remember(self, out: Mapping[int, Tensor]) -> None:
        self._sent_now = set(out)
        for j, y in out.items():
            self._prior[j] = self._sent.get(j, torch.zeros_like(self.w))
            self._sent[j] = y

    def expected(self, j: int) -> Tensor:
        """The dual message j would send at consensus, from this node's state alone: κ times
        the last message j's dual holds from us, plus 2β·A_{i|j}·w (node.core.algorithm.robust)."""
        p = self.params
        held = self._prior if j in self._sent_now else self._sent
        prior = held.get(j)
        return dual_reference(p.kappa, p.beta, self.signs[j],
                              torch.zeros_like(self.w) if prior is None else prior, self.w)

    def robust_state(self) -> dict[str, Tensor]:
        state = super().robust_state()
        if self.robust is not None:  # the references need what each neighbour holds from us
            state.update({f"robust.sent{j}": y for j, y in self._sent.items()})
            state.update({f"robust.prior{j}": self._prior[j] for j in self._sent_now})
        return state

    def load_robust_state(self, state: Mapping[str, Tensor]) -> None:
        super().load_robust_state(state)
        if self.robust is not None:
            saved = {j for j in self.signs if f"robust.sent{j}" in state}
            self._sent = {j: state[f"robust.sent{j}"].clone() for j in saved}
            self._sent_now = {j for j in saved if f"robust.prior{j}" in state}
            self._prior = {j: state[f"robust.prior{j}"].clone() for j in self._sent_now}

    def dual_norm(self) -> float | None:
        """RMS per coordinate of the duals: sqrt(Σ_j ‖z_{i|j}‖² / (E_i·d))."""
        if not self.duals:
            return None
        total = sum(float(z.pow(2).sum()) for z in self.duals.values())
        return math.sqrt(total / (len(self.duals) * self.w.numel()))

    def state_dict(self) -> dict[str, Tensor]:
        state = {"w": self.w}
        state.update({f"z{j}": z for j, z in self.duals.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.w = self._w_before = state["w"].clone()
        for j in self.duals:
            self.duals[j] = state[f"z{j}"].clone()
