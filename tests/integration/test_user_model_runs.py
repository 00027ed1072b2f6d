"""A user's model end to end: examples/models.py:resnet_gn trains in the simulator and in real
daemons; examples/bad_models.py:batchnorm_cnn trains where nothing is clipped (ε = ∞), is
refused under DP by both with one sentence naming --fix-batchnorm, exit 2, before anything
starts, and trains clipped once that flag swapped its BatchNorm for GroupNorm.

Time bounds: 3 nodes, 2 rounds, 100 synthetic 28×28 examples per node; every subprocess call
has a timeout and the launcher runs under --timeout.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from node.outputs.files import read_metrics

ROOT = Path(__file__).resolve().parents[2]
GOOD = "examples/models.py:resnet_gn"
BAD = "examples/bad_models.py:batchnorm_cnn"
REFUSAL = ("layer `features.1` is BatchNorm2d, which mixes examples within a batch and breaks "
           "per-sample clipping; pass --fix-batchnorm to swap it for nn.GroupNorm(8, 8), or use "
           "GroupNorm in the model.")
DP = ["--epsilon", "8"]
TINY = ["--topology", "ring", "--nodes", "3", "--rounds", "2", "--dataset", "synthetic",
        "--examples-per-node", "100", "--test-examples", "100", "--quiet"]


def run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # cwd = the checkout, so that the relative model paths are resolved against it.
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *TINY, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def check_trained(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and sorted(summary["nodes"]) == ["0", "1", "2"]
    for node in ("0", "1", "2"):
        assert summary["nodes"][node]["exit"] == "finished"
        records = read_metrics(out / node / "metrics.jsonl")
        assert [r["round"] for r in records] == [0, 1]
        assert all(math.isfinite(r["loss"]) for r in records)
        assert records[-1]["accuracy"] is not None


def check_refused(proc: subprocess.CompletedProcess[str], out: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: in model ") and REFUSAL in proc.stderr
    assert not out.exists(), "no node may start (or write anything) for a refused model"


def test_the_simulator_trains_a_users_model_with_per_sample_clipping(tmp_path: Path) -> None:
    # --clip-only: the private runs' gradients (vmap over grad of the user's model, clipped per
    # sample) without the seconds of noise calibration, which does not depend on the model.
    out = tmp_path / "sim"
    proc = run("simulate.py", "--model", GOOD, "--clip-only", "--out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr
    check_trained(out)


def test_the_simulator_refuses_a_batchnorm_model_under_dp(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    check_refused(run("simulate.py", "--model", BAD, *DP, "--out", str(out), timeout=120), out)


def test_the_simulator_trains_a_batchnorm_model_without_privacy(tmp_path: Path) -> None:
    # ε = ∞, nothing clipped: BatchNorm as anywhere, its running statistics on each node.
    out = tmp_path / "sim"
    proc = run("simulate.py", "--model", BAD, "--out", str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "BatchNorm" not in proc.stderr  # kept as it is: nothing to refuse or swap
    check_trained(out)


def test_fix_batchnorm_swaps_it_for_groupnorm_and_says_so_in_one_line(tmp_path: Path) -> None:
    # --clip-only: per-sample clipping, as under DP, without the noise calibration's seconds.
    out = tmp_path / "sim"
    proc = run("simulate.py", "--model", BAD, "--clip-only", "--fix-batchnorm", "--out",
               str(out), timeout=240)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "--fix-batchnorm" in line]
    assert notes == [f"note: --fix-batchnorm: in model {BAD}, BatchNorm swapped for GroupNorm "
                     "(`features.1` → nn.GroupNorm(8, 8))"]
    check_trained(out)


@pytest.mark.slow
def test_daemons_train_a_users_model_named_by_a_relative_path(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run("launch_local.py", "--model", GOOD, "--round-timeout", "10", "--timeout", "150",
               "--out", str(out), timeout=200)
    assert proc.returncode == 0, proc.stderr
    check_trained(out)
    # Each daemon's config names the file absolutely: a daemon may run in another directory.
    for node in ("0", "1", "2"):
        assert f'model = "{ROOT / GOOD}"' in (out / node / "node.toml").read_text()


def test_the_launcher_refuses_a_batchnorm_model_before_starting_a_daemon(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    check_refused(run("launch_local.py", "--model", BAD, *DP, "--timeout", "60", "--out",
                      str(out), timeout=120), out)
