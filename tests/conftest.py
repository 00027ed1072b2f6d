"""Test-wide settings: one torch thread per test process (2-core CI, many processes)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
