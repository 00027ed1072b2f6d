"""A per-sample gradient that is not finite must not reach the released sum (audit defect 2).

Clipping by min(1, C/‖g‖) cannot bound such a gradient: a NaN norm gives factor 1 and an
infinite one 0·∞ = NaN, so one overflowing example turned the clipped sum, and every noisy
release while it was sampled, into NaN: membership revealed, ε = ∞ for that pair. The fix
zeroes the example (norm 0 ≤ C, so the sensitivity bound still holds) and counts it locally.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from node.core.model import GradientPolicy, LocalTrainer, build_model
from privacy.mechanisms import clip_per_sample, clipped_grad_sum, make_generator

CLIP = 1.0


def _model_loss(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    def loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, params, (x,)), y)
    return loss


def _params(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def _quadratic(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    # ∇_w (x·w)² = 2(x·w)x: finite inputs of 1e20 overflow float32 to ∞ in the gradient.
    del y
    return ((x @ params["w"]) ** 2).mean()


def _images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_a_cnn_row_of_1e20_is_dropped_from_the_clipped_sum() -> None:
    # The audit's case: finite inputs (they pass the loader's check) that overflow inside a CNN
    # (GroupNorm squares them); unfixed, ~99 % of the sum's coordinates were NaN.
    model = build_model("cnn", in_shape=(1, 28, 28), num_classes=3, width=16, seed=0)
    loss_fn, params = _model_loss(model), _params(model)
    x, y = _images(7, seed=1)
    planted = x.clone()
    planted[3] = 1e20
    clean = torch.cat([x[:3], x[4:]]), torch.cat([y[:3], y[4:]])
    expected = clipped_grad_sum(loss_fn, params, *clean, CLIP)
    for chunk in (256, 2):   # the planted row alone in its chunk, or with others
        got = clipped_grad_sum(loss_fn, params, planted, y, CLIP, chunk_size=chunk)
        assert bool(torch.isfinite(got.total).all())
        torch.testing.assert_close(got.total, expected.total, rtol=1e-5, atol=1e-6)
        assert got.dropped == 1 and expected.dropped == 0
        assert got.losses.shape == (7,)


@pytest.mark.parametrize(("value", "what"), [
    (1e20, "finite input, gradient overflows to inf"),
    (math.inf, "infinite input, gradient inf and NaN"),
    (math.nan, "NaN input, gradient NaN"),
])
def test_non_finite_gradients_are_zeroed_and_counted(value: float, what: str) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 4, generator=g)
    y = torch.zeros(9, dtype=torch.long)
    params = {"w": torch.tensor([1.0, -0.5, 0.25, 2.0])}
    planted = x.clone()
    planted[[2, 6]] = value   # two bad rows, one in each of two chunks below
    keep = [k for k in range(9) if k not in (2, 6)]
    expected = clipped_grad_sum(_quadratic, params, x[keep], y[keep], CLIP)
    for chunk in (256, 4):
        got = clipped_grad_sum(_quadratic, params, planted, y, CLIP, chunk_size=chunk)
        assert bool(torch.isfinite(got.total).all()), what
        torch.testing.assert_close(got.total, expected.total, rtol=1e-5, atol=1e-6)
        assert got.dropped == 2, what
    # clip_per_sample: the same rows become exactly zero, the others are clipped as usual.
    grads = torch.stack([2 * (row @ params["w"]) * row for row in planted])
    clipped, norms = clip_per_sample(grads, CLIP)
    assert bool(torch.isfinite(clipped).all()), what
    assert torch.equal(clipped[[2, 6]], torch.zeros(2, 4))
    assert int((~torch.isfinite(norms)).sum()) == 2
    reference, _ = clip_per_sample(grads[keep], CLIP)
    torch.testing.assert_close(clipped[keep], reference)
    assert bool((torch.linalg.vector_norm(clipped, dim=1, dtype=torch.float64) <= CLIP).all())


def test_a_row_of_1e20_cannot_reveal_itself_through_the_noisy_release() -> None:
    model = build_model("cnn", in_shape=(1, 28, 28), num_classes=3, width=16, seed=0)
    x, y = _images(12, seed=3)
    x[5] = 1e20
    # q = 1: the planted row is in every batch, so every release would be NaN if it leaked.
    policy = GradientPolicy("noisy", CLIP, noise_multiplier=1.0, sample_rate=1.0,
                            expected_batch=12.0)
    trainer = LocalTrainer(model, x, y, x[:2], y[:2], batch_size=12, policy=policy,
                           data_generator=torch.Generator().manual_seed(0),
                           noise_generator=make_generator(4))
    w = trainer.layout.flatten(model)
    for step in range(3):
        g, loss = trainer.gradient(w)
        assert bool(torch.isfinite(g).all())
        assert trainer.nonfinite_examples == step + 1
        # The local loss report is the mean over the finite per-sample losses.
        assert math.isfinite(loss)


def test_the_loss_report_is_the_mean_of_the_finite_losses() -> None:
    model = build_model("mlp", in_shape=(4,), num_classes=3, width=8, seed=0)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)
    x[0] = math.nan   # a NaN loss and a NaN gradient
    policy = GradientPolicy("clipped", CLIP, sample_rate=1.0, expected_batch=6.0)
    trainer = LocalTrainer(model, x, y, x[:1], y[:1], batch_size=6, policy=policy,
                           data_generator=torch.Generator().manual_seed(0),
                           noise_generator=make_generator(6))
    w = trainer.layout.flatten(model)
    grad_out, loss = trainer.gradient(w)
    params = trainer.layout.unflatten(w)
    expected = F.cross_entropy(functional_call(model, params, (x[1:],)), y[1:])
    assert loss == pytest.approx(float(expected), rel=1e-5)
    assert bool(torch.isfinite(grad_out).all()) and trainer.nonfinite_examples == 1
