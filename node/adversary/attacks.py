"""Byzantine attacks, as pure functions of what an attacker knows: the robustness grid's
simulated attackers (node.experiments.studies.robustness) and the hostile daemons of the chaos
tooling (node.tools.chaos.hostile_peer) write their messages here, so both attack the same way.

Every attack picks a fake model w̃ for one target i and sends the message an honest node with
model w̃ would send: w̃ itself in the gossip family, y = κ·z_{a|i} − 2β·A_{a|i}·w̃ in the
primal-dual family (written as the honest message h plus c·(w̃ − w_a), c = −2β·A_{a|i}). With
μ and σ the coordinate-wise mean and standard deviation of the honest models the attacker hears,
w_a its own honest model and x_i the target's model:

    sign_flip   w̃ = −w_a                        (the model with its sign flipped)
    scaled      w̃ = x_i + λ·(w_a − x_i), λ = 20  (the honest pull, boosted)
    alie        w̃ = μ − z·σ, z = 1               ("a little is enough", Baruch et al. 2019)
    ipm         w̃ = −ε·μ, ε = 0.5                (inner-product manipulation, Xie et al. 2019)
    dissensus   w̃ = x_i − ε·p_i, ε = 1.5         (He, Karimireddy & Jaggi 2022), p_i the pull
                of i's honest neighbours, Σ_k (x_k − x_i) over the number of its attackers:
                it cancels, then reverses, the consensus step of every neighbour
    sleeper     honest until round R, then sign_flip
    label_flip  honest messages; the node trains on labels C − 1 − y (data poisoning)

Every message stays inside the receivers' RMS bound B (`max_message_rms`): an attack message
a whose RMS exceeds 0.9·B is moved back towards the honest message h, h + t·(a − h) with the
largest t ∈ [0, 1] that fits, so today's validation accepts it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

ATTACKS: tuple[str, ...] = ("sign_flip", "scaled", "alie", "ipm", "dissensus", "sleeper",
                            "label_flip")
SCALE = 20.0
ALIE_Z = 1.0
IPM_EPS = 0.5
DISSENSUS_EPS = 1.5
BOUND_MARGIN = 0.9


@dataclass(frozen=True)
class View:
    """What the attacker knows when it writes to one target this round."""

    round: int
    own: Tensor            # its own honest model w_a
    target: Tensor         # the target's model x_i
    heard: Sequence[Tensor]  # the honest models it hears (its neighbours')
    pull: Tensor           # p_i: the target's honest consensus pull (see the module doc)


def fake_model(attack: str, view: View, *, sleep_rounds: int = 0) -> Tensor | None:
    """The model w̃ the attacker pretends to hold towards this target; None: be honest."""
    if attack == "sleeper":
        if view.round < sleep_rounds:
            return None
        attack = "sign_flip"
    if attack == "label_flip":
        return None
    if attack == "sign_flip":
        return -view.own
    if attack == "scaled":
        return view.target + SCALE * (view.own - view.target)
    heard = torch.stack(list(view.heard)) if view.heard else view.own.unsqueeze(0)
    mu = heard.mean(dim=0)
    if attack == "alie":
        sigma = heard.std(dim=0, unbiased=False)
        return mu - ALIE_Z * sigma
    if attack == "ipm":
        return -IPM_EPS * mu
    if attack == "dissensus":
        return view.target - DISSENSUS_EPS * view.pull
    raise ValueError(f"unknown attack {attack!r}")


def rms(x: Tensor) -> float:
    return float(torch.linalg.vector_norm(x.double())) / math.sqrt(max(1, x.numel()))


def inside_bound(attack: Tensor, honest: Tensor, bound: float) -> Tensor:
    """`attack` pulled back towards `honest` until its RMS is at most 0.9·bound."""
    limit = BOUND_MARGIN * bound
    if not math.isfinite(bound) or rms(attack) <= limit:
        return attack
    if rms(honest) >= limit:
        return honest * (limit / rms(honest))
    # Solve ‖h + t·d‖² = n·limit² for the largest t in [0, 1].
    h, d = honest.double(), (attack - honest).double()
    n = honest.numel()
    a, b, c = float(d @ d), 2.0 * float(h @ d), float(h @ h) - n * limit**2
    t = (-b + math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a)
    return (h + min(1.0, max(0.0, t)) * 0.999 * d).to(attack.dtype)


def attack_message(honest: Tensor, fake: Tensor, own: Tensor, coefficient: float,
                   bound: float) -> Tensor:
    """The message of a node holding `fake` instead of `own`: honest + c·(fake − own)
    (c = 1 for gossip, −2β·A_{a|i} for a dual), kept inside the RMS bound."""
    return inside_bound(honest + coefficient * (fake - own), honest, bound)


def flipped_labels(y: Tensor, classes: int) -> Tensor:
    """Label-flipping poison: class k becomes C − 1 − k."""
    return (classes - 1) - y
