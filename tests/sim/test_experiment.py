"""The experiment grid, the reference methods and the report, end to end on synthetic data."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import RunConfig
from node.experiments.grid import Preset, build_grid, is_done, run_grid
from node.experiments.studies.report import load_runs, write_report
from node.sim.references import run_reference

ROOT = Path(__file__).resolve().parents[2]

TINY = Preset(
    name="tiny",
    base=dict(topology="ring", nodes=3, model="logreg", dataset="synthetic", partition="iid",
              local_steps=1, lr=0.1, batch_size=32, clip=1.0, delta=1e-5, test_examples=200,
              eval_every=2, primal_every=2),
    regimes={"scarce": dict(examples_per_node=200, rounds=4)},
    methods=("dpnorm-msg", "dp-ecl", "ecl", "ecl-clipped", "fedavg", "solo", "pooled"),
    epsilons=(math.inf, 8.0),
    gammas=(0.1, 0.3),
    seeds=(0,),
)


def test_grid_shape_pairs_seeds_and_skips_nonsense() -> None:
    specs = build_grid(TINY, seeds=[0, 1])
    paths = [s.path for s in specs]
    assert len(paths) == len(set(paths))
    assert "scarce/dpnorm-msg-g0.1/eps-8/seed-1" in paths
    assert "scarce/pooled/eps-inf/seed-0" in paths
    assert not any(p.startswith("scarce/pooled/eps-8") for p in paths)  # pooled: no DP
    assert not any(p.startswith("scarce/dpnorm-msg-g0.1/eps-inf") for p in paths)
    assert not any(p.startswith("scarce/ecl/eps-8") for p in paths)
    for s in specs:  # pairing: the noise stream is the seed's, whatever γ is
        assert s.config["noise_seed"] == s.config["seed"] == s.seed


def test_clipped_settings_reach_exactly_the_runs_that_clip() -> None:
    specs = build_grid(dataclasses.replace(TINY, clipped={"lr": 0.5}))
    lr = {s.path: s.config["lr"] for s in specs}
    assert lr["scarce/ecl-clipped/eps-inf/seed-0"] == 0.5
    assert lr["scarce/dp-ecl/eps-8/seed-0"] == 0.5
    assert lr["scarce/solo/eps-8/seed-0"] == 0.5
    assert lr["scarce/ecl/eps-inf/seed-0"] == 0.1
    assert lr["scarce/solo/eps-inf/seed-0"] == 0.1
    assert lr["scarce/pooled/eps-inf/seed-0"] == 0.1


def test_tiny_grid_runs_resumes_and_reports(tmp_path: Path) -> None:
    specs = build_grid(TINY)
    log = io.StringIO()
    first = run_grid(specs, tmp_path, jobs=1, stream=log)
    assert first["failed"] == {}, first["failed"]
    assert first["ran"] == len(specs) and all(is_done(tmp_path, s) for s in specs)
    assert f"[{len(specs)}/{len(specs)}]" in log.getvalue()  # progress, one line per run

    stamp = {s.path: (tmp_path / s.path / "DONE").stat().st_mtime_ns for s in specs}
    second = run_grid(specs, tmp_path, jobs=1, stream=io.StringIO())
    assert second["skipped"] == len(specs) and second["ran"] == 0
    assert stamp == {s.path: (tmp_path / s.path / "DONE").stat().st_mtime_ns for s in specs}

    # An unfinished run (no DONE) is redone from scratch, the others are not touched.
    victim = specs[0]
    (tmp_path / victim.path / "DONE").unlink()
    third = run_grid(specs, tmp_path, jobs=1, stream=io.StringIO())
    assert third["ran"] == 1 and third["skipped"] == len(specs) - 1

    summary = json.loads((tmp_path / victim.path / "summary.json").read_text())
    private = [json.loads((tmp_path / s.path / "summary.json").read_text())
               for s in specs if math.isfinite(s.epsilon)]
    assert summary["rounds"] == 4
    assert all(0 < p["max_epsilon"] <= 8.0 + 1e-9 for p in private)

    # The clipped control really clipped: Poisson batches, no noise, no ε.
    control = json.loads((tmp_path / "scarce/ecl-clipped/eps-inf/seed-0/summary.json").read_text())
    plain = json.loads((tmp_path / "scarce/ecl/eps-inf/seed-0/summary.json").read_text())
    assert control["max_epsilon"] is None
    assert control["nodes"]["0"]["loss"] != plain["nodes"]["0"]["loss"]

    daemon = tmp_path / "daemon"
    for node in range(2):
        (daemon / str(node)).mkdir(parents=True)
        (daemon / str(node) / "metrics.jsonl").write_text("".join(
            json.dumps({"round": r, "round_seconds": 1.0, "compute_seconds": 0.25,
                        "wait_seconds": 0.5}) + "\n" for r in range(3)))
    report = write_report(tmp_path, daemon_run=daemon)
    text = report.read_text()
    assert len(load_runs(tmp_path)) == len(specs)
    assert "| method | ε = ∞ | ε = 8 |" in text
    assert "DP-Norm (message), γ=0.1" in text and "± " in text
    assert "| 1 | 3 | 0.2500 | 0.2500 | 0.5000 | 1.0000 | 25 | 25 | 50 |" in text
    assert "Federation vs solo" in text and "Privacy cost" in text
    assert "**Does federating beat training alone?**" in text
    assert "**What does privacy cost?**" in text
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert pngs == ["scarce_eps-8.png", "scarce_vs-eps.png"]
    assert all((report.parent / p).stat().st_size > 10_000 for p in pngs)
    assert "noise-free control" in text  # claim 1 puts the dual norms next to the control


@pytest.mark.parametrize("method", ["fedavg", "scaffold", "solo", "pooled"])
def test_references_beat_chance_on_synthetic(method: str) -> None:
    cfg = RunConfig(topology="ring", nodes=3, rounds=15, model="logreg", dataset="synthetic",
                    partition="iid", examples_per_node=300, test_examples=300, batch_size=32,
                    lr=0.1, eval_every=5, local_steps=2)
    summary = run_reference(method, cfg, None)  # type: ignore[arg-type]
    assert summary["max_epsilon"] is None
    assert summary["mean_accuracy"] > 0.3, summary["mean_accuracy"]  # chance: 0.1


def test_pooled_refuses_privacy() -> None:
    with pytest.raises(ValueError, match="pooled"):
        run_reference("pooled", RunConfig(epsilon=4.0, dataset="synthetic"), None)


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_experiment_cli_filters_and_refuses_bad_settings(tmp_path: Path) -> None:
    listed = _script("scripts/experiment.py", "--preset", "quick", "--out", str(tmp_path),
                     "--regimes", "scarce", "--epsilons", "1", "--methods", "dp-ecl", "solo",
                     "--list")
    assert listed.returncode == 0, listed.stderr
    runs = [line.split()[1] for line in listed.stdout.splitlines() if line.startswith("todo")]
    assert runs == ["scarce/dp-ecl/eps-1/seed-0", "scarce/solo/eps-1/seed-0"]
    assert not any(tmp_path.iterdir())  # --list runs nothing

    bad = _script("scripts/experiment.py", "--preset", "quick", "--out", str(tmp_path),
                  "--set", "lr=-1", "--list")
    assert bad.returncode == 2 and "lr" in bad.stderr


def test_report_cli_refuses_a_missing_directory(tmp_path: Path) -> None:
    result = _script("scripts/report.py", str(tmp_path / "nope"))
    assert result.returncode == 2 and "not a directory" in result.stderr
