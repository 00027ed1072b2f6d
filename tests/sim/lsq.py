"""A distributed least-squares problem and a synchronous in-test driver for node algorithms."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx
import torch
from torch import Tensor

from node.core.algorithm import Gossip, PrimalDual, PrimalDualParams, default_eta


@dataclass
class LeastSquares:
    a: list[Tensor]
    b: list[Tensor]

    @classmethod
    def random(cls, nodes: int, dim: int = 5, rows: int = 20, seed: int = 0) -> LeastSquares:
        g = torch.Generator().manual_seed(seed)
        a = [torch.randn(rows, dim, generator=g, dtype=torch.float64) for _ in range(nodes)]
        b = [torch.randn(rows, generator=g, dtype=torch.float64) for _ in range(nodes)]
        return cls(a, b)

    @property
    def dim(self) -> int:
        return int(self.a[0].shape[1])

    def grad(self, i: int, w: Tensor) -> Tensor:
        return self.a[i].T @ (self.a[i] @ w - self.b[i]) / self.a[i].shape[0]

    def pooled_minimiser(self) -> Tensor:
        """argmin Σ_i f_i with f_i the node's mean squared error."""
        aa = sum(ai.T @ ai / ai.shape[0] for ai in self.a)
        ab = sum(ai.T @ bi / ai.shape[0] for ai, bi in zip(self.a, self.b, strict=True))
        return torch.linalg.solve(aa, ab)


class GaussianNoise:
    def __init__(self, std: float, generator: torch.Generator) -> None:
        self.std = std
        self.generator = generator

    def sample(self, numel: int) -> Tensor:
        return torch.randn(numel, generator=self.generator, dtype=torch.float64) * self.std


def primal_dual_nodes(
    graph: nx.Graph, problem: LeastSquares, *, lr: float, local_steps: int, gamma: float = 0.0
) -> list[PrimalDual]:
    max_degree = max(d for _, d in graph.degree())
    eta = default_eta(lr, local_steps, max_degree)
    params = PrimalDualParams(lr=lr, eta=eta, alpha=gamma / eta, local_steps=local_steps)
    w0 = torch.zeros(problem.dim, dtype=torch.float64)
    nodes = [PrimalDual(i, sorted(graph.neighbors(i)), w0, params) for i in sorted(graph)]
    return nodes


def run_rounds(
    nodes: list[PrimalDual] | list[Gossip],
    problem: LeastSquares,
    rounds: int,
    *,
    noise: Callable[[], object] | None = None,
    grad_noise: float = 0.0,
    seed: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> None:
    """Synchronous rounds with perfect delivery: every message of round r arrives for r+1."""
    g = torch.Generator().manual_seed(seed)
    dual_noise = GaussianNoise(0.0, g) if noise is None else noise()
    inbox: list[dict[int, Tensor]] = [{} for _ in nodes]

    def oracle_for(i: int) -> Callable[[Tensor], tuple[Tensor, float]]:
        def oracle(w: Tensor) -> tuple[Tensor, float]:
            grad = problem.grad(i, w)
            if grad_noise:
                grad = grad + grad_noise * torch.randn(
                    grad.numel(), generator=g, dtype=torch.float64
                )
            return grad, 0.0

        return oracle

    for r in range(rounds):
        outboxes = []
        for i, node in enumerate(nodes):
            # The round as NodeRunner drives it: what arrived, K local steps, the messages.
            node.absorb(inbox[i])  # type: ignore[arg-type]
            node.local_steps(oracle_for(i), set(node.neighbours))
            outboxes.append(node.messages(set(node.neighbours), dual_noise))  # type: ignore[arg-type]
        inbox = [{} for _ in nodes]
        for i, msgs in enumerate(outboxes):
            for j, y in msgs.items():
                inbox[j][i] = y
        if on_round is not None:
            on_round(r)
