"""White-box canary audit with positive controls (docs/PRIVACY.md, "How it is tested").

Two worlds: the batch D, or D plus a canary whose gradient is 10C along a known direction u.
The auditor knows D and scores each release by s = ⟨release·(q·n) − clipped_sum(D), u⟩. A
threshold picked on half of the trials is applied to the other half, and Clopper–Pearson bounds
at confidence 1 − 1e-3 give the lower bound (Jagielski et al. 2020)

    ε_lb = ln((TPR_lower − δ) / FPR_upper).

The correct mechanism must give ε_lb ≤ the claimed ε; mechanisms with no noise, no clipping, or
noise 10× too small must be caught by the very same test (otherwise the auditor proves nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from scipy.stats import beta
from torch import Tensor

from privacy.accountant import calibrate_noise_multiplier, epsilon
from privacy.mechanisms import (
    clipped_grad_sum,
    make_generator,
    per_sample_gradients,
    privatize_gradient_sum,
)

DELTA, CLIP, DIM, TRIALS, ALPHA = 1e-5, 1.0, 16, 20_000, 1e-3
CLAIM = 1.0
Z = calibrate_noise_multiplier(CLAIM, DELTA, 1.0, 1)  # one full-batch release: ε = 1 exactly


def _linear_loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    # ∇_w of ⟨w, x⟩ is x: each example *is* its gradient, so canaries are easy to plant.
    del y
    return (x * params["w"]).sum(dim=1).mean()


PARAMS = {"w": torch.zeros(DIM)}
BACKGROUND = torch.randn(32, DIM, generator=torch.Generator().manual_seed(0)) * 3.0
CANARY = torch.zeros(1, DIM)
CANARY[0, 0] = 10.0 * CLIP
LABELS = torch.zeros(33, dtype=torch.long)

Mechanism = Callable[[Tensor, torch.Generator], Tensor]  # (batch, generator) → TRIALS releases


def _correct(batch: Tensor, g: torch.Generator, *, z: float = Z) -> Tensor:
    total, _, _ = clipped_grad_sum(_linear_loss, PARAMS, batch, LABELS[: len(batch)], CLIP)
    return privatize_gradient_sum(total.expand(TRIALS, DIM).clone(), CLIP, z, 1.0, g)


def _no_noise(batch: Tensor, g: torch.Generator) -> Tensor:
    return _correct(batch, g, z=0.0)


def _noise_too_small(batch: Tensor, g: torch.Generator) -> Tensor:
    return _correct(batch, g, z=Z / 10)


def _no_clipping(batch: Tensor, g: torch.Generator) -> Tensor:
    grads, _ = per_sample_gradients(_linear_loss, PARAMS, batch, LABELS[: len(batch)])
    return privatize_gradient_sum(grads.sum(0).expand(TRIALS, DIM).clone(), CLIP, Z, 1.0, g)


def _epsilon_lower_bound(mechanism: Mechanism, seed: int) -> float:
    g = make_generator(seed)
    known, _, _ = clipped_grad_sum(_linear_loss, PARAMS, BACKGROUND, LABELS[:32], CLIP)
    out = (mechanism(BACKGROUND, g) - known)[:, 0]
    into = (mechanism(torch.cat([BACKGROUND, CANARY]), g) - known)[:, 0]
    half = TRIALS // 2
    pooled = torch.cat([into[:half], out[:half]])
    candidates = torch.quantile(pooled, torch.linspace(0.005, 0.995, 199))
    best = max(candidates.tolist(), key=lambda t: _rate_ratio(into[:half], out[:half], t))
    tp = int((into[half:] > best).sum())
    fp = int((out[half:] > best).sum())
    n = TRIALS - half
    tpr_low = beta.ppf(ALPHA / 2, tp, n - tp + 1) if tp > 0 else 0.0
    fpr_high = beta.ppf(1 - ALPHA / 2, fp + 1, n - fp) if fp < n else 1.0
    if tpr_low - DELTA <= 0:
        return 0.0
    return max(0.0, math.log((tpr_low - DELTA) / fpr_high))


def _rate_ratio(positives: Tensor, negatives: Tensor, threshold: float) -> float:
    tpr = float((positives > threshold).float().mean())
    fpr = float((negatives > threshold).float().mean())
    return (tpr + 1e-3) / (fpr + 1e-3)


def test_claimed_epsilon_is_that_of_one_release() -> None:
    assert epsilon(Z, 1.0, 1, DELTA) <= CLAIM


@pytest.mark.parametrize("seed", [1, 2])
def test_correct_mechanism_passes_the_audit(seed: int) -> None:
    assert _epsilon_lower_bound(_correct, seed) <= CLAIM


@pytest.mark.parametrize("broken", [_no_noise, _no_clipping, _noise_too_small])
def test_broken_mechanisms_are_flagged(broken: Mechanism) -> None:
    assert _epsilon_lower_bound(broken, 3) > CLAIM
