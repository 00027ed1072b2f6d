"""Two models to pass as `--model examples/models.py:FUNC`, and templates for your own.

Each FUNC takes (in_shape, num_classes) — one example's shape, e.g. (1, 28, 28) or (30,), and
the number of classes — and returns a torch.nn.Module giving logits (B, num_classes). DP
training needs per-sample gradients, so normalise with GroupNorm (never BatchNorm) and keep
every piece of state in parameters (no buffers); see README.md, "Your own model".
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm normalises each example on its own, unlike BatchNorm; gcd keeps any width valid.
    return nn.GroupNorm(math.gcd(channels, 4), channels)


class Residual(nn.Module):
    """conv-GN-ReLU-conv-GN plus the input, then ReLU; a 1×1 conv when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), _norm(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _norm(c_out),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                      _norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet_gn(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small ResNet for images (C, H, W): a strided stem and three residual blocks with
    GroupNorm, widths 8-16-16, then a linear layer on the (H/4)×(W/4) feature map (no global
    pooling, which would discard where in the image a pattern is): 17k parameters on 1×28×28."""
    if len(in_shape) != 3:
        raise ValueError(f"resnet_gn needs images (C, H, W), got examples of shape {in_shape}; "
                         "use table_mlp for feature vectors")
    channels, height, width = in_shape
    # Each stride-2 conv (padding 1) maps a side s to ceil(s / 2).
    side = math.ceil(math.ceil(height / 2) / 2) * math.ceil(math.ceil(width / 2) / 2)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, stride=2, padding=1, bias=False), _norm(8), nn.ReLU(),
        Residual(8, 8),
        Residual(8, 16, stride=2),
        Residual(16, 16),
        nn.Flatten(),
        nn.Linear(16 * side, num_classes),
    )


def table_mlp(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An MLP for tables (D features; any shape is flattened): two hidden layers of 64 with
    LayerNorm, which, like GroupNorm, normalises each example on its own."""
    features = math.prod(in_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 64), nn.LayerNorm(64), nn.ReLU(),
        nn.Linear(64, 64), nn.ReLU(),
        nn.Linear(64, num_classes),
    )
