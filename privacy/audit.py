"""Empirical lower bounds on ε from a distinguishing experiment (docs/PRIVACY.md, "How it is
tested").

An auditor scores every release of a mechanism run on two neighbouring datasets (D without the
canary, D' with it). A threshold chosen on one half of the trials is applied to the other half;
Clopper–Pearson bounds at confidence 1 − α turn the two detection rates into

    ε_lb = ln((TPR_lower − δ) / FPR_upper)            (Jagielski et al., NeurIPS 2020)

which, with probability at least 1 − α, is below the mechanism's true ε. A correct mechanism
must give ε_lb ≤ the ε it claims; an auditor that cannot also catch a broken mechanism (too
little noise, no clipping) proves nothing, so every use comes with such a positive control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import beta

__all__ = ["epsilon_lower_bound"]


def epsilon_lower_bound(positives: Sequence[float] | np.ndarray,
                        negatives: Sequence[float] | np.ndarray, *, delta: float,
                        alpha: float = 1e-3) -> float:
    """ε_lb from scores of releases with the canary (`positives`) and without (`negatives`).

    The first half of each list chooses the threshold and the direction of the test (a score
    may be larger or smaller with the canary); the second half alone gives the bound, so the
    choice does not bias it. Returns 0 when nothing is detected."""
    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    half_p, half_n = len(pos) // 2, len(neg) // 2
    best = (0.0, 1.0, 0.0)  # (ratio, direction, threshold)
    pooled = np.concatenate([pos[:half_p], neg[:half_n]])
    for direction in (1.0, -1.0):
        for t in np.quantile(direction * pooled, np.linspace(0.005, 0.995, 199)):
            tpr = float(np.mean(direction * pos[:half_p] > t))
            fpr = float(np.mean(direction * neg[:half_n] > t))
            ratio = (tpr + 1e-3) / (fpr + 1e-3)
            if ratio > best[0]:
                best = (ratio, direction, float(t))
    _, direction, threshold = best
    test_p, test_n = direction * pos[half_p:], direction * neg[half_n:]
    tp, fp = int(np.sum(test_p > threshold)), int(np.sum(test_n > threshold))
    n_p, n_n = len(test_p), len(test_n)
    tpr_low = float(beta.ppf(alpha / 2, tp, n_p - tp + 1)) if tp > 0 else 0.0
    fpr_high = float(beta.ppf(1 - alpha / 2, fp + 1, n_n - fp)) if fp < n_n else 1.0
    if tpr_low - delta <= 0 or fpr_high <= 0:
        return 0.0
    return max(0.0, math.log((tpr_low - delta) / fpr_high))
