"""Command-line programs refuse bad input as whole processes: exit 2, one line on stderr,
no traceback, nothing written (the same checks in-process live in tests/unit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec", ["lz4", "topk:2"])
def test_the_simulator_refuses_a_bad_compressor_with_exit_2(spec: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), "--compress",
                           spec, "--rounds", "1", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_simulate_refuses_cuda_without_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "simulate.py"), "--dataset", "synthetic",
         "--model", "logreg", "--nodes", "2", "--topology", "line", "--rounds", "1",
         "--device", "cuda", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: device cuda was asked for"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "run" / "summary.json").exists()


def test_the_module_runs_as_a_program() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "privacy",
            "gradient",
            "--epsilon",
            "0",
            "--delta",
            "1e-5",
            "--rounds",
            "1",
            "--sample-rate",
            "0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stdout == ""


def test_a_daemon_refuses_delta_not_below_one_over_its_real_rows(tmp_path: Path) -> None:
    """Declared n̂ = 100 lets δ = 0.005 through; the file's ~400 training rows must not."""
    import numpy as np

    from node.config import RunConfig
    from node.daemon.settings import NodeSettings, render_toml

    rng = np.random.default_rng(0)
    data = tmp_path / "rows.npz"
    np.savez(data, x=rng.normal(size=(500, 5)).astype(np.float32), y=rng.integers(0, 2, 500))
    run = RunConfig(topology="line", nodes=2, rounds=2, dataset="synthetic", model="logreg",
                    lr=0.5, epsilon=2.0, delta=0.005, batch_size=10, public_examples=100,
                    classes=2, threads=1)
    settings = NodeSettings(id=0, out=str(tmp_path / "out"), data_file=str(data),
                            startup_timeout=5.0)
    config = tmp_path / "node0.toml"
    config.write_text(render_toml(run, settings, {1: "tcp://127.0.0.1:9"}))
    proc = subprocess.run([sys.executable, "-m", "node", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: δ must lie in (0, 1/n)") and "got δ=0.005" in last, last
    assert "Traceback" not in proc.stderr and "READY" not in proc.stdout
    assert not (tmp_path / "out" / "privacy_ledger.json").exists()
