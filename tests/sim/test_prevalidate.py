"""`scripts/prevalidate.py`: one command from a user's table to REPORT.md, answered from the
run's own numbers; bad input is one sentence before any run starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "prevalidate.py"


def write_table(path: Path, rows: int = 1500, classes: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)) * np.array([1, 10, 100, 0.1, 1, 1])
    score = x[:, 0] + x[:, 1] / 10 - x[:, 2] / 100 + rng.normal(0, 0.7, rows)
    y = (score > 0).astype(int) if classes == 2 else np.zeros(rows, dtype=int)
    lines = ["a,b,c,d,e,f,label"] + [",".join(f"{v:.6g}" for v in r) + f",{c}"
                                     for r, c in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_quick_prevalidation_answers_every_question(tmp_path: Path) -> None:
    data = write_table(tmp_path / "site.csv")
    out = tmp_path / "pv"
    proc = run("--data", str(data), "--sites", "3", "--epsilon", "4", "--quick", "--rounds",
               "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (out / "REPORT.md").read_text()
    for question in ("Does federating beat training alone?", "How far from pooling all data?",
                     "What does privacy cost?", "Which algorithm?"):
        assert f"**{question}**" in report
    assert "## What a deployment would pay per round" in report
    # Sites cut from one file by permutations: ε is each site's, not one row of the pool's.
    assert "it does not cover one row of the pooled file" in report
    assert (out / "prevalidation.png").stat().st_size > 0
    # The answers come from the runs' own files: the pooled line is the pooled run's AUROC.
    pooled = json.loads((out / "sites" / "pooled" / "eps-inf" / "seed-0" / "summary.json")
                        .read_text())
    assert pooled["metric"] == "auroc"
    shown = re.search(r"Pooled AUROC (\d+\.\d)%", report)
    assert shown is not None and float(shown.group(1)) == round(100 * pooled["mean_auroc"], 1)
    # ...and the bytes per round are the federated run's real sent bytes over its rounds.
    fed = json.loads((out / "sites" / "dp-dpsgd" / "eps-4" / "seed-0" / "summary.json")
                     .read_text())
    per_round = np.mean([v["bytes_sent"] for v in fed["nodes"].values()]) / fed["rounds"]
    assert f"**DP-D-PSGD**: {per_round:.0f} B sent per node and round" in report


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.csv", "does not exist"),
    (lambda d: write_table(d / "one.csv", classes=1), "only one class"),
    (lambda d: write_table(d / "tiny.csv", rows=5), "fewer than 8"),
])
def test_bad_input_is_one_sentence_and_nothing_runs(tmp_path: Path, make: object,
                                                    message: str) -> None:
    data = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "pv"
    proc = run("--data", str(data), "--sites", "4", "--epsilon", "4", "--quick", "--out",
               str(out), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert not out.exists()


def test_bad_model_and_label_column(tmp_path: Path) -> None:
    data = write_table(tmp_path / "site.csv", rows=200)
    for args, message in ((("--model", str(tmp_path / "nope.py:build")), "does not exist"),
                          (("--label-column", "outcome"), "no 'outcome' column")):
        proc = run("--data", str(data), "--quick", "--out", str(tmp_path / "pv"), *args,
                   timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "pv").exists()
