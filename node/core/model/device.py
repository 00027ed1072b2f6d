"""Which torch device a node trains on: `--device auto|cpu|cuda`.

Only the gradient oracle lives there (the model's forward and backward, per-sample clipping and
the gradient noise, drawn by a generator on that device); the algorithm's state and every
message stay CPU float32, so what leaves a node does not depend on where it was computed.
"""

from __future__ import annotations

import torch

from node.errors import ConfigError


def resolve_device(choice: str) -> torch.device:
    """`auto` is CUDA when torch finds a GPU, else the CPU; `cuda` without one is refused."""
    if choice == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if choice == "auto":
        return torch.device("cuda" if available else "cpu")
    if choice == "cuda":
        if not available:
            raise ConfigError("device cuda was asked for, but torch finds no CUDA GPU here "
                              "(torch.cuda.is_available() is False); use --device cpu or auto.")
        return torch.device("cuda")
    raise ConfigError(f"unknown device {choice!r}; use auto, cpu or cuda.")
