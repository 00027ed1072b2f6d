"""The privatised gradient: Poisson sampling, per-sample clipping, Gaussian noise.

One local step of gradient mode (docs/DESIGN.md §2) is the subsampled Gaussian mechanism

    B ~ Poisson(q)  (each of the n examples joins independently with probability q)
    S = Σ_{k∈B} clip_C(g_k),      clip_C(g) = g · min(1, C/‖g‖₂)   (joint norm over all parameters)
    g̃ = (S + N(0, (zC)² I)) / (q·n)

Adding or removing one example changes S by at most C in L2 norm, so z = σ/C is the noise
multiplier the accountant composes. We divide by the *expected* batch size q·n, never by |B|:
the realised batch size is data-dependent and would leak (docs/DESIGN.md §2).

A per-sample gradient whose norm is not finite (an inf or NaN anywhere in it, e.g. from an
input of 1e20 that overflows float32 inside the model) contributes the zero vector: scaling it
cannot bound it (NaN·0 is NaN), and letting it through would put NaN or ∞ into the released
sum, which reveals that the example was sampled whatever the noise. Zero has norm ≤ C, so the
sensitivity bound is unchanged. How many were dropped is returned for local diagnostics only.

Every function is pure and takes randomness as an explicit ``torch.Generator``; nothing here
touches the global RNG. Generators come from OS entropy unless a caller asks for a fixed seed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import grad, vmap

from privacy.errors import PrivacyError

#: ``loss_fn(params, x_batch, y_batch) -> scalar mean loss``: a functional model call.
LossFn = Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]

# Clipping shrinks by this extra relative factor so that float32 rounding in the rescaling can
# never leave a clipped norm above C (the sensitivity bound the accountant relies on).
_CLIP_SAFETY = 1.0 + 1e-6
# Elements per float64 temporary when computing row norms (2 MiB): small enough to be reused
# by the allocator instead of mapped and page-faulted afresh on every call.
_NORM_BLOCK = 1 << 18


def make_generator(seed: int | None = None, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a generator seeded from OS entropy, or from ``seed`` when one is given.

    A seed derivable from public values (node id, round) would let a peer regenerate and
    subtract the noise, so the default draws 64 bits from ``secrets``. Fixed seeds are for tests
    and reproducible experiments only.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(64) if seed is None else seed)
    return generator


def poisson_sample(n: int, rate: float, generator: torch.Generator) -> Tensor:
    """Indices of a Poisson sample: each of ``range(n)`` is kept independently with prob. ``rate``.

    The result is int64 and may be empty; the caller still steps (noise only) on an empty batch,
    otherwise skipping would reveal that the batch was empty. ``generator`` must be as secret as
    the noise generator: amplification by subsampling assumes the adversary does not know which
    examples were drawn, so a sample reproducible from public seeds voids the accounted q.
    """
    if n < 0 or not 0.0 <= rate <= 1.0:
        raise PrivacyError(f"Poisson sampling needs n ≥ 0 and a rate in [0, 1], got n={n}, "
                           f"rate={rate}.")
    keep = torch.rand(n, generator=generator, device=generator.device) < rate
    return torch.nonzero(keep, as_tuple=False).reshape(-1).to(torch.int64)


def per_sample_gradients(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    chunk_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Flat per-sample gradients ``G[k] = ∇_params loss(x_k, y_k)`` and per-sample losses.

    ``G`` has shape (B, d) with each row the concatenation of ``grad[name].reshape(-1)`` in
    ``params`` order. Computed with ``vmap(grad(...))`` over single examples, ``chunk_size``
    examples at a time, so memory is bounded by chunk_size × d floats per chunk.
    """
    if chunk_size < 1:
        raise PrivacyError(f"chunk_size must be at least 1, got {chunk_size}.")
    d = sum(p.numel() for p in params.values())
    device = next(iter(params.values())).device if params else x.device
    if x.shape[0] == 0:
        return torch.zeros(0, d, dtype=torch.float32, device=device), torch.zeros(0, device=device)
    rows: list[Tensor] = []
    losses: list[Tensor] = []
    for start in range(0, x.shape[0], chunk_size):
        parts, loss = _per_sample_parts(loss_fn, params, x[start:start + chunk_size],
                                        y[start:start + chunk_size])
        rows.append(torch.cat(parts, dim=1))
        losses.append(loss)
    return torch.cat(rows), torch.cat(losses)


def _per_sample_parts(loss_fn: LossFn, params: Mapping[str, Tensor], x: Tensor,
                      y: Tensor) -> tuple[list[Tensor], Tensor]:
    """One chunk's per-sample gradients as one float32 (b, numel) block per parameter (in
    ``params`` order, not concatenated), and the per-sample losses (b,)."""

    def loss_one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> tuple[Tensor, Tensor]:
        loss = loss_fn(p, xi.unsqueeze(0), yi.unsqueeze(0))
        return loss, loss.detach()

    # randomness="different": dropout masks differ per example, as in an ordinary batch.
    per_example = vmap(grad(loss_one, has_aux=True), in_dims=(None, 0, 0), randomness="different")
    grads, loss = per_example({k: v.detach() for k, v in params.items()}, x, y)
    b = loss.shape[0]
    return [grads[k].reshape(b, -1).float() for k in params], loss.reshape(b)


def _row_norms(blocks: Sequence[Tensor]) -> Tensor:
    """Float64 L2 norm of each row of the concatenation of ``blocks`` (each (b, k)).

    Converting a whole (b, d) block to float64 at once allocates, and page-faults, twice its
    size, which for large models costs far more than the arithmetic; a few rows at a time
    keeps every temporary small. The result is the same float64 norm.
    """
    total: Tensor | None = None
    for block in blocks:
        rows = max(1, _NORM_BLOCK // max(1, block.shape[1]))
        sq = torch.cat([
            torch.linalg.vector_norm(block[i:i + rows], dim=1, dtype=torch.float64).square()
            for i in range(0, block.shape[0], rows)
        ])
        total = sq if total is None else total + sq
    assert total is not None, "at least one block"
    return total.sqrt()


def _clip_factors(norms: Tensor, clip: float) -> Tensor:
    """min(1, C/(‖g‖(1+1e-6))) per row, in float64; 0 for a row whose norm is not finite."""
    shrunk = norms * _CLIP_SAFETY
    # where() rather than clamp(C/‖g‖): C = 0 with a zero row would give 0/0 = NaN. A NaN norm
    # fails `shrunk > clip` and would otherwise get factor 1, passing the row through unclipped.
    factor = torch.where(shrunk > clip, clip / shrunk, torch.ones_like(shrunk))
    return torch.where(torch.isfinite(norms), factor, torch.zeros_like(factor))


def _zero_rows(block: Tensor, bad: Tensor) -> Tensor:
    """``block`` (b, k) with the rows flagged in ``bad`` (b,) set to exactly zero.

    A zero clipping factor is not enough: 0·∞ and 0·NaN are NaN, in a product as in a sum."""
    return torch.where(bad.unsqueeze(1), torch.zeros((), dtype=block.dtype, device=block.device),
                       block)


def clip_per_sample(grads: Tensor, clip: float) -> tuple[Tensor, Tensor]:
    """Clip each row of ``grads`` (B, d) to L2 norm ≤ ``clip``; return (clipped, norms before).

    Rows with norm ≤ C are left unchanged; longer rows are scaled by C/(‖g‖(1+1e-6)); rows whose
    norm is not finite (any inf or NaN in them) become zero. Their norms are returned as they
    are, so ``(~torch.isfinite(norms)).sum()`` counts them. Norms are computed in float64 so that
    large d does not round a norm below its true value.
    """
    _check_clip(clip)
    if grads.shape[0] == 0:
        return grads.clone(), torch.zeros(0, dtype=torch.float64, device=grads.device)
    norms = _row_norms([grads])
    factor = _clip_factors(norms, clip)
    clipped = grads * factor.to(grads.dtype).unsqueeze(1)
    return _zero_rows(clipped, ~torch.isfinite(norms)), norms


class ClippedSum(NamedTuple):
    """What `clipped_grad_sum` returns.

    ``dropped`` counts the examples whose gradient was not finite and so contributed zero. Like
    ``losses`` it is a function of the private data and must stay on the node: it is for local
    diagnostics, never for a message.
    """

    total: Tensor
    losses: Tensor
    dropped: int


def clipped_grad_sum(
    loss_fn: LossFn,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    clip: float,
    chunk_size: int = 256,
) -> ClippedSum:
    """Return (Σ_k clip_C(∇ loss(x_k, y_k)) as a flat float32 vector, per-sample losses, the
    number of examples dropped for a non-finite gradient).

    The clipping is joint over all parameters, so one example moves the sum by at most C in L2.
    An example whose gradient has a non-finite norm contributes zero (module docstring); its
    loss is still returned as computed, so it may be NaN or ∞.
    An empty batch gives a zero vector of length d = Σ numel(params) and an empty loss tensor.
    Chunks are clipped and summed as they are produced; only one chunk of per-sample gradients
    is held at a time, and never as one concatenated (b, d) copy: the norms are accumulated
    over the per-parameter blocks, and the clipped sum of each block is one matrix-vector
    product with the clipping factors.
    """
    _check_clip(clip)
    if chunk_size < 1:
        raise PrivacyError(f"chunk_size must be at least 1, got {chunk_size}.")
    d = sum(p.numel() for p in params.values())
    device = next(iter(params.values())).device if params else x.device
    total = torch.zeros(d, dtype=torch.float32, device=device)
    losses: list[Tensor] = [torch.zeros(0, device=device)]
    dropped = 0
    for start in range(0, x.shape[0], chunk_size):
        parts, loss = _per_sample_parts(loss_fn, params, x[start:start + chunk_size],
                                        y[start:start + chunk_size])
        norms = _row_norms(parts)
        bad = ~torch.isfinite(norms)
        bad_count = int(bad.sum())
        if bad_count:
            # Only then: masking copies every block, which the finite case need not pay for.
            parts = [_zero_rows(part, bad) for part in parts]
            dropped += bad_count
        factor = _clip_factors(norms, clip).to(torch.float32)
        total += torch.cat([factor @ part for part in parts])
        losses.append(loss)
    return ClippedSum(total, torch.cat(losses), dropped)


def gaussian_noise(numel: int, std: float, generator: torch.Generator) -> Tensor:
    """``numel`` independent N(0, std²) draws as float32, on the generator's device."""
    if numel < 0 or not std >= 0.0:   # `not >=` also rejects NaN
        raise PrivacyError(f"Noise needs numel ≥ 0 and std ≥ 0, got numel={numel}, std={std}.")
    noise = torch.randn(numel, generator=generator, device=generator.device, dtype=torch.float32)
    return noise * std


def privatize_gradient_sum(
    grad_sum: Tensor,
    clip: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator,
) -> Tensor:
    """Return (S + N(0, (zC)² I)) / (q·n): the DP estimate of the mean clipped gradient.

    ``grad_sum`` is the clipped sum S (any shape; noise is drawn per element, so a stack of
    sums gets independent noise per row). ``expected_batch_size`` is q·n, *not* the realised
    batch size. ``noise_multiplier = 0`` is allowed only so that tests can isolate clipping.
    """
    _check_clip(clip)
    if not noise_multiplier >= 0.0:
        raise PrivacyError(f"The noise multiplier must be ≥ 0, got {noise_multiplier}.")
    if not expected_batch_size > 0.0:
        raise PrivacyError("The expected batch size q·n must be positive, got "
                           f"{expected_batch_size}.")
    std = noise_multiplier * clip
    noise = gaussian_noise(grad_sum.numel(), std, generator).reshape(grad_sum.shape)
    return (grad_sum.float() + noise.to(grad_sum.device)) / expected_batch_size


def _check_clip(clip: float) -> None:
    # C = 0 is allowed here (every gradient is zeroed, and so is the noise zC): data-flow tests
    # use it to show that messages do not depend on the data. Configurations must refuse C ≤ 0.
    if not (clip >= 0.0 and clip < float("inf")):
        raise PrivacyError(f"The clipping norm C must be a finite number ≥ 0, got {clip}.")
