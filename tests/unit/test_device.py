"""`--device`: auto/cpu/cuda resolution, the refusal without CUDA, and a CPU run unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from node.config import RunConfig
from node.core.model import resolve_device
from node.errors import ConfigError
from node.sim.simulate import build_runners

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_and_auto_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_picks_cuda_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


def test_cuda_without_cuda_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device cuda was asked for, but torch finds no CUDA"):
        resolve_device("cuda")


def test_unknown_device_in_config() -> None:
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, cuda"):
        RunConfig(device="tpu")


def test_cpu_node_keeps_everything_on_the_cpu() -> None:
    cfg = RunConfig(topology="line", nodes=2, rounds=1, model="logreg", dataset="synthetic",
                    epsilon=4.0, privacy_mode="message", device="cpu", test_examples=50,
                    noise_seed=1)
    runners = build_runners(cfg)
    trainer = runners[0].setup.trainer
    assert trainer.device == torch.device("cpu")
    assert trainer.noise_generator is not None and trainer.noise_generator.device.type == "cpu"
    out = runners[0].step({1})
    assert all(y.device.type == "cpu" and y.dtype == torch.float32 for y in out.duals.values())
