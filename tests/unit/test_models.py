"""Models: shapes, GroupNorm only, deterministic init, flat parameter views, per-sample grads."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from node.core.model import FlatParams, build_model, num_params
from node.core.model.models import flatten, param_spec, unflatten
from node.core.model.user_model import MODELS

IMAGE = (1, 28, 28)
# Small widths keep every test here fast; the architecture is the same at any width.
WIDTH = {"logreg": None, "mlp": 16, "cnn": 4, "resnet10": 4}


def small(name: str, in_shape: tuple[int, ...] = IMAGE, seed: int = 0) -> nn.Module:
    return build_model(name, in_shape=in_shape, num_classes=10, width=WIDTH[name], seed=seed)


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_and_no_batchnorm_or_buffers(name: str) -> None:
    model = small(name)
    assert model(torch.randn(5, *IMAGE)).shape == (5, 10)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert list(model.buffers()) == []
    if name in ("cnn", "resnet10"):
        assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_flat_feature_models(name: str) -> None:
    model = small(name, in_shape=(30,))
    assert model(torch.randn(4, 30)).shape == (4, 10)


@pytest.mark.parametrize("name", MODELS)
def test_other_image_shapes(name: str) -> None:
    model = small(name, in_shape=(3, 13, 9))
    assert model(torch.randn(2, 3, 13, 9)).shape == (2, 10)


@pytest.mark.parametrize("name", ["cnn", "resnet10"])
def test_image_models_refuse_flat_input(name: str) -> None:
    with pytest.raises(ValueError, match=f"model {name} needs image input"):
        small(name, in_shape=(30,))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg'; choose one of logreg, mlp"):
        build_model("vgg", in_shape=IMAGE, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="num_classes ≥ 2"):
        build_model("mlp", in_shape=IMAGE, num_classes=1, seed=0)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_params_and_rng_untouched(name: str) -> None:
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, b = small(name, seed=7), small(name, seed=7)
    assert torch.equal(torch.rand(3), before), "build_model must not consume the global RNG"
    assert torch.equal(flatten(a), flatten(b))
    assert not torch.equal(flatten(a), flatten(small(name, seed=8)))


@pytest.mark.parametrize("name", MODELS)
def test_flatten_unflatten_round_trip_and_views(name: str) -> None:
    model = small(name)
    layout = FlatParams.of(model)
    flat = flatten(model)
    assert flat.dtype == torch.float32 and flat.dim() == 1 and flat.numel() == layout.numel
    assert layout.numel == sum(p.numel() for p in model.parameters())
    views = unflatten(flat, param_spec(model))
    assert list(views) == [n for n, _ in model.named_parameters()]
    for p, v in zip(model.parameters(), views.values(), strict=True):
        assert torch.equal(p, v)
        assert v.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
    flat[0] += 1.0  # a view sees writes to the flat vector: no copies were made
    first = next(iter(views.values()))
    assert first.flatten()[0] == flat[0]
    assert torch.equal(layout.flatten(views), flat)
    # flatten returns a copy: changing the model afterwards does not change it
    layout.assign(model, torch.zeros_like(flat))
    assert torch.count_nonzero(flatten(model)) == 0 and torch.count_nonzero(flat) > 0


def test_unflatten_rejects_wrong_length() -> None:
    layout = FlatParams.of(small("logreg"))
    with pytest.raises(ValueError, match="length 7850"):
        layout.unflatten(torch.zeros(10))


@pytest.mark.parametrize("name", MODELS)
def test_functional_call_and_per_sample_grads(name: str) -> None:
    model = small(name)
    layout = FlatParams.of(model)
    flat = flatten(model)
    views = layout.unflatten(flat)
    x, y = torch.randn(3, *IMAGE), torch.tensor([1, 4, 9])
    assert torch.allclose(functional_call(model, views, (x,)), model(x), atol=1e-6)

    def loss(params: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, params, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    per_sample = layout.concat(vmap(grad(loss), in_dims=(None, 0, 0))(views, x, y))
    assert per_sample.shape == (3, layout.numel)
    # Sample 1's row equals the ordinary autograd gradient on that sample, flattened canonically.
    model.zero_grad()
    loss(dict(model.named_parameters()), x[1], y[1]).backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert torch.allclose(per_sample[1], expected, atol=1e-5, rtol=1e-4)


def test_num_params_matches_default_widths() -> None:
    counts = {n: num_params(n, in_shape=IMAGE, num_classes=10) for n in MODELS}
    assert counts["logreg"] == 784 * 10 + 10
    assert counts["mlp"] == (784 * 128 + 128) + (128 * 128 + 128) + (128 * 10 + 10)
    assert counts["logreg"] < counts["cnn"] < counts["mlp"] < counts["resnet10"]
    assert num_params("resnet10", in_shape=IMAGE, num_classes=10, width=8) < counts["resnet10"]
