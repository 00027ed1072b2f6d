"""Privacy accounting on Google's dp-accounting: ε for a history of subsampled Gaussians.

Every release this project makes is a Poisson-subsampled Gaussian mechanism with sampling rate q
and noise multiplier z (noise std / L2 sensitivity), under the add/remove-one neighbouring
relation. Its privacy-loss distribution (PLD) for the "remove" direction is

    P = (1−q)·N(0, z²) + q·N(1, z²),   Q = N(0, z²),   L(o) = log(1 − q + q·e^{(2o−1)/(2z²)}),

(dp-accounting also takes the "add" direction and reports the worse one). Composition is the
convolution of PLDs; δ(ε) = E[(1 − e^{ε−Y})₊] for the composed loss Y. The PLD discretisation is
pessimistic, so every ε here is an upper bound for the real-valued mechanism; RDP
(Mironov 2017, ε = min_α ε_total(α) + log((α−1)/α) − (log δ + log α)/(α−1)) is a looser upper
bound kept as a cross-check.

All PLD numbers go through one function, ``_pld_epsilon``, as a function of the *multiset* of
events: events are grouped by (z, q), each group is one self-composition, and groups are
composed in sorted order. The calibration, the one-shot ``epsilon`` and the stateful
``Accountant`` therefore agree bit for bit, so a node calibrated to exactly ε for R rounds is
never stopped by its own budget check at round R.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from privacy.errors import PrivacyError

if TYPE_CHECKING:
    from dp_accounting.pld.privacy_loss_distribution import PrivacyLossDistribution

# dp-accounting (with scipy) takes 1–3 s to import; it is loaded on the first ε, so that the
# ledger, the modes and a restarted daemon do not pay for it up front.

#: PLD value discretisation. dp-accounting's default is 1e-4; 1e-3 is 5–10× faster per call and
#: still pessimistic (ε grows by < 0.2 % for ε ≥ 1, by ~8 % at ε ≈ 0.1; see docs/PRIVACY.md).
DEFAULT_RESOLUTION = 1e-3
#: Calibration gives up above this noise multiplier: the budget is too small to release at all.
MAX_NOISE_MULTIPLIER = 1e4

class Release(NamedTuple):
    """`steps` releases of the Poisson-subsampled Gaussian with noise multiplier z and rate q:
    the one unit the plan, the accountant and the ledger all speak in."""

    noise_multiplier: float
    sample_rate: float
    steps: int


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, *,
            resolution: float = DEFAULT_RESOLUTION) -> float:
    """ε (PLD) of ``steps`` compositions of the Poisson-subsampled Gaussian (z, q) at δ."""
    _check_event(noise_multiplier, sample_rate, steps)
    _check_delta(delta)
    return _pld_epsilon((Release(float(noise_multiplier), float(sample_rate), int(steps)),),
                        delta, resolution)


def epsilon_rdp(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε from dp-accounting's RDP accountant for the same mechanism (a looser cross-check)."""
    _check_event(noise_multiplier, sample_rate, steps)
    _check_delta(delta)
    return _rdp_epsilon((Release(float(noise_multiplier), float(sample_rate), int(steps)),),
                        delta)


@functools.lru_cache(maxsize=256)  # pure and slow (seconds); experiments repeat the same inputs
def calibrate_noise_multiplier(target_epsilon: float, delta: float, sample_rate: float,
                               steps: int, *, tol: float = 1e-4,
                               resolution: float = DEFAULT_RESOLUTION) -> float:
    """Smallest z (within ``tol``) whose PLD ε after ``steps`` releases is ≤ ``target_epsilon``.

    ε(z) is non-increasing in z. We bracket within a factor of two, let dp-accounting's
    ``calibrate_dp_mechanism`` (Brent's method) find the root, then re-evaluate with exactly
    the function the accountant uses and step z up until ε ≤ target: never on the unsafe side.
    """
    check_epsilon(target_epsilon)
    _check_event(1.0, sample_rate, steps)
    _check_delta(delta)
    if sample_rate == 0.0 or steps == 0:
        return 0.0   # nothing touches the data; no noise is needed

    def eps_of(z: float) -> float:
        return _pld_epsilon(((z, float(sample_rate), int(steps)),), delta, resolution)

    # Bracket [lo, hi] within a factor 2, from z = 1 in both directions: small z are the
    # expensive PLDs (wide loss distributions), so the search never evaluates near z = 0.
    lo, hi = 0.5, 1.0
    while eps_of(lo) <= target_epsilon:
        if lo < 1e-3:
            return lo   # an enormous budget; the noise hardly matters
        lo, hi = lo / 2.0, lo
    while eps_of(hi) > target_epsilon:
        lo, hi = hi, 2.0 * hi
        if hi > MAX_NOISE_MULTIPLIER:
            raise PrivacyError(
                f"The budget ε={target_epsilon} is too small for {steps} release(s) at sampling "
                f"rate {sample_rate} (it would need a noise multiplier above "
                f"{MAX_NOISE_MULTIPLIER:g}); raise ε or lower the rounds, steps or sampling rate.")
    import dp_accounting
    from dp_accounting import pld

    z = float(dp_accounting.calibrate_dp_mechanism(
        lambda: pld.PLDAccountant(value_discretization_interval=resolution),
        lambda z: dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(z)),
            steps),
        target_epsilon, delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(lo, hi), tol=tol))
    while eps_of(z) > target_epsilon:   # the safety net the brief asks for; rarely taken
        z += max(tol, 1e-6 * z)
    return z


class Accountant:
    """The spend history of one node, and its ε.

    The history is a run-length list of (z, q, count) events in spend order. ε is a function of
    the multiset of events (composition is commutative), computed with the PLD accountant and
    cached, so calling ``would_exceed`` and then ``epsilon`` once per round costs one PLD
    evaluation per round (~10–50 ms for 1000 rounds at the default resolution).
    """

    def __init__(self, *, resolution: float = DEFAULT_RESOLUTION,
                 discrete: bool = False) -> None:
        self.resolution = resolution
        # Releases of the discrete Gaussian (`--secure-noise`): accounted by privacy.discrete's
        # Rényi bound, since no proof lets the continuous PLD stand for them.
        self.discrete = discrete
        self.history: list[Release] = []

    def spend(self, noise_multiplier: float, sample_rate: float, count: int = 1) -> None:
        """Record ``count`` releases of the Poisson-subsampled Gaussian (z, q)."""
        _check_event(noise_multiplier, sample_rate, count)
        z, q = float(noise_multiplier), float(sample_rate)
        if count == 0:
            return
        if self.history and self.history[-1][:2] == (z, q):
            self.history[-1] = Release(z, q, self.history[-1][2] + count)
        else:
            self.history.append(Release(z, q, count))

    @property
    def steps(self) -> int:
        """Total number of releases recorded."""
        return sum(count for _, _, count in self.history)

    def epsilon(self, delta: float) -> float:
        """ε (PLD) of everything spent so far at δ; 0 for an empty history."""
        _check_delta(delta)
        return self._epsilon(_canonical(self.history), delta)

    def _epsilon(self, groups: tuple[Release, ...], delta: float) -> float:
        if self.discrete:
            from privacy import discrete  # it imports this module
            return discrete.epsilon(groups, delta)
        return _pld_epsilon(groups, delta, self.resolution)

    def epsilon_rdp(self, delta: float) -> float:
        """ε (RDP) of everything spent so far: a looser cross-check of ``epsilon``."""
        _check_delta(delta)
        return _rdp_epsilon(_canonical(self.history), delta)

    def epsilon_if(self, delta: float, noise_multiplier: float, sample_rate: float,
                   count: int = 1) -> float:
        """ε that ``epsilon(delta)`` would return after ``spend(noise_multiplier, ...)``."""
        return self.epsilon_after(delta, [Release(noise_multiplier, sample_rate, count)])

    def epsilon_after(self, delta: float, events: Iterable[Release]) -> float:
        """ε after also spending every (z, q, count) in ``events`` (one round's releases)."""
        _check_delta(delta)
        extra: list[Release] = []
        for z, q, count in events:
            _check_event(z, q, count)
            extra.append(Release(float(z), float(q), int(count)))
        return self._epsilon(_canonical([*self.history, *extra]), delta)

    def would_exceed(self, budget: float, delta: float, noise_multiplier: float,
                     sample_rate: float, count: int = 1) -> bool:
        """Whether spending the given event would take ε above ``budget`` (the stop rule)."""
        return self.epsilon_if(delta, noise_multiplier, sample_rate, count) > budget

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot; floats survive JSON exactly (repr round-trips)."""
        return {"resolution": self.resolution, "history": [list(g) for g in self.history],
                **({"discrete": True} if self.discrete else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Accountant:
        """Rebuild an accountant from ``to_dict`` output; malformed input raises PrivacyError."""
        try:
            accountant = cls(resolution=float(data["resolution"]),
                             discrete=data.get("discrete") is True)
            for z, q, count in data["history"]:
                if not isinstance(count, int) or isinstance(count, bool):
                    raise TypeError("count must be an integer")
                accountant.spend(float(z), float(q), count)
        except (KeyError, TypeError, ValueError) as error:
            raise PrivacyError(f"The accountant state is malformed ({error}).") from None
        return accountant

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Accountant):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Accountant(steps={self.steps}, groups={len(_canonical(self.history))})"


def check_epsilon(value: float) -> None:
    """Refuse ε ≤ 0 or NaN (ε = ∞ means 'no DP' and is the caller's business)."""
    if not value > 0.0:
        raise PrivacyError(f"The privacy budget ε must be positive, got {value}.")


def check_delta(delta: float, n: int) -> None:
    """Refuse δ outside (0, 1/n): with δ ≥ 1/n, releasing one random example is '(0, δ)-DP'."""
    if n < 1:
        raise PrivacyError(f"The local dataset must hold at least one example, got n={n}.")
    if not 0.0 < delta < 1.0 / n:
        raise PrivacyError(f"δ must lie in (0, 1/n) = (0, {1.0 / n:.3g}) for a node with n={n} "
                           f"examples, got δ={delta}; use e.g. δ ≤ {0.1 / n:.1g}.")


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"δ must lie in (0, 1), got {delta}.")


def _check_event(noise_multiplier: float, sample_rate: float, count: int) -> None:
    if not noise_multiplier >= 0.0 or math.isinf(noise_multiplier):
        raise PrivacyError(f"The noise multiplier must be finite and ≥ 0, got {noise_multiplier}.")
    if not 0.0 <= sample_rate <= 1.0:
        raise PrivacyError(f"The sampling rate q must lie in [0, 1], got {sample_rate}.")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise PrivacyError(f"The number of releases must be an integer ≥ 0, got {count}.")


def _canonical(history: list[Release]) -> tuple[Release, ...]:
    """Merge equal (z, q) events and sort: the multiset of releases, as a hashable key."""
    counts: Counter[tuple[float, float]] = Counter()
    for z, q, count in history:
        if q > 0.0 and count > 0:   # q = 0 never touches the data: no cost
            counts[(z, q)] += count
    return tuple(sorted(Release(z, q, c) for (z, q), c in counts.items()))


@functools.lru_cache(maxsize=64)
def _unit_pld(noise_multiplier: float, sample_rate: float,
              resolution: float) -> PrivacyLossDistribution:
    import dp_accounting
    from dp_accounting.pld import privacy_loss_distribution

    # The same call PLDAccountant makes for PoissonSampledDpEvent(q, GaussianDpEvent(z)).
    return privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=noise_multiplier, sampling_prob=sample_rate,
        value_discretization_interval=resolution,
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)


@functools.lru_cache(maxsize=16)
def _group_pld(noise_multiplier: float, sample_rate: float, count: int,
               resolution: float) -> PrivacyLossDistribution:
    # When the degree changes, most rounds grow one group; the others are reused from here.
    return _unit_pld(noise_multiplier, sample_rate, resolution).self_compose(count)


@functools.lru_cache(maxsize=1024)
def _pld_epsilon(groups: tuple[Release, ...], delta: float, resolution: float) -> float:
    """PLD ε of the composition of ``groups`` (canonical form) at δ; cached across instances."""
    groups = _canonical(list(groups))
    if not groups:
        return 0.0
    if any(z == 0.0 for z, _, _ in groups):
        return math.inf   # a release without noise: no finite guarantee
    composed = None
    for z, q, count in groups:
        part = _group_pld(z, q, count, resolution)
        composed = part if composed is None else composed.compose(part)
    assert composed is not None
    return float(composed.get_epsilon_for_delta(delta))


def _rdp_epsilon(groups: tuple[Release, ...], delta: float) -> float:
    import dp_accounting
    from dp_accounting import rdp

    groups = _canonical(list(groups))
    if any(z == 0.0 for z, _, _ in groups):
        return math.inf
    accountant = rdp.RdpAccountant()
    for z, q, count in groups:
        accountant.compose(dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), count))
    return float(accountant.get_epsilon(delta))
