"""A model dpnorm refuses under DP, to show the check: `--model examples/bad_models.py:
batchnorm_cnn --epsilon 8` stops with one sentence naming the layer (`features.1`) and
`--fix-batchnorm`, before anything starts; with ε = ∞ it trains, BatchNorm and all."""

from __future__ import annotations

import math

import torch
from torch import nn


class BatchNormCNN(nn.Module):
    """conv-BatchNorm-ReLU, linear. BatchNorm's statistics mix the examples of a batch, so one
    example's gradient depends on the others and per-sample clipping no longer bounds it."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, stride=2, padding=1),
                                      nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8 * math.ceil(height / 2) * math.ceil(width / 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x).flatten(1))
        return logits


def batchnorm_cnn(in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return BatchNormCNN(in_shape, num_classes)
