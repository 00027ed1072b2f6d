"""The tuning protocol: validation split carved from the nodes' own data (the test split is never
read), equal budgets, the choice recorded; the heterogeneity preset's filters and its answer."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from node.config import RunConfig
from node.core.data import LazyDataset, load_data, shard, shards
from node.core.data.dataset import TensorRows
from node.errors import ConfigError
from node.experiments.grid import (
    Preset,
    Protocol,
    build_grid,
    load_runs,
    run_grid,
    tuned_specs,
    tuning_specs,
)
from node.experiments.grid.tuning import candidates
from node.experiments.studies.answers import measured_recommendation
from node.experiments.studies.heterogeneity import select_regimes
from node.experiments.studies.paper import preset
from node.experiments.studies.winners import (
    contrasts_table,
    load,
    recommend,
    save,
    winners,
    winners_table,
)
from node.sim.simulate import build_runners, simulate

TINY = Preset(
    name="tiny-tune",
    base=dict(topology="ring", nodes=3, model="logreg", dataset="synthetic", partition="iid",
              local_steps=1, lr=0.1, batch_size=32, clip=1.0, delta=1e-5, test_examples=100,
              eval_every=3, primal_every=0, examples_per_node=120, rounds=3),
    regimes={"cell": {}},
    methods=("dpnorm-grad", "dp-dpsgd", "ecl", "dpsgd"),
    epsilons=(math.inf, 8.0), gammas=(0.1,), seeds=(0, 1), clipped={"lr": 1.0},
)


class Poisoned:
    """A test split that fails the moment anyone reads it."""

    def __len__(self) -> int:
        return 50

    def take(self, rows: np.ndarray) -> torch.Tensor:
        raise AssertionError("the test split was read during tuning")

    def head(self, count: int) -> torch.Tensor:
        raise AssertionError("the test split was read during tuning")


def poisoned(cfg: RunConfig) -> LazyDataset:
    data = load_data(cfg)
    return LazyDataset(TensorRows(data.x_train), data.y_train, Poisoned(), data.y_test,
                       num_classes=data.num_classes, in_shape=data.in_shape, name=data.name)


def test_validation_split_comes_from_the_shards_and_never_reads_the_test_split() -> None:
    cfg = RunConfig(nodes=3, model="logreg", dataset="synthetic", examples_per_node=100,
                    test_examples=None, validation_fraction=0.2, seed=3)
    data = poisoned(cfg)
    parts = shards(cfg, data)  # would raise on any read of the test split
    def rows(x: torch.Tensor) -> set[tuple[float, ...]]:
        return {tuple(r) for r in x.reshape(len(x), -1).numpy().round(6).tolist()}

    train = [rows(p.x_train) for p in parts]
    held = rows(parts[0].x_test)
    assert len(held) == 3 * 20 and all(len(t) == 80 for t in train)
    assert not any(held & t for t in train)  # scored rows are never trained on
    assert all(p.x_test is parts[0].x_test for p in parts)  # one split, every node
    single = shard(cfg, data, 1)  # the daemon's / the references' path agrees
    assert torch.equal(single.x_train, parts[1].x_train)
    assert torch.equal(single.x_test, parts[0].x_test)
    again = shards(cfg, poisoned(cfg))  # deterministic from the seed
    assert torch.equal(again[2].x_train, parts[2].x_train)
    other = shards(cfg.replace(seed=4), poisoned(cfg))
    assert not torch.equal(other[0].x_test, parts[0].x_test)
    # a whole simulated run on the poisoned data: training and evaluation never touch the test
    summary = simulate(cfg.replace(rounds=2), None, runners=build_runners(cfg.replace(rounds=2),
                                                                          data))
    assert summary["mean_accuracy"] is not None
    with pytest.raises(AssertionError, match="test split was read"):
        shards(cfg.replace(validation_fraction=0.0), data)  # the control: this one does read it


def test_validation_fraction_is_checked() -> None:
    with pytest.raises(ConfigError, match="validation_fraction must be in"):
        RunConfig(validation_fraction=1.0)


def test_every_method_gets_the_same_budget_over_its_own_knobs() -> None:
    protocol = Protocol(budget=3)
    sets = {m: candidates(m, protocol) for m in ("dpnorm-grad", "dp-ecl-grad", "dp-dpsgd",
                                                 "fedavg", "solo")}
    assert {len(c) for c in sets.values()} == {3}
    assert all(set(c) == {"lr_factor"} for c in sets["dp-dpsgd"])
    assert {"theta", "gamma", "eta_scale"} <= set(sets["dpnorm-grad"][0])
    assert "gamma" not in sets["dp-ecl-grad"][0]
    assert "local_steps" in sets["fedavg"][0]
    assert candidates("dpnorm-grad", protocol) == sets["dpnorm-grad"]  # the same in every cell
    with pytest.raises(ValueError, match="fewer than the budget"):
        candidates("dpsgd", Protocol(budget=4))


def test_tuning_runs_then_final_runs_use_and_record_the_choice(tmp_path: Path) -> None:
    specs = build_grid(TINY)
    protocol = Protocol(budget=2, lr_factors=(0.3, 1.0), thetas=(1.0,), gammas=(0.1,))
    tune = tuning_specs(specs, protocol)
    assert len(tune) == 4 * 2  # four lines: dpnorm-grad, dp-dpsgd at ε 8; ecl, dpsgd at ∞
    assert all(t.config["validation_fraction"] == 0.2 and t.seed == 0 for t in tune)
    before, missing = tuned_specs(specs, protocol, tmp_path)
    assert before == [] and len(missing) == len(specs)
    assert run_grid(tune, tmp_path / "tuning", stream=io.StringIO())["failed"] == {}
    # Make the larger step the clear winner of one line by rewriting its validation scores.
    line = [t for t in tune if t.method == "dp-dpsgd"]
    for t, score in zip(line, (0.1, 0.9), strict=True):
        done = tmp_path / "tuning" / t.path / "DONE"
        brief = json.loads(done.read_text()) | {"mean_accuracy": score}
        done.write_text(json.dumps(brief))
    final, missing = tuned_specs(specs, protocol, tmp_path / "tuning")
    assert missing == [] and len(final) == len(specs)
    gossip = [s for s in final if s.method == "dp-dpsgd"]
    assert all(s.config["lr"] == pytest.approx(1.0) and s.tuned is not None for s in gossip)
    assert all(s.config.get("validation_fraction", 0.0) == 0.0 for s in final)
    assert [c["validation"] for c in gossip[0].tuned["candidates"]] == [0.1, 0.9]  # type: ignore[index]
    assert {s.seed for s in gossip} == {0, 1}
    run_grid(final[:1], tmp_path / "final", stream=io.StringIO())
    stored = json.loads((tmp_path / "final" / final[0].path / "run.json").read_text())
    assert stored["tuned"]["chosen"] == final[0].tuned["chosen"]  # type: ignore[index]


def test_control_tuning_reads_no_private_run() -> None:
    specs = build_grid(TINY)
    tune = tuning_specs(specs, Protocol(budget=2, lr_factors=(0.3, 1.0), on="control"))
    assert all(math.isinf(t.epsilon) for t in tune)
    assert all(t.config["clip_only"] for t in tune if t.method in ("dpnorm-grad", "dp-dpsgd"))
    for t in tune:
        assert not t.run_config().private


def test_heterogeneity_filters_reject_unknown_cells_in_one_sentence() -> None:
    axes = preset("heterogeneity").axes
    assert len(select_regimes(axes, {"skew": ["iid"], "graph": ["ring-6"], "K": []})) == 2
    with pytest.raises(ValueError, match=r"unknown graph 'ring-7'.*choose from"):
        select_regimes(axes, {"graph": ["ring-7"]})
    with pytest.raises(ValueError, match=r"unknown K '3'"):
        select_regimes(axes, {"K": ["3"]})
    trimmed = {n: a for n, a in axes.items() if a["graph"] != "exp-16" or a["skew"] != "iid"}
    with pytest.raises(ValueError, match="no cell of this preset has"):
        select_regimes(trimmed, {"skew": ["iid"], "graph": ["exp-16"]})


def test_the_script_refuses_bad_filters_before_any_run(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.experiment import main

    with pytest.raises(SystemExit) as exc:
        main(["--preset", "heterogeneity", "--out", str(tmp_path / "x"), "--skews", "classes:3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown skew 'classes:3'") and err.count("\n") == 0
    assert not (tmp_path / "x").exists()


def test_heterogeneity_preset_builds_only_valid_configs() -> None:
    p = preset("heterogeneity")
    specs = build_grid(p, seeds=[0])
    for s in specs:
        s.run_config()
    assert not any(s.method == "dpnorm-msg" and s.config["local_steps"] > 1 for s in specs)
    assert {s.config["rounds"] * s.config["local_steps"] for s in specs} == {80}


def _fake_run(root: Path, regime: str, method: str, eps: float, seed: int, acc: float) -> None:
    d = root / regime / method / f"eps-{eps:g}" / f"seed-{seed}"
    d.mkdir(parents=True)
    spec = {"method": method, "regime": regime, "epsilon": None if math.isinf(eps) else eps,
            "gamma": 0.1 if method.startswith("dpnorm") else 0.0, "seed": seed,
            "config": {"partition": "classes:2", "topology": "ring", "nodes": 16},
            "tuned": {"chosen": {"lr": 0.3}}}
    (d / "run.json").write_text(json.dumps(spec))
    nodes = {str(i): {"accuracy": acc + 0.01 * i} for i in range(2)}
    cfg = {"partition": "classes:2", "topology": "ring", "nodes": 12, "local_steps": 1}
    (d / "summary.json").write_text(json.dumps({"metric": "accuracy", "nodes": nodes,
                                                "config": cfg}))
    (d / "DONE").write_text("{}")


def test_winners_table_is_seed_paired(tmp_path: Path) -> None:
    for seed, (a, b) in enumerate(((0.70, 0.65), (0.72, 0.70))):
        _fake_run(tmp_path, "c2_ring-16_k1", "dpnorm-grad", 4.0, seed, a)
        _fake_run(tmp_path, "c2_ring-16_k1", "dp-dpsgd", 4.0, seed, b)
    runs = load_runs(tmp_path)
    (cell,) = winners(runs)
    assert cell.winner == "dpnorm-grad-g0.1" and cell.runner_up == "dp-dpsgd"
    assert cell.margin == pytest.approx(0.035) and cell.ahead == (2, 2)
    table = winners_table(runs)
    assert "c2_ring-16_k1" in table and "+3.5" in table and "lr 0.3" in table
    saved = load(save([cell], tmp_path / "w.json"))
    assert saved == [cell]
    line = recommend(saved, partition="classes:2", topology="ring", nodes=12, epsilon=4.0)
    assert line is not None and "use DP-Norm (gradient)" in line and "2/2 seeds" in line
    assert recommend(saved, partition="iid", topology="ring", nodes=16, epsilon=4.0) is None
    assert load(tmp_path / "missing.json") == []
    # the pre-validation report's line, from a committed answer near the user's setting
    lines = measured_recommendation(runs, tmp_path / "w.json")
    assert len(lines) == 1 and "Near a measured cell (ε = 4)" in lines[0]
    assert measured_recommendation(runs, tmp_path / "missing.json") == []


def test_contrasts_pair_each_sides_best_line_by_seed(tmp_path: Path) -> None:
    scores = {"dpnorm-grad": (0.70, 0.72), "dp-ecl-grad": (0.71, 0.69), "dp-dpsgd": (0.60, 0.66)}
    for method, values in scores.items():
        for seed, value in enumerate(values):
            _fake_run(tmp_path, "c2_ring-16_k1", method, 4.0, seed, value)
    table = contrasts_table(load_runs(tmp_path))
    row = next(line for line in table.splitlines() if "c2_ring-16_k1" in line)
    # primal-dual's best mean (DP-Norm, 0.71) − DP-D-PSGD: +0.10 and +0.06 → +8.0 ± 2.8, 2/2
    assert "+8.0 ± 2.8" in row and "2/2" in row
    # denoising in gradient mode: 0.70 − 0.71, 0.72 − 0.69 → +1.0 ± 2.8, ahead 1 of 2
    assert "+1.0 ± 2.8" in row and "1/2" in row
    assert row.rstrip().endswith("| – |")  # no message-mode lines in this cell


def test_the_winners_script_publishes_what_prevalidation_reads(tmp_path: Path) -> None:
    import subprocess
    import sys

    for seed, (a, b) in enumerate(((0.70, 0.65), (0.72, 0.70))):
        _fake_run(tmp_path / "grid" / "final", "c2_ring-16_k1", "dpnorm-grad", 4.0, seed, a)
        _fake_run(tmp_path / "grid" / "final", "c2_ring-16_k1", "dp-dpsgd", 4.0, seed, b)
    script = Path(__file__).resolve().parents[2] / "scripts" / "winners.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "grid"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (cell,) = load(tmp_path / "out" / "winners.json")
    assert cell.winner == "dpnorm-grad-g0.1" and cell.ahead == (2, 2)
    text = (tmp_path / "out" / "winners.md").read_text()
    assert "| `c2_ring-16_k1` | DP-Norm (gradient), γ=0.1 +3.5 ± 2.1 (2/2) |" in text
    tuned = json.loads((tmp_path / "out" / "tuning.json").read_text())
    assert tuned["c2_ring-16_k1/dp-dpsgd/eps-4"] == {"chosen": {"lr": 0.3}}
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "none"), "--out",
                          str(tmp_path / "o2")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "holds no finished runs" in bad.stderr
    assert not (tmp_path / "o2").exists()
