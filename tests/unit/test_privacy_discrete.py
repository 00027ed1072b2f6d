"""`--secure-noise` (privacy.discrete): the exact discrete Gaussian sampler, the integer grid and
its sensitivity, the exact Poisson sample, and the accountant (docs/PRIVACY.md, "Secure
noise")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from dp_accounting.rdp.rdp_privacy_accountant import _compute_rdp_poisson_subsampled_gaussian
from scipy import stats
from torch import Tensor
from torch.func import functional_call

from node.core.model import GradientPolicy, LocalTrainer
from privacy import discrete
from privacy.accountant import Accountant, Release, calibrate_noise_multiplier
from privacy.accountant import epsilon as pld_epsilon
from privacy.ledger import Ledger, read_spend
from privacy.mechanisms import make_generator

pytest.importorskip("opendp")


def _pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    """The discrete Gaussian's pmf on `support`, normalised over every integer it can reach."""
    reach = np.arange(-int(40 * sigma) - 40, int(40 * sigma) + 41)
    norm = np.exp(-reach.astype(float) ** 2 / (2 * sigma**2)).sum()
    return np.exp(-support.astype(float) ** 2 / (2 * sigma**2)) / norm


def _chi_square(draws: np.ndarray, sigma: float, cut: int) -> float:
    """Pearson's statistic of `draws` against N_Z(0, σ²): one bin per integer in [-cut, cut]
    and one per tail."""
    inner = np.arange(-cut, cut + 1)
    expected = _pmf(sigma, inner)
    tail = (1 - expected.sum()) / 2
    observed = np.array([(draws < -cut).sum(), *[(draws == k).sum() for k in inner],
                         (draws > cut).sum()], dtype=float)
    p = np.array([tail, *expected, tail])
    e = p * len(draws)
    return float(((observed - e) ** 2 / e).sum())


def test_small_scale_draws_fit_the_discrete_gaussian_pmf_and_a_wrong_sigma_fails() -> None:
    sigma, n, cut = 2.5, 100_000, 8
    draws = discrete.discrete_gaussian(n, sigma)
    assert draws.dtype == np.int64
    # 2·8 + 1 inner bins + 2 tails − 1 = 18 degrees of freedom; a false alarm has p = 1e-6.
    critical = stats.chi2.ppf(1 - 1e-6, 2 * cut + 2)
    assert _chi_square(draws, sigma, cut) < critical
    # A sampler 4 % off in σ (or a rounded continuous Gaussian of the wrong width) fails.
    assert _chi_square(draws, sigma * 1.04, cut) > critical
    assert _chi_square(draws, sigma / 1.04, cut) > critical


def test_grid_scale_draws_have_the_mean_variance_and_tail_of_the_scale() -> None:
    # σ as large as a gradient's grid makes it; N = 1e5 gives the variance to ±0.45 % (one sd),
    # so 1.5 % is > 3 sd, and a 3 % error in σ (6 % in variance) fails.
    sigma, n = 5.05e4, 100_000
    draws = discrete.discrete_gaussian(n, sigma).astype(float)
    assert abs(draws.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(draws.var() / sigma**2 - 1) < 0.015
    assert abs(draws.var() / (1.03 * sigma) ** 2 - 1) > 0.015
    # Beyond 3σ: mass 0.27 %, ≈ 270 draws, sd ≈ 16; ±30 % is > 5 sd. A σ 10 % too large
    # would put 0.64 % there, one 10 % too small 0.10 %.
    tail = float((np.abs(draws) > 3 * sigma).mean())
    assert abs(tail / (2 * stats.norm.sf(3)) - 1) < 0.3
    for wrong in (1.1, 1 / 1.1):
        assert abs(tail / (2 * stats.norm.sf(3 / wrong)) - 1) > 0.3


def test_the_samplers_integers_are_exactly_what_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    # No float enters the release: V − Σv is the sampler's int64 output, bit for bit, so the set
    # of outputs a value can reach is v + Z whatever v is — nothing like float32's support cut
    # at ≈ 5.77σ or its lattice gaps, which depend on the value noise is added to.
    drawn: list[np.ndarray] = []
    real = discrete.discrete_gaussian

    def record(size: int, scale: float) -> np.ndarray:
        drawn.append(real(size, scale))
        return drawn[-1]

    monkeypatch.setattr(discrete, "discrete_gaussian", record)
    grid = discrete.grid_for(1.0, 5000)
    grid_sum = torch.randint(-10**9, 10**9, (5000,), dtype=torch.int64)
    released = discrete.secure_release(grid_sum, 1.2, grid)
    assert released.dtype == torch.int64
    assert torch.equal(released - grid_sum, torch.from_numpy(drawn[0]))
    assert float(np.std(drawn[0])) == pytest.approx(1.2 * grid.sensitivity, rel=0.05)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3))


def _loss(model: torch.nn.Module) -> Any:
    def loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    return loss


def test_one_example_moves_the_integer_sum_by_its_own_vector_within_the_bound() -> None:
    model = _model(0)
    params = {k: v.detach() for k, v in model.named_parameters()}
    d = sum(p.numel() for p in params.values())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g)
    clip = 0.5
    grid = discrete.grid_for(clip, d)
    base, _, _ = discrete.clipped_grid_sum(_loss(model), params, x, y, clip, grid)
    for outlier in (1e6, -1e6, 1e-3):
        x1, y1 = torch.full((1, 6), outlier), torch.tensor([2])
        added, _, dropped = discrete.clipped_grid_sum(
            _loss(model), params, torch.cat([x, x1]), torch.cat([y, y1]), clip, grid)
        alone, _, _ = discrete.clipped_grid_sum(_loss(model), params, x1, y1, clip, grid)
        # Exact integers: the sum moves by exactly that example's rounded vector …
        assert dropped == 0 and torch.equal(added - base, alone)
        # … whose squared norm is within D, and D is the clip plus at most 1 % for rounding.
        assert int((alone * alone).sum()) <= grid.bound_sq
    assert grid.sensitivity <= grid.scale * clip * (1 + discrete.GRID_SLACK + 1e-4)


def test_a_rounded_gradient_over_the_bound_contributes_zero() -> None:
    model = _model(2)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = torch.full((3, 6), 1e6), torch.tensor([0, 1, 2])
    honest = discrete.grid_for(1.0, 57)
    tight = discrete.Grid(honest.scale, bound_sq=1)
    total, _, dropped = discrete.clipped_grid_sum(_loss(model), params, x, y, 1.0, tight)
    assert dropped == 3 and torch.all(total == 0)


def test_exact_poisson_sample_keeps_at_most_q() -> None:
    generator = make_generator(3)
    n, q = 400_000, 0.01
    kept = discrete.poisson_sample(n, q, generator)
    assert kept.dtype == torch.int64 and len(torch.unique(kept)) == len(kept)
    assert abs(len(kept) - q * n) < 5 * math.sqrt(n * q)
    assert len(discrete.poisson_sample(1000, 0.0, generator)) == 0
    assert len(discrete.poisson_sample(1000, 1.0, generator)) == 1000


def test_the_remove_moment_is_the_continuous_sampled_gaussians_at_integer_orders() -> None:
    # With the factor 3 set to 1 the bound is exactly E_Q[(1−q+q·P/Q)^α], which for integer
    # shifts and orders the discrete Gaussian shares with the continuous one: dp-accounting's
    # value is the check that the formula is transcribed right.
    for z, q in ((0.8, 0.01), (1.3, 0.05), (3.0, 0.2)):
        ours = np.array(discrete.subsampled_rdp(z, q, higher=1.0))
        theirs = _compute_rdp_poisson_subsampled_gaussian(q, z, list(discrete.ORDERS))
        finite = np.isfinite(theirs)
        np.testing.assert_allclose(ours[finite], np.asarray(theirs)[finite], rtol=1e-6)


def test_discrete_epsilon_is_above_the_continuous_and_calibration_meets_the_target() -> None:
    delta = 1e-5
    for z, q, steps in ((0.96, 0.01, 1000), (1.5, 0.05, 200)):
        assert discrete.epsilon([Release(z, q, steps)], delta) > pld_epsilon(z, q, steps, delta)
    z = discrete.calibrate(2.0, delta, 0.01, 1000)
    assert discrete.epsilon([Release(z, 0.01, 1000)], delta) <= 2.0
    assert discrete.epsilon([Release(z * 0.999, 0.01, 1000)], delta) > 2.0
    # It takes more noise than the continuous calibration: the bound is Rényi, not PLD.
    assert z > calibrate_noise_multiplier(2.0, delta, 0.01, 1000)


def test_a_discrete_ledger_is_accounted_as_discrete(tmp_path: Any) -> None:
    identity = {"node": 0, "mode": "gradient-secure", "noise": "discrete"}
    with Ledger.open(tmp_path / "l.json", identity) as ledger:
        ledger.record(0, [Release(1.2, 0.02, 5)])
        expected = discrete.epsilon([Release(1.2, 0.02, 5)], 1e-5)
        assert ledger.epsilon(1e-5) == expected
    spend = read_spend(tmp_path / "l.json")
    assert spend is not None and spend[1].epsilon(1e-5) == expected
    plain = Accountant()
    plain.spend(1.2, 0.02, 5)
    assert plain.epsilon(1e-5) < expected


def test_secure_trainer_noise_is_z_sqrt_d_over_grid_and_qn() -> None:
    # An empty Poisson sample (q tiny) leaves only noise: std z·√D / (k/C) / (q·n̂) per
    # coordinate, within 2 % on 20k coordinates; a factor-two error is caught.
    torch.manual_seed(0)
    model = torch.nn.Linear(400, 50)
    x, y = torch.randn(10, 400), torch.randint(0, 50, (10,))
    z, clip, q, n = 1.1, 0.8, 1e-12, 1e12
    policy = GradientPolicy("secure", clip, z, q, q * n)
    trainer = LocalTrainer(model, x, y, x, y, batch_size=5, policy=policy,
                           data_generator=torch.Generator(), noise_generator=make_generator(5))
    g, _ = trainer.gradient(torch.zeros(trainer.layout.numel))
    grid = discrete.grid_for(clip, trainer.layout.numel)
    expected = z * grid.sensitivity / grid.scale / (q * n)
    assert abs(g.std().item() / expected - 1) < 0.02
    assert abs(g.std().item() / (2 * expected) - 1) > 0.02


def test_the_bound_is_above_the_exact_one_dimensional_discrete_gaussian_pld() -> None:
    # Where an exact accounting of the subsampled discrete Gaussian exists (d = 1, integer
    # sensitivity 1: dp-accounting's discrete-Gaussian privacy loss, pessimistic), the Rényi
    # bound must not be below it.
    from dp_accounting.pld import privacy_loss_distribution as pld

    for sigma, q, steps in ((1.5, 0.01, 500), (3.0, 0.05, 100)):
        exact = pld.from_discrete_gaussian_mechanism(
            sigma, sensitivity=1, sampling_prob=q).self_compose(steps)
        assert discrete.epsilon([Release(sigma, q, steps)], 1e-5) >= \
            exact.get_epsilon_for_delta(1e-5)


def test_the_lifetime_ledger_composes_discrete_and_continuous_releases(tmp_path: Any) -> None:
    from privacy.lifetime import Lifetime, discrete_history, discrete_path, lifetime_history

    path, name, delta = tmp_path / "life.json", "rows-x", 1e-5
    first = Lifetime.open(path, name)
    first.record([Release(1.1, 0.02, 5)], discrete=True)   # a --secure-noise run's round
    assert first.epsilon(delta) == discrete.epsilon([Release(1.1, 0.02, 5)], delta)
    first.close()
    assert not lifetime_history(path, name) and discrete_path(path).exists()
    again = Lifetime.open(path, name)   # the next run, with the default sampler
    again.record([Release(0.9, 0.02, 5)])
    again.close()
    assert lifetime_history(path, name) == [Release(0.9, 0.02, 5)]
    assert discrete_history(path, name) == [Release(1.1, 0.02, 5)]
    both = Lifetime.open(path, name)
    combined = discrete.combined_epsilon([Release(0.9, 0.02, 5)], [Release(1.1, 0.02, 5)], delta)
    assert both.epsilon(delta) == combined
    # Composed, never less than either part (each alone by its own accountant's bound).
    assert combined > discrete.epsilon([Release(1.1, 0.02, 5)], delta)
    assert combined > pld_epsilon(0.9, 0.02, 5, delta)
    # The sequence runs over both files: a third run's round is a new entry, not a clash.
    both.record([Release(1.1, 0.02, 1)], discrete=True)
    both.close()
    assert discrete_history(path, name) == [Release(1.1, 0.02, 5), Release(1.1, 0.02, 1)]
