"""The issue's own words, end to end through the CLI: a CSV with a binary label and a user's
model file, at ε = 4, write `auroc` per evaluated round and `mean_auroc`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from node.outputs.files import read_metrics

ROOT = Path(__file__).resolve().parents[2]

MODEL = '''
import torch.nn as nn


def build(in_shape, num_classes):
    return nn.Sequential(nn.Linear(in_shape[0], 16), nn.LayerNorm(16), nn.ReLU(),
                         nn.Linear(16, num_classes))
'''


def test_csv_and_user_model_write_auroc(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 5))
    y = (x[:, 0] - x[:, 1] + rng.normal(0, 0.5, 600) > 0).astype(int)
    table = tmp_path / "that.csv"
    table.write_text("a,b,c,d,e,label\n" + "\n".join(
        ",".join(f"{v:.5f}" for v in row) + f",{c}" for row, c in zip(x, y, strict=True)))
    (tmp_path / "that.py").write_text(MODEL)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "simulate.py"), "--dataset", str(table),
         "--model", f"{tmp_path / 'that.py'}:build", "--epsilon", "4", "--nodes", "3",
         "--rounds", "20", "--eval-every", "5",
         "--batch-size", "32", "--lr", "1.0", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "auroc" and summary["config"]["model"].endswith("that.py:build")
    finals = []
    for node in ("0", "1", "2"):
        records = read_metrics(out / node / "metrics.jsonl")
        evaluated = [r for r in records if r["accuracy"] is not None]
        assert [r["round"] for r in evaluated] == [0, 5, 10, 15, 19]
        assert all(0.0 <= r["auroc"] <= 1.0 and r["balanced_accuracy"] is not None
                   for r in evaluated)
        assert all(r["auroc"] is None for r in records if r["accuracy"] is None)
        assert summary["nodes"][node]["auroc"] == evaluated[-1]["auroc"]
        finals.append(evaluated[-1]["auroc"])
        assert summary["nodes"][node]["epsilon"] <= 4.0 + 1e-9
    assert math.isclose(summary["mean_auroc"], float(np.mean(finals)))
    assert summary["mean_auroc"] > 0.7  # a learnable task, above chance (0.5) after 20 rounds
