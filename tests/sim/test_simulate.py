"""scripts/simulate.py end to end: contract outputs, learning, determinism, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import RunConfig
from node.outputs.files import read_metrics
from node.sim.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
RECORD_KEYS = {
    "round", "node", "time", "loss", "accuracy", "auroc", "balanced_accuracy", "dual_norm",
    "consensus_distance", "epsilon", "lifetime_epsilon", "bytes_sent", "bytes_received",
    "peers_alive", "neighbours_heard", "round_seconds", "compute_seconds", "wait_seconds",
    "suspects",
}
SMALL = dict(nodes=4, rounds=12, dataset="synthetic", model="logreg", lr=0.5, batch_size=32,
             examples_per_node=300, test_examples=500, primal_every=1)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "simulate.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_simulate_cli_writes_the_contract_outputs_and_learns(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("--topology", "ring", "--nodes", "4", "--rounds", "15", "--dataset",
                   "synthetic", "--model", "logreg", "--lr", "0.5", "--examples-per-node", "300",
                   "--test-examples", "500", "--primal-every", "1", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 15
    assert set(summary["nodes"]) == {"0", "1", "2", "3"}
    assert {"mean_accuracy", "max_epsilon", "wall_seconds", "config"} <= set(summary)
    assert summary["mean_accuracy"] > 0.3  # 10 classes: chance is 0.1
    for node, info in summary["nodes"].items():
        assert info["exit"] == "finished" and info["rounds_completed"] == 15
        records = read_metrics(out / node / "metrics.jsonl")
        assert [r["round"] for r in records] == list(range(15))
        for r in records:
            assert set(r) == RECORD_KEYS
            assert r["node"] == int(node) and r["peers_alive"] == 2 and r["epsilon"] is None
        sent = [r["bytes_sent"] for r in records]
        assert sent == sorted(sent) and sent[0] > 0
        assert records[-1]["dual_norm"] > 0 and records[-1]["consensus_distance"] is not None


@pytest.mark.parametrize("algorithm", ["dpnorm", "ecl", "dpsgd"])
def test_simulation_is_deterministic_under_the_seed(algorithm: str) -> None:
    cfg = RunConfig(**{**SMALL, "rounds": 4}, algorithm=algorithm, epsilon=4.0)  # type: ignore[arg-type]
    a, b = simulate(cfg, None), simulate(cfg, None)
    for node in a["nodes"]:
        assert a["nodes"][node]["loss"] == b["nodes"][node]["loss"]
        assert a["nodes"][node]["accuracy"] == b["nodes"][node]["accuracy"]
    assert a["max_epsilon"] is not None and 0 < a["max_epsilon"] <= 4.0


def test_every_algorithm_beats_chance_without_privacy() -> None:
    for algorithm in ("dpnorm", "ecl", "dpsgd"):
        summary = simulate(RunConfig(**SMALL, algorithm=algorithm), None)  # type: ignore[arg-type]
        assert summary["mean_accuracy"] > 0.3, algorithm


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--topology", "rign"], "unknown topology"),
        (["--topology", "file:{edges}"], "connected"),
        (["--partition", "classes:12"], "classes"),
        (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent/fmnist"],
         "dataset-fashion-mnist"),
        (["--lr", "0"], "lr"),
        (["--lr", "-1"], "lr"),
        (["--gamma", "1.5"], "gamma"),
        (["--nodes", "abc"], "integer"),
        (["--algorithm", "fedprox"], "algorithm"),
        (["--epsilon", "2", "--local-steps", "3"], "local_steps = 1"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(tmp_path: Path, args: list[str],
                                              fragment: str) -> None:
    edges = tmp_path / "edges.txt"
    edges.write_text("0 1\n2 3\n")  # two components
    args = [a.replace("{edges}", str(edges)) for a in args]
    base = ["--nodes", "4", "--rounds", "2", "--dataset", "synthetic", "--model", "logreg",
            "--out", str(tmp_path / "out"), "--quiet"]
    proc = run_cli(*base, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]


def test_an_existing_out_is_refused_and_force_moves_it_aside(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A second run into the same DIR appended its metrics to the first's and replaced its
    # summary (issue 29): now refused, or moved aside with --force, never mixed or deleted.
    import hashlib
    import importlib.util

    spec = importlib.util.spec_from_file_location("simulate_cli", ROOT / "scripts" /
                                                  "simulate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "run"
    args = ["--nodes", "3", "--rounds", "1", "--dataset", "synthetic", "--model", "logreg",
            "--examples-per-node", "50", "--test-examples", "50", "--quiet", "--out", str(out)]

    def hashes(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert module.main(args) == 0
    before = hashes(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        module.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already holds a run" in err and "\n" not in err
    assert hashes(out) == before
    assert module.main([*args, "--force"]) == 0
    aside = sorted(out.glob("previous-*"))
    assert len(aside) == 1 and hashes(aside[0]) == before
    assert len(read_metrics(out / "0" / "metrics.jsonl")) == 1   # its own round only
