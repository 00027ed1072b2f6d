"""The server-side references' updates as pure functions: FedAvg and SCAFFOLD.

Each takes tensors and returns tensors: no clients, no clock, no I/O, so the update rules can be
read (and tested) apart from the loop that runs them (node.sim.references). Written from the
papers: FedAvg (McMahan et al. 2017), the example-weighted average of the clients' models after
K local steps; SCAFFOLD (Karimireddy et al. 2020), option II control variates with global step
size γ_g = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def fedavg(models: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """The weighted average Σ_i a_i · y_i of the clients' models (the weights sum to one)."""
    return sum((a * y for a, y in zip(weights, models, strict=True)),
               torch.zeros_like(models[0]))


@dataclass(frozen=True)
class ScaffoldState:
    """The server model x, the server control variate c and each client's c_i."""

    model: Tensor
    control: Tensor
    client_controls: tuple[Tensor, ...]

    @classmethod
    def start(cls, model: Tensor, clients: int) -> ScaffoldState:
        zeros = torch.zeros_like(model)
        return cls(model.clone(), zeros, tuple(zeros for _ in range(clients)))

    def correction(self, client: int) -> Tensor:
        """What client i adds to each local gradient: c − c_i."""
        return self.control - self.client_controls[client]


def scaffold(state: ScaffoldState, local_models: Sequence[Tensor], steps: int,
             lr: float) -> ScaffoldState:
    """One round from the clients' models y_i after `steps` corrected local steps at `lr`:
    c_i⁺ = c_i − c + (x − y_i)/(K·lr) (option II), x ← x + mean(y_i − x),
    c ← c + mean(c_i⁺ − c_i)."""
    x, c = state.model, state.control
    new_controls = tuple(c_i - c + (x - y) / (steps * lr)
                         for c_i, y in zip(state.client_controls, local_models, strict=True))
    model = x + torch.stack([y - x for y in local_models]).mean(dim=0)
    control = c + torch.stack([new - old for new, old in
                               zip(new_controls, state.client_controls, strict=True)]).mean(dim=0)
    return ScaffoldState(model, control, new_controls)
