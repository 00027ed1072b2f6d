"""The accountant against dp-accounting itself, calibration, message mode (layer A)."""

from __future__ import annotations

import json
import math

import dp_accounting
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy import modes
from privacy.accountant import (
    DEFAULT_RESOLUTION,
    Accountant,
    _group_pld,
    _pld_epsilon,
    calibrate_noise_multiplier,
    check_delta,
    epsilon,
    epsilon_rdp,
)
from privacy.errors import PrivacyError

DELTA = 1e-5


def _event(z: float, q: float, steps: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps
    )


@pytest.mark.parametrize(
    ("z", "q", "steps"), [(1.0, 0.01, 1000), (0.8, 0.02, 500), (2.0, 1.0, 100), (4.0, 0.05, 200)]
)
def test_epsilon_agrees_with_dp_accountings_own_pld_and_rdp(z: float, q: float, steps: int) -> None:
    same = pld.PLDAccountant(value_discretization_interval=DEFAULT_RESOLUTION)
    assert epsilon(z, q, steps, DELTA) == pytest.approx(
        same.compose(_event(z, q, steps)).get_epsilon(DELTA), rel=1e-9
    )
    # dp-accounting's default (finer) grid: ours is coarser, hence pessimistic but close.
    fine = pld.PLDAccountant().compose(_event(z, q, steps)).get_epsilon(DELTA)
    assert fine <= epsilon(z, q, steps, DELTA) <= fine * 1.01
    reference_rdp = rdp.RdpAccountant().compose(_event(z, q, steps)).get_epsilon(DELTA)
    assert epsilon_rdp(z, q, steps, DELTA) == pytest.approx(reference_rdp, rel=1e-12)
    assert epsilon(z, q, steps, DELTA) <= epsilon_rdp(z, q, steps, DELTA)  # PLD is tighter


def test_frozen_reference_values() -> None:
    # dp-accounting's own PLD at its default grid (1e-4), measured when the accountant was
    # chosen; ours (grid 1e-3, docs/PRIVACY.md, "Accounting") may only be slightly higher.
    for z, q, steps, expected in [
        (1.0, 0.01, 1000, 1.828),
        (1.0, 0.01, 10_000, 6.188),
        (2.0, 1.0, 100, 33.10),
    ]:
        assert expected - 2e-3 <= epsilon(z, q, steps, DELTA) <= expected * 1.005


def test_full_batch_equals_the_analytic_gaussian_mechanism() -> None:
    # T full-batch Gaussians with multiplier z are one Gaussian with multiplier z/√T.
    exact = dp_accounting.get_epsilon_gaussian(3.0 / math.sqrt(50), DELTA)
    assert epsilon(3.0, 1.0, 50, DELTA) == pytest.approx(exact, abs=5e-3)


def test_monotone_in_steps_noise_and_rate() -> None:
    base = epsilon(1.0, 0.02, 300, DELTA)
    assert epsilon(1.0, 0.02, 600, DELTA) > base  # more steps cost more
    assert epsilon(1.5, 0.02, 300, DELTA) < base  # more noise costs less
    assert epsilon(1.0, 0.04, 300, DELTA) > base  # a bigger sample costs more
    assert epsilon(1.0, 0.02, 300, 1e-3) < base  # a looser δ gives a smaller ε


@settings(max_examples=3, deadline=None)
@given(target=st.floats(0.5, 8.0), q=st.floats(0.005, 0.05), steps=st.integers(10, 300))
def test_calibration_never_overshoots_and_is_tight(target: float, q: float, steps: int) -> None:
    z = calibrate_noise_multiplier(target, DELTA, q, steps)
    assert epsilon(z, q, steps, DELTA) <= target
    assert epsilon(z * 0.99, q, steps, DELTA) > target  # not wastefully noisy


def test_calibration_refuses_an_unreachable_budget_and_bad_inputs() -> None:
    with pytest.raises(PrivacyError, match="too small"):
        calibrate_noise_multiplier(1e-9, DELTA, 1.0, 1000)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(PrivacyError, match="positive"):
            calibrate_noise_multiplier(bad, DELTA, 0.01, 10)
    with pytest.raises(PrivacyError):
        calibrate_noise_multiplier(1.0, 1.5, 0.01, 10)
    assert calibrate_noise_multiplier(1.0, DELTA, 0.0, 10) == 0.0


def test_delta_must_be_below_one_over_n() -> None:
    check_delta(1e-5, 10_000 - 1)
    for delta, n in [(1e-4, 10_000), (0.0, 10), (1e-3, 5000)]:
        with pytest.raises(PrivacyError, match="1/n") as info:
            check_delta(delta, n)
        assert "\n" not in str(info.value)


def test_accountant_composes_heterogeneous_rounds_like_dp_accounting() -> None:
    accountant = Accountant()
    for round_ in range(60):
        accountant.spend(1.2 if round_ % 3 else 0.9, 0.02, count=2)
    reference = pld.PLDAccountant(value_discretization_interval=DEFAULT_RESOLUTION)
    reference.compose(dp_accounting.ComposedDpEvent([_event(1.2, 0.02, 80), _event(0.9, 0.02, 40)]))
    assert accountant.steps == 120
    assert accountant.epsilon(DELTA) == pytest.approx(reference.get_epsilon(DELTA), rel=1e-6)
    assert accountant.epsilon(DELTA) < accountant.epsilon_rdp(DELTA)


def test_homogeneous_accountant_equals_calibration_exactly() -> None:
    # A node calibrated for exactly R rounds must not be stopped by its own budget check.
    target, q, rounds, k = 2.0, 0.03, 12, 5
    z = calibrate_noise_multiplier(target, DELTA, q, rounds * k)
    accountant = Accountant()
    for _ in range(rounds):
        assert not accountant.would_exceed(target, DELTA, z, q, count=k)
        accountant.spend(z, q, count=k)
    assert accountant.epsilon(DELTA) == epsilon(z, q, rounds * k, DELTA) <= target
    assert accountant.would_exceed(target, DELTA, z, q, count=k)


def test_accountant_edge_cases_and_round_trip() -> None:
    accountant = Accountant()
    assert accountant.epsilon(DELTA) == 0.0
    accountant.spend(1.0, 0.0, count=5)  # q = 0 never touches data
    assert accountant.epsilon(DELTA) == 0.0
    accountant.spend(1.0, 0.01, count=3)
    accountant.spend(1.0, 0.01)
    accountant.spend(0.7, 0.01)
    assert accountant.history == [(1.0, 0.0, 5), (1.0, 0.01, 4), (0.7, 0.01, 1)]
    before = accountant.epsilon(DELTA)
    assert accountant.epsilon_if(DELTA, 0.7, 0.01) > before
    assert accountant.epsilon_after(DELTA, []) == before
    both = accountant.epsilon_after(DELTA, [(0.7, 0.01, 1), (1.0, 0.01, 2)])
    assert both > accountant.epsilon_if(DELTA, 0.7, 0.01)
    copy = Accountant.from_dict(json.loads(json.dumps(accountant.to_dict())))
    assert copy == accountant and copy.epsilon(DELTA) == before
    accountant.spend(0.0, 0.01)  # a noiseless release: no finite ε
    assert math.isinf(accountant.epsilon(DELTA))
    for bad in (
        {"history": [[1.0, 0.1, 1]]},
        {"resolution": 1e-3, "history": [[1.0, 2.0, 1]]},
        {"resolution": 1e-3, "history": [[1.0, 0.1, 1.5]]},
    ):
        with pytest.raises(PrivacyError):
            Accountant.from_dict(bad)
    for z, q, count in [(-1.0, 0.1, 1), (1.0, 1.1, 1), (1.0, 0.1, -1), (math.inf, 0.1, 1)]:
        with pytest.raises(PrivacyError):
            accountant.spend(z, q, count)


def test_one_epsilon_call_per_round_is_cheap() -> None:
    """A round asks `would_exceed` and then `epsilon`: one PLD evaluation, the second a cache
    hit. Counted, not timed (a wall-time bound fails on a loaded machine and proves nothing on
    a fast one)."""
    accountant = Accountant()
    accountant.spend(1.0, 0.01, count=900)
    accountant.spend(1.1, 0.01, count=99)
    accountant.epsilon(DELTA)
    for _ in range(5):
        before = _pld_epsilon.cache_info()
        groups_before = _group_pld.cache_info()
        accountant.would_exceed(8.0, DELTA, 1.0, 0.01)
        accountant.spend(1.0, 0.01)
        accountant.epsilon(DELTA)  # cached from would_exceed
        after = _pld_epsilon.cache_info()
        assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
        # The one evaluation composes one new group (the one that grew) with cached others.
        assert _group_pld.cache_info().misses - groups_before.misses <= 1


def _dpnorm_round(
    w: list[float],
    s: list[float],
    *,
    lr: float,
    beta: float,
    eta: float,
    duals: list[list[float]],
    signs: list[int],
    q: float,
    n: int,
) -> list[list[float]]:
    """One noiseless message-mode round of docs/DESIGN.md §1 on a d-vector; returns the E
    messages."""
    mu, kappa, degree = 1 / lr, (2 * beta - 1), len(signs)
    pull = [beta * eta * sum(a * z[i] for a, z in zip(signs, duals, strict=True))
            for i in range(len(w))]
    new_w = [(mu * wi - si / (q * n) + p) / (mu + beta * eta * degree)
             for wi, si, p in zip(w, s, pull, strict=True)]
    return [
        [kappa * z[i] - 2 * beta * a * new_w[i] for i in range(len(w))]
        for a, z in zip(signs, duals, strict=True)
    ]


def test_message_mode_multiplier_matches_the_sensitivity_of_the_update() -> None:
    # Independent check of z = σ(μ+βηE)qn / (2β√E C): run the update for two clipped sums that
    # differ by one example (norm C), stack all E messages, and measure their L2 distance Δ;
    # the E messages with independent N(0, σ²) noise are one Gaussian with multiplier σ/Δ.
    lr, alpha, eta, q, n, clip, sigma = 0.1, 0.05, 3.0, 0.02, 800, 0.8, 0.01
    beta = modes.dpnorm_beta(alpha, eta)
    signs = [1, -1, 1]
    duals = [[0.3, -0.2], [0.1, 0.5], [-0.4, 0.0]]
    w, s = [0.2, -0.1], [1.0, 2.0]
    s_neighbour = [s[0] + clip * 0.6, s[1] + clip * 0.8]
    kw = {"lr": lr, "beta": beta, "eta": eta, "duals": duals, "signs": signs, "q": q, "n": n}
    a, b = _dpnorm_round(w, s, **kw), _dpnorm_round(w, s_neighbour, **kw)  # type: ignore[arg-type]
    distance = math.sqrt(sum((x - y) ** 2
                             for ma, mb in zip(a, b, strict=True)
                             for x, y in zip(ma, mb, strict=True)))
    z = modes.message_mode_noise_multiplier(
        sigma, lr=lr, beta=beta, eta=eta, degree=3, sample_rate=q, n=n, clip=clip
    )
    assert z == pytest.approx(sigma / distance, rel=1e-9)
    back = modes.message_mode_sigma(
        z, lr=lr, beta=beta, eta=eta, degree=3, sample_rate=q, n=n, clip=clip
    )
    assert back == pytest.approx(sigma, rel=1e-12)
    with pytest.raises(PrivacyError, match="recipient"):
        modes.message_mode_sigma(
            z, lr=lr, beta=beta, eta=eta, degree=0, sample_rate=q, n=n, clip=clip
        )


def test_joint_releases_and_guarantee_labels() -> None:
    assert modes.joint_noise_multiplier(2.0) == 2.0
    assert modes.joint_noise_multiplier(1.5, 1.5) == pytest.approx(1.5 / math.sqrt(2))
    assert modes.joint_noise_multiplier(1.0, 0.0) == 0.0
    assert modes.reported_epsilon(3.0, mode="gradient", local_steps=5) == 3.0
    assert modes.reported_epsilon(3.0, mode="message", local_steps=1) == 3.0
    assert modes.reported_epsilon(3.0, mode="message", local_steps=2) is None
    modes.check_mode("message", 1)
    modes.check_mode("message", 4, accept_no_guarantee=True)
    with pytest.raises(PrivacyError, match="no formal privacy guarantee"):
        modes.check_mode("message", 4)
    with pytest.raises(PrivacyError):
        modes.check_mode("bogus", 1)  # type: ignore[arg-type]
