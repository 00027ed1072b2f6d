"""Test-wide settings (one torch thread per test process: 2-core CI, many processes) and
fixtures several test files share."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def payload_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lengths of every `np.vdot` the codec makes: how often a payload is read in full."""
    import numpy as np

    from gossip import codec

    calls: list[int] = []
    real = np.vdot

    def counting(a: np.ndarray, b: np.ndarray) -> object:
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(codec.np, "vdot", counting)
    return calls
