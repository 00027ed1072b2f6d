"""Clipping, sampling and noise of the privatised gradient (docs/PRIVACY.md, "How it is
tested")."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.func import functional_call

from privacy.errors import PrivacyError
from privacy.mechanisms import (
    clip_per_sample,
    clipped_grad_sum,
    gaussian_noise,
    make_generator,
    per_sample_gradients,
    poisson_sample,
    privatize_gradient_sum,
)


def _mlp(seed: int, d_in: int = 5, hidden: int = 7, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, classes))


def _loss_fn(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    def loss(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    return loss


def _params(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def _data(seed: int, batch: int, d_in: int = 5, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, d_in, generator=g) * scale, torch.randint(0, 3, (batch,), generator=g)


def test_per_sample_gradients_equal_a_manual_autograd_loop() -> None:
    model = _mlp(0)
    x, y = _data(1, 9)
    grads, losses = per_sample_gradients(_loss_fn(model), _params(model), x, y, chunk_size=4)
    for k in range(9):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[k:k + 1]), y[k:k + 1])
        expected = torch.autograd.grad(loss, list(model.parameters()))
        flat = torch.cat([g.reshape(-1) for g in expected])
        torch.testing.assert_close(grads[k], flat, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(losses[k], loss.detach())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 12),
       clip=st.floats(1e-3, 10.0), scale=st.floats(1e-3, 1e3))
def test_every_clipped_per_sample_norm_is_at_most_c(seed: int, batch: int, clip: float,
                                                    scale: float) -> None:
    model = _mlp(seed)
    x, y = _data(seed, batch, scale=scale)
    grads, _ = per_sample_gradients(_loss_fn(model), _params(model), x, y)
    clipped, norms = clip_per_sample(grads, clip)
    assert torch.all(torch.linalg.vector_norm(clipped, dim=1, dtype=torch.float64) <= clip)
    small = norms <= clip   # rows already inside the ball are not touched
    torch.testing.assert_close(clipped[small], grads[small])


def test_clipped_sum_matches_the_loop_and_chunking_does_not_change_it() -> None:
    model = _mlp(3)
    x, y = _data(4, 23, scale=5.0)
    loss_fn, params = _loss_fn(model), _params(model)
    reference, losses, _ = clipped_grad_sum(loss_fn, params, x, y, clip=0.5, chunk_size=256)
    manual = torch.zeros_like(reference)
    for k in range(23):
        loss = torch.nn.functional.cross_entropy(model(x[k:k + 1]), y[k:k + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        flat = torch.cat([g.reshape(-1) for g in grads])
        manual += flat * min(1.0, 0.5 / flat.norm().item())
    torch.testing.assert_close(reference, manual, rtol=1e-5, atol=1e-5)
    for chunk in (1, 5, 23):
        chunked, chunk_losses, _ = clipped_grad_sum(loss_fn, params, x, y, clip=0.5,
                                                    chunk_size=chunk)
        torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(chunk_losses, losses)
    assert reference.dtype == torch.float32 and losses.shape == (23,)


def test_empty_batch_gives_a_zero_vector_of_the_right_size() -> None:
    model = _mlp(0)
    params = _params(model)
    total, losses, _ = clipped_grad_sum(_loss_fn(model), params, torch.zeros(0, 5),
                                     torch.zeros(0, dtype=torch.long), clip=1.0)
    assert total.shape == (sum(p.numel() for p in params.values()),)
    assert torch.all(total == 0) and losses.numel() == 0


def test_one_example_moves_a_step_by_at_most_c_over_qn_before_noise() -> None:
    # Sensitivity (layer C), including the anti-aligned case where clipping the batch instead
    # of each example would let the difference reach ~2C.
    model = _mlp(5)
    loss_fn, params = _loss_fn(model), _params(model)
    x, y = _data(6, 16)
    clip, q, n = 0.3, 0.05, 320
    base, _, _ = clipped_grad_sum(loss_fn, params, x, y, clip)
    g = make_generator(0)
    for outlier in (1e6, -1e6):
        x_star = torch.full((1, 5), outlier)
        y_star = torch.tensor([1])
        with_star, _, _ = clipped_grad_sum(loss_fn, params, torch.cat([x, x_star]),
                                        torch.cat([y, y_star]), clip)
        step_d = privatize_gradient_sum(base, clip, 0.0, q * n, g)
        step_d1 = privatize_gradient_sum(with_star, clip, 0.0, q * n, g)
        assert (step_d1 - step_d).norm().item() <= clip / (q * n) * (1 + 1e-5)


def test_clip_zero_makes_the_step_independent_of_the_data() -> None:
    model = _mlp(0)
    loss_fn, params = _loss_fn(model), _params(model)
    outputs = []
    for seed in (1, 2):
        x, y = _data(seed, 10, scale=seed * 10.0)
        total, _, _ = clipped_grad_sum(loss_fn, params, x, y, clip=0.0)
        outputs.append(privatize_gradient_sum(total, 0.0, 1.0, 5.0, make_generator(seed)))
    assert torch.equal(outputs[0], outputs[1]) and torch.all(outputs[0] == 0)


def _noise_std_matches(std_measured: float, expected: float) -> bool:
    return abs(std_measured / expected - 1.0) < 0.02


def test_noise_std_is_z_c_over_qn_and_a_factor_two_error_is_caught() -> None:
    # Layer B: zero clipped sum, so the output is pure noise / (q·n). d = 2e5: the std estimate
    # has relative error ~1/√(2d) = 0.16 %, far inside the 2 % tolerance of the issue.
    z, clip, q, n, d = 1.3, 0.7, 0.02, 5000, 200_000
    out = privatize_gradient_sum(torch.zeros(d), clip, z, q * n, make_generator(1234))
    expected = z * clip / (q * n)
    assert abs(out.mean().item()) < 4 * expected / math.sqrt(d)
    assert _noise_std_matches(out.std().item(), expected)
    # A mechanism that forgot the clip (std z instead of zC), or divided twice, must fail.
    wrong = privatize_gradient_sum(torch.zeros(d), clip, 2 * z, q * n, make_generator(1234))
    assert not _noise_std_matches(wrong.std().item(), expected)
    assert not _noise_std_matches(out.std().item(), 2 * expected)


def test_noise_is_float32_gaussian_and_zero_std_gives_zeros() -> None:
    noise = gaussian_noise(100_000, 2.0, make_generator(7))
    assert noise.dtype == torch.float32
    # Fourth moment of a Gaussian is 3σ⁴: catches uniform or otherwise non-normal noise.
    kurtosis = (noise**4).mean().item() / (noise**2).mean().item() ** 2
    assert abs(kurtosis - 3.0) < 0.1
    assert torch.all(gaussian_noise(10, 0.0, make_generator(7)) == 0)


def test_generators_from_os_entropy_differ_and_fixed_seeds_repeat() -> None:
    draws = [gaussian_noise(8, 1.0, make_generator(None)) for _ in range(3)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(gaussian_noise(8, 1.0, make_generator(5)),
                       gaussian_noise(8, 1.0, make_generator(5)))
    g = make_generator(5)
    assert not torch.equal(gaussian_noise(8, 1.0, g), gaussian_noise(8, 1.0, g))


def test_poisson_sample_has_variable_size_and_can_be_empty() -> None:
    g = make_generator(3)
    sizes = [poisson_sample(1000, 0.03, g).numel() for _ in range(400)]
    assert abs(sum(sizes) / len(sizes) - 30) < 1.5 and len(set(sizes)) > 10
    sample = poisson_sample(1000, 0.03, g)
    assert sample.dtype == torch.int64 and bool(torch.all(sample[1:] > sample[:-1]))
    assert poisson_sample(50, 0.0, g).numel() == 0
    assert poisson_sample(50, 1.0, g).tolist() == list(range(50))


@pytest.mark.parametrize("call", [
    lambda: poisson_sample(10, 1.5, make_generator(0)),
    lambda: gaussian_noise(10, -1.0, make_generator(0)),
    lambda: privatize_gradient_sum(torch.zeros(3), -1.0, 1.0, 1.0, make_generator(0)),
    lambda: privatize_gradient_sum(torch.zeros(3), 1.0, 1.0, 0.0, make_generator(0)),
    lambda: privatize_gradient_sum(torch.zeros(3), 1.0, float("nan"), 1.0, make_generator(0)),
])
def test_bad_mechanism_inputs_raise_privacy_error(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PrivacyError):
        call()


def test_gradient_inversion_works_without_noise_and_fails_with_it() -> None:
    # Layer F, the "bias attack" (Phong et al. 2017): for a linear layer with bias and a batch of
    # one, ∂L/∂W_r = (∂L/∂b_r)·x, so x = ∂L/∂W_r / ∂L/∂b_r. Clipping alone does not help (the
    # ratio is scale-invariant); Gaussian noise does.
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 4)
    loss_fn, params = _loss_fn(model), _params(model)
    secret = torch.rand(1, 64)
    total, _, _ = clipped_grad_sum(loss_fn, params, secret, torch.tensor([2]), clip=1.0)

    def reconstruct(message: Tensor) -> Tensor:
        d_weight, d_bias = message[:256].reshape(4, 64), message[256:]
        row = int(d_bias.abs().argmax())
        return d_weight[row] / d_bias[row]

    def pearson(a: Tensor, b: Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    plain = privatize_gradient_sum(total, 1.0, 0.0, 1.0, make_generator(0))
    assert pearson(reconstruct(plain), secret[0]) > 0.999
    g = make_generator(11)
    private = [pearson(reconstruct(privatize_gradient_sum(total, 1.0, 1.0, 1.0, g)), secret[0])
               for _ in range(30)]
    assert abs(sum(private) / len(private)) < 0.15 and max(map(abs, private)) < 0.6
