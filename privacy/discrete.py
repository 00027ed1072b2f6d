"""Secure noise (`--secure-noise`): the discrete Gaussian on an integer grid, and its accountant.

float32 Gaussian noise has a support cut and lattice gaps that depend on the value it is added
to (Mironov 2012); the default sampler (privacy.mechanisms) is proven only for the idealised
real-valued mechanism. Here every release is exact integer arithmetic (docs/PRIVACY.md,
"Secure noise"):

    v_k = round(clip_C(g_k) · k/C)  ∈ Z^d,  kept only if ‖v_k‖² ≤ D (checked in integers)
    V   = Σ_{k∈B} v_k + X,          X ~ N_Z(0, s² I)  (OpenDP's exact sampler, OS entropy)
    g̃   = V · (C/k) / (q·n̂)         (post-processing of the integer release V)

One example moves V by v_k, so the L2 sensitivity is √D ≤ k·(1 + 1e-5) + √d/2 (rounding moves a
coordinate by ≤ 1/2); k = ⌈√d / (2·GRID_SLACK)⌉ keeps the rounding's share at GRID_SLACK.
s = z·√D, so z is the noise multiplier in grid units.

ε: the discrete Gaussian has at most the Rényi divergences of the continuous one for integer
shifts (Canonne, Kamath, Steinke 2020), but whether the continuous PLD dominates it is not
known, so its releases are accounted with Rényi DP: Zhu & Wang's (2019) general bound for the
Poisson-subsampled mechanism, which needs only the base mechanism's RDP, at integer orders,
converted to (ε, δ) as in Canonne, Kamath, Steinke (2020, Prop. 12). No clock, no file: the
noise is OpenDP's (OS randomness), the Poisson sample the caller's private generator's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from privacy.accountant import MAX_NOISE_MULTIPLIER, Release, check_epsilon
from privacy.errors import PrivacyError
from privacy.mechanisms import LossFn, _clip_factors, _per_sample_parts, _row_norms, _zero_rows

#: The largest share of the sensitivity that rounding to the grid may add.
GRID_SLACK = 0.01
#: Integer orders α at which the Rényi bound is evaluated.
ORDERS = tuple(range(2, 257))
#: OpenDP samples int64; a noise scale above this could overflow a sum of releases.
MAX_SCALE = 1e12
# Elements per int64 temporary when rounding rows to the grid (8 MiB).
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Grid:
    """The integer grid a clipped gradient is rounded to: `scale` grid steps per unit (k/C) and
    `bound_sq` = D, the largest squared L2 norm an example's rounded gradient may have."""

    scale: float
    bound_sq: int

    @property
    def sensitivity(self) -> float:
        """√D: what one example can move the integer sum by, in grid units."""
        return math.sqrt(self.bound_sq)


def grid_for(clip: float, dim: int) -> Grid:
    """The grid for `dim` coordinates clipped to `clip`: rounding adds ≤ GRID_SLACK to √D."""
    if not (clip > 0 and math.isfinite(clip)) or dim < 1:
        raise PrivacyError(f"secure noise needs a clip C > 0 and a dimension ≥ 1, got C={clip}, "
                           f"d={dim}.")
    half = math.sqrt(dim) / 2
    steps = math.ceil(half / GRID_SLACK)
    # 1e-5 above k: float32 clipping may leave a norm a hair above C (it shrinks by 1e-6).
    return Grid(steps / clip, math.ceil((steps * (1 + 1e-5) + half) ** 2))


def noise_scale(noise_multiplier: float, grid: Grid) -> float:
    """s, the discrete Gaussian's scale in grid units, for noise multiplier z: s ≥ z·√D."""
    scale = noise_multiplier * grid.sensitivity * (1 + 1e-12)
    if scale > MAX_SCALE:
        raise PrivacyError(f"secure noise needs a scale below {MAX_SCALE:g} grid steps, got "
                           f"{scale:.3g}; lower the noise multiplier or the model size.")
    return scale


def clipped_grid_sum(loss_fn: LossFn, params: Mapping[str, Tensor], x: Tensor, y: Tensor,
                     clip: float, grid: Grid, chunk_size: int = 64
                     ) -> tuple[Tensor, Tensor, int]:
    """Σ_k v_k as an int64 vector (on CPU), the per-example losses, and the number of examples
    that contributed zero (a non-finite gradient, or a rounded norm above √D, which exact
    arithmetic never gives). Losses and that count stay on the node (privacy.mechanisms)."""
    d = sum(p.numel() for p in params.values())
    total = torch.zeros(d, dtype=torch.int64)
    losses: list[Tensor] = [torch.zeros(0)]
    dropped = 0
    for start in range(0, x.shape[0], chunk_size):
        parts, loss = _per_sample_parts(loss_fn, params, x[start:start + chunk_size],
                                        y[start:start + chunk_size])
        losses.append(loss.detach().cpu())
        norms = _row_norms(parts)
        bad = ~torch.isfinite(norms)
        if bool(bad.any()):
            parts = [_zero_rows(part, bad) for part in parts]
        factor = _clip_factors(norms, clip).cpu() * grid.scale
        rows, squares = _grid_rows(parts, factor)
        over = squares > grid.bound_sq
        if bool(over.any()):
            rows = rows - _grid_rows(parts, torch.where(over, factor, 0.0))[0]
        dropped += int(bad.sum()) + int((over & ~bad.cpu()).sum())
        total += rows
    return total, torch.cat(losses), dropped


def poisson_sample(n: int, rate: float, generator: torch.Generator) -> Tensor:
    """Indices of a Poisson sample at rate ≤ q exactly: each index is kept when a uniform 62-bit
    integer is below ⌊q·2^62⌋. The default sampler compares a float32 uniform with q, which
    keeps an example with probability ⌈q·2^24⌉/2^24 — up to 2^-24 above the q accounted; here
    the rate is ⌊q·2^62⌋/2^62 ≤ q, and ε is monotone in q."""
    if n < 0 or not 0.0 <= rate <= 1.0:
        raise PrivacyError(f"Poisson sampling needs n ≥ 0 and a rate in [0, 1], got n={n}, "
                           f"rate={rate}.")
    threshold = math.floor(rate * 2.0 ** 62)
    # randint over a power-of-two range is an unbiased 62-bit integer (no modulo bias).
    draws = torch.randint(0, 2 ** 62, (n,), generator=generator, device=generator.device,
                          dtype=torch.int64)
    return torch.nonzero(draws < threshold, as_tuple=False).reshape(-1)


def _grid_rows(parts: list[Tensor], factor: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ_rows round(row · factor), each row's exact squared integer norm), over the blocks."""
    sums: list[Tensor] = []
    squares = torch.zeros(len(factor), dtype=torch.int64)
    for part in parts:
        block = torch.zeros(part.shape[1], dtype=torch.int64)
        rows = max(1, _BLOCK // max(1, part.shape[1]))
        for i in range(0, part.shape[0], rows):
            ints = torch.round(part[i:i + rows].double().cpu()
                               * factor[i:i + rows].unsqueeze(1)).to(torch.int64)
            squares[i:i + rows] += (ints * ints).sum(dim=1)
            block += ints.sum(dim=0)
        sums.append(block)
    return torch.cat(sums), squares


@functools.lru_cache(maxsize=8)
def _opendp_measurement(size: int, scale: float) -> Any:
    try:
        import opendp.prelude as dp
    except ImportError:
        raise PrivacyError("--secure-noise needs OpenDP's exact samplers: pip install "
                           "opendp.") from None
    dp.enable_features("contrib")
    return dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64"), size=size),
                              dp.l2_distance(T="f64"), scale=scale)


def discrete_gaussian(size: int, scale: float) -> np.ndarray:
    """`size` independent draws of N_Z(0, scale²) as int64, from OpenDP's exact sampler (OS
    entropy, rational arithmetic: no floating-point support cut)."""
    if size < 0 or not scale > 0:
        raise PrivacyError(f"a discrete Gaussian needs size ≥ 0 and scale > 0, got {size}, "
                           f"{scale}.")
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(_opendp_measurement(size, float(scale))([0] * size), dtype=np.int64)


def available() -> bool:
    """Whether OpenDP's samplers can be loaded (checked before a run starts)."""
    try:
        _opendp_measurement(1, 1.0)
    except PrivacyError:
        return False
    return True


def secure_release(grid_sum: Tensor, noise_multiplier: float, grid: Grid) -> Tensor:
    """V = Σ v_k + X, exactly, in int64: the integer release (see the module docstring)."""
    noise = discrete_gaussian(grid_sum.numel(), noise_scale(noise_multiplier, grid))
    return grid_sum + torch.from_numpy(noise)


def _log_binomial(n: int, k: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
                     for j in k])


@functools.lru_cache(maxsize=256)
def subsampled_rdp(noise_multiplier: float, sample_rate: float,
                   higher: float = 3.0) -> tuple[float, ...]:
    """RDP of one Poisson-subsampled discrete Gaussian (z, q) at each of ORDERS, by Zhu & Wang's
    (2019) general bound for any mechanism: with ρ = 1/(2z²) the base's RDP is ε(j) = jρ, and

        (α−1)·ε_q(α) ≤ log[(1−q)^{α−1}(1+(α−1)q) + C(α,2)q²(1−q)^{α−2}e^{2ρ}
                           + 3 Σ_{j=3}^{α} C(α,j) q^j (1−q)^{α−j} e^{j(j−1)ρ}].

    `higher` is that 3; with 1 the sum is exactly the "remove" direction's moment, the same as
    the continuous subsampled Gaussian's (a test compares it with dp-accounting's)."""
    z, q = noise_multiplier, sample_rate
    if q == 0.0:
        return tuple(0.0 for _ in ORDERS)
    if z == 0.0:
        return tuple(math.inf for _ in ORDERS)
    rho = 1.0 / (2.0 * z * z)
    out = []
    for a in ORDERS:
        j = np.arange(2, a + 1)
        log_terms = (_log_binomial(a, j) + j * math.log(q)
                     + (a - j) * (math.log1p(-q) if q < 1 else -math.inf)
                     + j * (j - 1) * rho + np.where(j >= 3, math.log(higher), 0.0))
        # q = 1: (1−q)^0 = 1 for j = α; every other term vanishes.
        if q == 1.0:
            log_terms = np.where(j == a, math.log(higher) + a * (a - 1) * rho, -np.inf)
        head = ((a - 1) * math.log1p(-q) + math.log1p((a - 1) * q)) if q < 1 else -math.inf
        total = np.logaddexp.reduce(np.append(log_terms, head))
        out.append(float(total) / (a - 1))
    return tuple(out)


def epsilon(history: Iterable[Release], delta: float) -> float:
    """ε at δ of every release in `history` as subsampled discrete Gaussians: their RDP summed
    per order, converted with ε = min_α R(α) + log((α−1)/α) − (log δ + log α)/(α−1)."""
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"δ must lie in (0, 1), got {delta}.")
    return _to_epsilon(_rdp(history, 3.0), delta)


def combined_epsilon(gaussian: Iterable[Release], discrete_releases: Iterable[Release],
                     delta: float) -> float:
    """ε of continuous subsampled Gaussians (the default sampler's) and discrete ones composed:
    by Rényi DP, where the continuous mechanism's RDP at an integer order is exactly the
    "remove" moment (Mironov, Talwar, Zhang 2019), i.e. `subsampled_rdp(..., higher=1)`."""
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"δ must lie in (0, 1), got {delta}.")
    return _to_epsilon(_rdp(gaussian, 1.0) + _rdp(discrete_releases, 3.0), delta)


def _rdp(history: Iterable[Release], higher: float) -> np.ndarray:
    rdp = np.zeros(len(ORDERS))
    for z, q, count in history:
        if count and q > 0:
            rdp = rdp + count * np.array(subsampled_rdp(float(z), float(q), higher))
    return rdp


def _to_epsilon(rdp: np.ndarray, delta: float) -> float:
    if not rdp.any():
        return 0.0
    a = np.array(ORDERS, dtype=float)
    eps = rdp + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
    return max(0.0, float(np.min(eps)))


@functools.lru_cache(maxsize=64)
def calibrate(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Smallest z (to 1e-4 relative) whose `epsilon` after `steps` releases is ≤ the target."""
    check_epsilon(target_epsilon)
    if sample_rate == 0.0 or steps == 0:
        return 0.0

    def eps_of(z: float) -> float:
        return epsilon([Release(z, sample_rate, steps)], delta)

    lo, hi = 0.25, 1.0
    while eps_of(hi) > target_epsilon:
        lo, hi = hi, 2 * hi
        if hi > MAX_NOISE_MULTIPLIER:
            raise PrivacyError(f"The budget ε={target_epsilon} is too small for {steps} "
                               f"release(s) at sampling rate {sample_rate} with secure noise; "
                               "raise ε or lower the rounds, steps or sampling rate.")
    while hi - lo > 1e-4 * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if eps_of(mid) <= target_epsilon else (mid, hi)
    return hi
