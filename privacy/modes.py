"""The two privacy modes of docs/DESIGN.md §2 and what each may claim.

gradient mode: noise N(0, (zC)²I) on the clipped gradient sum at every local step; all messages
are post-processing, so the transcript is T = R·K subsampled Gaussians with multiplier z.

message mode (DP-Norm / DP-ECL, K = 1): no gradient noise. In round r node i takes one step

    w ← (μ·w − S/(q·n) + β·η·Σ_j A_{i|j} z_{i|j}) / (μ + β·η·E),     μ = 1/lr,

where S is the clipped gradient sum, and sends y_{i|j} = κ·z_{i|j} − 2β·A_{i|j}·w + ξ_{ij},
ξ_{ij} ~ N(0, σ²I) independent per edge. Given everything released before (the node continues
from its neighbours' joint reconstruction, so its hidden state is a function of past releases),
one example moves w by at most Δ_w = C / (q·n·(μ + βηE)) and every y_{i|j} by 2β·Δ_w, all along
the same direction. A coalition of all E neighbours sees E copies with independent noise; their
average is a sufficient statistic with noise σ/√E, so the round is one subsampled Gaussian with

    z = (σ/√E) / (2β·Δ_w) = σ·(μ + βηE)·q·n / (2β·√E·C).

With K > 1 local steps the un-noised intermediate iterates carry data into later rounds and no
useful sensitivity bound is known, so no ε may be printed ("no formal guarantee").
"""

from __future__ import annotations

import math
from typing import Literal

from privacy.errors import PrivacyError

Mode = Literal["gradient", "message"]
MODES: tuple[Mode, ...] = ("gradient", "message")
#: The modes whose proof holds for any number of local steps K (message mode's needs K = 1).
ANY_LOCAL_STEPS: frozenset[Mode] = frozenset({"gradient"})
#: The label printed instead of an ε when no proof covers the configuration.
NO_GUARANTEE = "no formal guarantee"


def message_mode_noise_multiplier(sigma: float, *, lr: float, beta: float, eta: float,
                                  degree: int, sample_rate: float, n: float, clip: float) -> float:
    """Effective noise multiplier z of one message-mode round (see the module docstring)."""
    _check_message_inputs(lr=lr, beta=beta, eta=eta, degree=degree, sample_rate=sample_rate,
                          n=n, clip=clip)
    if not sigma >= 0.0:
        raise PrivacyError(f"The message noise σ must be ≥ 0, got {sigma}.")
    return sigma * _scale(lr=lr, beta=beta, eta=eta, degree=degree, sample_rate=sample_rate, n=n,
                          clip=clip)


def message_mode_sigma(noise_multiplier: float, *, lr: float, beta: float, eta: float,
                       degree: int, sample_rate: float, n: float, clip: float) -> float:
    """Per-edge noise std σ that gives effective multiplier z (inverse of the above).

    To stay safe when neighbours go down, call it for every degree the node may have and take
    the maximum σ (z(E) ∝ μ/√E + βη√E is not monotone in E).
    """
    _check_message_inputs(lr=lr, beta=beta, eta=eta, degree=degree, sample_rate=sample_rate,
                          n=n, clip=clip)
    if not noise_multiplier >= 0.0:
        raise PrivacyError(f"The noise multiplier must be ≥ 0, got {noise_multiplier}.")
    return noise_multiplier / _scale(lr=lr, beta=beta, eta=eta, degree=degree,
                                     sample_rate=sample_rate, n=n, clip=clip)


def dpnorm_beta(alpha: float, eta: float) -> float:
    """β = 1/(1 + γ) with γ = α·η (docs/DESIGN.md §1)."""
    if not (alpha >= 0.0 and eta > 0.0):
        raise PrivacyError(f"DP-Norm needs α ≥ 0 and η > 0, got α={alpha}, η={eta}.")
    return 1.0 / (1.0 + alpha * eta)


def joint_noise_multiplier(*noise_multipliers: float) -> float:
    """One multiplier for several Gaussian releases computed from the same batch.

    Releases sharing a Poisson sample must be accounted as one event (docs/DESIGN.md §2):
    with each release m having its own multiplier z_m (std / its sensitivity),
    1/z² = Σ_m 1/z_m². Any z_m = 0 gives 0 (no privacy).
    """
    if not noise_multipliers:
        raise PrivacyError("joint_noise_multiplier needs at least one release.")
    if any(not z >= 0.0 for z in noise_multipliers):
        raise PrivacyError(f"Noise multipliers must be ≥ 0, got {noise_multipliers}.")
    if any(z == 0.0 for z in noise_multipliers):
        return 0.0
    return 1.0 / math.sqrt(sum(1.0 / z**2 for z in noise_multipliers))


def has_formal_guarantee(mode: Mode, local_steps: int) -> bool:
    """Whether a proven ε exists: always in gradient mode, only with K = 1 in message mode."""
    _check_mode(mode, local_steps)
    return mode in ANY_LOCAL_STEPS or local_steps == 1


def secure_noise_applies(mode: Mode) -> bool:
    """Whether `--secure-noise` (privacy.discrete) covers a mode: gradient mode adds its noise to
    the clipped sum, which an integer grid holds exactly; message mode adds it to duals computed
    from that sum in floating point, which no integer bound covers."""
    return mode in ANY_LOCAL_STEPS


def reported_epsilon(value: float, *, mode: Mode, local_steps: int) -> float | None:
    """The ε to print: ``value`` where a proof covers it, else None (shown as null/NO_GUARANTEE)."""
    return value if has_formal_guarantee(mode, local_steps) else None


def check_mode(mode: Mode, local_steps: int, *, accept_no_guarantee: bool = False) -> None:
    """Refuse message mode with K > 1 unless the user explicitly accepts no formal guarantee."""
    if not has_formal_guarantee(mode, local_steps) and not accept_no_guarantee:
        raise PrivacyError(
            f"Message mode with {local_steps} local steps per round has no formal privacy "
            "guarantee; use --local-steps 1, gradient mode, or explicitly accept "
            f"'{NO_GUARANTEE}'.")


def _check_mode(mode: str, local_steps: int) -> None:
    if mode not in MODES:
        raise PrivacyError(f"The privacy mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise PrivacyError(f"The number of local steps must be an integer ≥ 1, got {local_steps}.")


def _scale(*, lr: float, beta: float, eta: float, degree: int, sample_rate: float, n: float,
           clip: float) -> float:
    mu = 1.0 / lr
    return (mu + beta * eta * degree) * sample_rate * n / (2.0 * beta * math.sqrt(degree) * clip)


def _check_message_inputs(*, lr: float, beta: float, eta: float, degree: int, sample_rate: float,
                          n: float, clip: float) -> None:
    if not (lr > 0.0 and math.isfinite(lr)):
        raise PrivacyError(f"The learning rate must be positive and finite, got {lr}.")
    if not 0.0 < beta <= 1.0:
        raise PrivacyError(f"β = 1/(1+αη) must lie in (0, 1], got {beta}.")
    if not eta >= 0.0:
        raise PrivacyError(f"The edge penalty η must be ≥ 0, got {eta}.")
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        # A round with no recipient releases nothing, but its data step would stay hidden in the
        # state and leak through later rounds: the caller must not touch data in such a round.
        raise PrivacyError(f"Message mode needs at least one recipient per round, got {degree}.")
    if not 0.0 < sample_rate <= 1.0:
        raise PrivacyError(f"The sampling rate q must lie in (0, 1], got {sample_rate}.")
    if n < 1:
        raise PrivacyError(f"The local dataset must hold at least one example, got n={n}.")
    if not (clip > 0.0 and math.isfinite(clip)):
        raise PrivacyError(f"The clipping norm C must be a positive finite number, got {clip}.")
