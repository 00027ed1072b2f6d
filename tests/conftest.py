"""Test-wide settings (one torch thread per test process: 2-core CI, many processes) and
fixtures several test files share."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

# Daemons keep their data's lifetime privacy ledger in the XDG state directory, outside any run
# directory: a test must never spend from (or be refused by) the user's own. Set at import, so
# that environments copied when a test module is imported carry it too; each test then gets
# its own (below).
os.environ["XDG_STATE_HOME"] = _SESSION_STATE = tempfile.mkdtemp(prefix="dpnorm-test-state-")
atexit.register(shutil.rmtree, _SESSION_STATE, True)


@pytest.fixture(autouse=True)
def own_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                  ) -> Path:
    """This test's state directory (lifetime ledgers), inherited by every daemon it starts."""
    state = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


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
