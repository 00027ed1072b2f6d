"""D-PSGD and DP-D-PSGD as a pure, synchronous per-node state machine; the round it keeps is
`node.core.algorithm.round`.

Gossip family: D-PSGD (Lian et al., NeurIPS 2017) with Metropolis–Hastings weights; the weight of
a neighbour whose message did not arrive goes back to self so the weights still sum to one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import Tensor

from node.core.algorithm.round import DualNoise, GradientOracle, Outgoing, RoundAlgorithm


class Gossip(RoundAlgorithm):
    """One node of D-PSGD / DP-D-PSGD: local SGD steps, then Metropolis–Hastings averaging."""

    def __init__(
        self,
        node: int,
        weights: Mapping[int, float],
        w0: Tensor,
        lr: float,
        local_steps: int = 1,
        weight_decay: float = 0.0,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.node = node
        self.lr = lr
        self.k = local_steps
        self.weight_decay = weight_decay
        self.w = w0.detach().clone()
        self.self_weight = weights[node]
        self.weights = {j: w for j, w in sorted(weights.items()) if j != node}
        self._w_mixed = self.w  # the model after the previous round's mixing

    @property
    def neighbours(self) -> list[int]:
        return list(self.weights)

    def absorb(self, received: Mapping[int, Outgoing]) -> None:
        """w ← W_ii·w + Σ_j W_ij·w_j, where a missing neighbour's weight goes back to self."""
        dense = {j: y for j, y in received.items() if isinstance(y, Tensor)}
        if not dense:
            return
        if self.robust is not None:  # self-centred clipping around our own model
            dense = self.robust.apply(dense, {j: self.w for j in dense}, self.own_move())
        kept = self.self_weight + sum(w for j, w in self.weights.items() if j not in dense)
        mixed = kept * self.w
        for j, wj in dense.items():
            mixed.add_(wj, alpha=self.weights[j])
        self.w = self._w_mixed = mixed

    def own_move(self) -> float:
        """How far the model moved since the last mixing: the node's own voice in the
        adaptive clipping radius (node.core.algorithm.robust)."""
        return float(torch.linalg.vector_norm(self.w - self._w_mixed))

    def local_steps(self, oracle: GradientOracle, active: Collection[int]) -> float:
        losses = []
        for _ in range(self.k):
            g, loss = oracle(self.w)
            if self.weight_decay:
                g = g + self.weight_decay * self.w
            self.w = self.w - self.lr * g
            losses.append(loss)
        return sum(losses) / len(losses)

    def messages(self, active: Collection[int], noise: DualNoise) -> Mapping[int, Outgoing]:
        if noise.std > 0:
            raise ValueError("gossip algorithms have no dual messages; use gradient-mode privacy")
        return {j: self.w for j in self.weights if j in active}

    def neighbour_models(self, received: Mapping[int, Outgoing]) -> dict[int, Tensor]:
        """The neighbours' models this round's messages stand for (for consensus monitoring)."""
        return {j: y for j, y in received.items() if isinstance(y, Tensor)}

    def dual_norm(self) -> float | None:
        return None

    def state_dict(self) -> dict[str, Tensor]:
        return {"w": self.w}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.w = self._w_mixed = state["w"].clone()

