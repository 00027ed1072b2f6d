"""Models and their flat parameter vector.

Four classifiers: `logreg`, `mlp`, `cnn` (two conv blocks) and `resnet10` (one BasicBlock per
stage, widths w, 2w, 4w, 8w), or a user's own `FILE.py:FUNC` (node.core.model.user_model), held to
the same rules. All normalise with GroupNorm, never BatchNorm: batch statistics
mix examples, which leaks data across a batch and breaks per-sample gradient clipping
(docs/DESIGN.md §1). None has buffers, so a model's whole state is its parameters and
`torch.func.functional_call(model, params, x)` needs nothing else. The one exception is a
user's BatchNorm in a run without clipping (node.core.model.batchnorm): its running statistics are
buffers, node-local, outside the flat vector.

Messages carry one flat float32 vector per model. `FlatParams` fixes its layout: the
concatenation of the parameters in `named_parameters()` order. `unflatten` returns views into
that vector (no copies), so an update applied to the flat vector is immediately the model the
functional call sees, and per-sample gradients taken with `vmap(grad(...))` w.r.t. those views
concatenate back in the same order (`FlatParams.concat`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from node.config import MODELS
from node.core.model.batchnorm import BatchNormUse, swap_for_groupnorm
from node.core.model.user_model import (
    build_user_model,
    check_model_for_dp,
    is_user_model,
    load_user_model,
)

__all__ = [
    "MODELS",
    "FlatParams",
    "build_model",
    "flatten",
    "num_params",
    "param_spec",
    "unflatten",
]

# Defaults keep one forward+backward of a 64-batch of 28×28 images fast on a laptop CPU.
DEFAULT_WIDTH = {"logreg": 0, "mlp": 128, "cnn": 16, "resnet10": 16}

ParamSpec = list[tuple[str, tuple[int, ...]]]


def _groupnorm(channels: int) -> nn.GroupNorm:
    # Up to 8 groups; gcd keeps any width valid (width 12 → 4 groups, width 5 → 1 group).
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the GroupNorm that follows has its own shift.
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class SmallCNN(nn.Module):
    """conv(w, stride 2)-GN-ReLU, conv(2w, stride 2)-GN-ReLU, linear; 28×28 → 7×7 features.

    Strided convs instead of conv + max-pool: on CPU max-pool and full-resolution convs cost
    ~4× more per step (and per-sample gradient), for ~1 point of Fashion-MNIST accuracy.
    """

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, width: int) -> None:
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            _conv3x3(c, width, stride=2), _groupnorm(width), nn.ReLU(),
            _conv3x3(width, 2 * width, stride=2), _groupnorm(2 * width), nn.ReLU(),
        )  # fmt: skip
        # With padding 1, stride 2 maps a side of s to ceil(s / 2).
        h, w = -(-h // 4), -(-w // 4)
        self.classifier = nn.Linear(2 * width * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(x).flatten(1))
        return logits


class BasicBlock(nn.Module):
    """Two 3×3 convs with a residual; a 1×1 conv projects the shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = _conv3x3(c_in, c_out, stride), _groupnorm(c_out)
        self.conv2, self.norm2 = _conv3x3(c_out, c_out), _groupnorm(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _groupnorm(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet10(nn.Module):
    """Stem conv + 4 stages of one BasicBlock each + linear: 10 weight layers.

    No stem max-pool: on 28×28 inputs the three stride-2 stages already reach 4×4.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(in_channels, width), _groupnorm(width), nn.ReLU())
        widths = [width, 2 * width, 4 * width, 8 * width]
        blocks, c_in = [], width
        for i, c_out in enumerate(widths):
            blocks.append(BasicBlock(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))
        return logits


def build_model(
    name: str,
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    width: int | None = None,
    seed: int,
    batchnorm: BatchNormUse = "refuse",
) -> nn.Module:
    """Build a model with parameters fully determined by `seed` (every node starts at the same w⁰).

    Args:
        name: one of MODELS, or a user's FILE.py:FUNC / package.module:FUNC.
        in_shape: one example's shape: (C, H, W) for images or (D,) for feature vectors.
        num_classes: output size.
        width: hidden width (mlp), first conv width (cnn) or base width (resnet10);
            None picks DEFAULT_WIDTH. Ignored by logreg and users' models.
        seed: initialisation seed; the global torch RNG is left untouched.
        batchnorm: what a user's model's BatchNorm layers get (node.core.model.batchnorm.
            batchnorm_use): refused, kept with local statistics, or swapped for GroupNorm.

    Raises:
        ValueError: unknown name, bad sizes, or an image model given flat features.
        ConfigError: a user's model that cannot be loaded or breaks a rule (one sentence).
    """
    if is_user_model(name):
        return _build_user(name, in_shape, num_classes, seed, batchnorm)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    width = DEFAULT_WIDTH[name] if width is None else width
    if num_classes < 2 or (name != "logreg" and width < 1) or not in_shape or min(in_shape) < 1:
        raise ValueError(
            f"model {name} needs num_classes ≥ 2, width ≥ 1 and a non-empty input shape; "
            f"got num_classes={num_classes}, width={width}, in_shape={in_shape}"
        )
    if name in ("cnn", "resnet10") and (len(in_shape) != 3 or min(in_shape[1:]) < 4):
        raise ValueError(
            f"model {name} needs image input (C, H, W) with H, W ≥ 4, got shape {in_shape}; "
            "use logreg or mlp for feature vectors"
        )
    features = math.prod(in_shape)
    # fork_rng: seeding must not disturb the caller's RNG stream (e.g. data shuffling).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module
        if name == "logreg":
            model = nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))
        elif name == "mlp":
            model = nn.Sequential(
                nn.Flatten(),
                nn.Linear(features, width), nn.ReLU(),
                nn.Linear(width, width), nn.ReLU(),
                nn.Linear(width, num_classes),
            )  # fmt: skip
        elif name == "cnn":
            c, h, w = in_shape
            model = SmallCNN((c, h, w), num_classes, width)
        else:
            model = ResNet10(in_shape[0], num_classes, width)
    # The invariants the rest of the system relies on; cheap enough to check every time.
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not list(model.buffers()), "models must keep all state in parameters"
    return model


def _build_user(spec: str, in_shape: tuple[int, ...], num_classes: int, seed: int,
                batchnorm: BatchNormUse) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        func = load_user_model(spec)
        # Seeded after the import, so that random draws at import time cannot change w⁰.
        torch.manual_seed(seed)
        model = build_user_model(func, spec, in_shape, num_classes)
    if batchnorm == "groupnorm":
        model = swap_for_groupnorm(model, spec)
    check_model_for_dp(model, in_shape, num_classes, name=spec, batchnorm=batchnorm)
    return model


def num_params(
    name: str, *, in_shape: tuple[int, ...], num_classes: int, width: int | None = None
) -> int:
    """Number of scalars d in the flat parameter vector of that model."""
    model = build_model(name, in_shape=in_shape, num_classes=num_classes, width=width, seed=0)
    return sum(p.numel() for p in model.parameters())


def param_spec(model: nn.Module) -> ParamSpec:
    """(name, shape) of every parameter, in the canonical (`named_parameters()`) order."""
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


@dataclass(frozen=True)
class FlatParams:
    """The layout of a model's flat parameter vector; build it with `FlatParams.of(model)`."""

    spec: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, model: nn.Module) -> FlatParams:
        return cls(tuple(param_spec(model)))

    @property
    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape in self.spec)

    def flatten(self, params: nn.Module | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A new 1-D float32 tensor holding the parameters (detached) in canonical order."""
        tensors = dict(params.named_parameters()) if isinstance(params, nn.Module) else params
        return self.concat({n: t.detach() for n, t in tensors.items()}).to(torch.float32)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views into `flat` keyed by parameter name; writing to `flat` changes them too."""
        if flat.dim() != 1 or flat.numel() != self.numel:
            raise ValueError(
                f"flat vector must be 1-D of length {self.numel}, got {tuple(flat.shape)}"
            )
        views, offset = {}, 0
        for name, shape in self.spec:
            size = math.prod(shape)
            views[name] = flat[offset : offset + size].view(shape)
            offset += size
        return views

    def concat(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate per-parameter tensors in canonical order, keeping leading batch dims.

        Per-sample gradients from `vmap(grad(f))(views, ...)` have shape (B, *shape) each; the
        result is then (B, d), row b being sample b's gradient in the same layout as `flatten`.
        """
        parts = []
        for name, shape in self.spec:
            t = tensors[name]
            lead = t.shape[: t.dim() - len(shape)]
            if tuple(t.shape[len(lead) :]) != shape:
                raise ValueError(f"{name}: expected trailing shape {shape}, got {tuple(t.shape)}")
            parts.append(t.reshape(*lead, -1))
        return torch.cat(parts, dim=-1)

    def assign(self, model: nn.Module, flat: torch.Tensor) -> None:
        """Copy a flat vector into the model's own parameters (e.g. after a round)."""
        views = self.unflatten(flat)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(views[name])


def flatten(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one new 1-D float32 tensor, in canonical order."""
    return FlatParams.of(model).flatten(model)


def unflatten(
    flat: torch.Tensor, spec: FlatParams | Sequence[tuple[str, tuple[int, ...]]]
) -> dict[str, torch.Tensor]:
    """Views into `flat` keyed by parameter name (see FlatParams.unflatten)."""
    layout = spec if isinstance(spec, FlatParams) else FlatParams(tuple(spec))
    return layout.unflatten(flat)
