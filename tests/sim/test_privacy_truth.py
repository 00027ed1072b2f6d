"""The privacy audit's defects (issue 13), one test each: every printed ε is a proven bound.

1. q and the normaliser are public constants (also tests/unit/test_privacy_flow.py, and the
   distinguishing experiment below); q ≥ 1 and an undeclared size of a private file refused.
2. non-finite per-example gradients: tests/unit/test_privacy_nonfinite.py.
3. a checkpoint whose rounds the ledger does not cover is refused.
4. a crashed node's ε in summary.json comes from its ledger, not from metrics.jsonl.
5. a fixed noise seed in a daemon prints no ε, and is refused off one machine.
6. a user's own file is split row by row: tests/unit/test_local_data_adjacency.py.
7. the spend follows the calibrated schedule, whoever is up (no adaptive composition).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from node.config import RunConfig
from node.core.assemble import build_graph, build_node, load_data, shard
from node.core.runner import NodeRunner
from node.daemon.main import build_daemon_node
from node.daemon.settings import NodeConfig, NodeSettings
from node.daemon.state import CheckpointError, ledger_identity, resume, save_state
from node.errors import ConfigError, DataError
from node.outputs.files import LEDGER, MetricsWriter
from node.outputs.records import node_result
from node.sim.audit import audit
from node.sim.simulate import simulate
from privacy.accountant import epsilon as pld_epsilon
from privacy.ledger import Ledger

SMALL = dict(topology="ring", nodes=3, rounds=6, dataset="synthetic", model="logreg", lr=0.5,
             batch_size=16, examples_per_node=100, test_examples=50, epsilon=2.0)


def _daemon_cfg(tmp_path: Path, **run: object) -> NodeConfig:
    cfg = RunConfig(**{**SMALL, **run})  # type: ignore[arg-type]
    return NodeConfig(NodeSettings(id=0, out=str(tmp_path / "0")),
                      {1: "tcp://127.0.0.1:9", 2: "tcp://127.0.0.1:10"}, cfg)


# ---- 1. public q and normaliser ----------------------------------------------------------

def test_a_batch_not_below_the_public_dataset_size_is_refused(tmp_path: Path) -> None:
    """n = 20, B = 64 used to run with q = 1 and the normaliser n: one example then moved the
    step by ≈ 2C/(n+1), twice what the printed ε assumed."""
    cfg = RunConfig(**{**SMALL, "examples_per_node": 20,  # type: ignore[arg-type]
                       "batch_size": 64})
    with pytest.raises(ConfigError, match=r"batch_size 64 is not below .* size 20.* ≥ 1"):
        simulate(cfg, tmp_path)
    # Without a privacy claim nothing needs to be public: the same run goes ahead.
    assert simulate(cfg.replace(epsilon=float("inf"), rounds=1), None)["rounds"] == 1


def _own_file(tmp_path: Path, rows: int, name: str) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / name
    np.savez(path, x=rng.normal(size=(rows, 5)).astype(np.float32),
             y=rng.integers(0, 2, rows))
    return path


def test_an_own_file_under_dp_must_declare_its_size_and_q_then_ignores_the_rows(
        tmp_path: Path) -> None:
    cfg = _daemon_cfg(tmp_path)
    small, large = _own_file(tmp_path, 200, "a.npz"), _own_file(tmp_path, 201, "b.npz")
    node = replace(cfg.node, data_file=str(small))
    private = NodeConfig(node, cfg.neighbours, cfg.run.replace(examples_per_node=None))
    with pytest.raises(DataError, match="declare classes"):
        build_daemon_node(private)
    with pytest.raises(ConfigError, match="size is private; declare"):
        build_daemon_node(NodeConfig(node, cfg.neighbours, private.run.replace(classes=2)))
    declared = NodeConfig(node, cfg.neighbours, private.run.replace(public_examples=160,
                                                                     classes=2))
    plans = []
    for path in (small, large):  # adjacent files: one row more
        own = NodeConfig(replace(node, data_file=str(path)), cfg.neighbours, declared.run)
        setup = build_daemon_node(own)
        plans.append((setup.plan, setup.trainer.policy))
    assert plans[0] == plans[1]  # the same q, normaliser and noise, whatever the rows
    assert plans[0][1].sample_rate == 16 / 160 and plans[0][1].expected_batch == 16


def test_delta_is_checked_against_the_rows_a_node_really_has(tmp_path: Path) -> None:
    """δ = 0.005 is below 1/n̂ for a declared n̂ = 100, but the file holds ~400 training rows:
    a mechanism publishing one random row would then pass as (0, δ)-DP."""
    cfg = _daemon_cfg(tmp_path)
    node = replace(cfg.node, data_file=str(_own_file(tmp_path, 500, "big.npz")))
    run = cfg.run.replace(examples_per_node=None, classes=2, public_examples=100,
                          batch_size=10, delta=0.005)
    with pytest.raises(ConfigError, match=r"δ must lie in \(0, 1/n\) .* n=\d{3} examples"):
        build_daemon_node(NodeConfig(node, cfg.neighbours, run))
    build_daemon_node(NodeConfig(node, cfg.neighbours, run.replace(delta=1e-3)))  # < 1/400


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["message", "gradient"])
def test_a_distinguishing_experiment_on_the_runner_stays_below_the_printed_epsilon(
        mode: str) -> None:
    """The worst-case pair (a canary whose clipped gradient uses all of C, along a direction
    nothing else touches); `scripts/audit_privacy.py` runs it with more trials."""
    result = audit(mode, trials=1500, seed=1)
    assert result.printed_epsilon == pytest.approx(2.0, abs=1e-3)
    assert result.holds, result
    # Positive control: a quarter of the noise behind the plan's back is caught at this size.
    control = audit(mode, trials=1500, seed=2, noise_scale=0.25)
    assert not control.holds, control


# ---- 3. checkpoint without a covering ledger ---------------------------------------------

def test_a_checkpoint_the_ledger_does_not_cover_is_refused(tmp_path: Path) -> None:
    """Deleting privacy_ledger.json but keeping checkpoint.npz used to resume with the spend
    reset: ε = 1.03 printed after 6 released rounds instead of ≥ 1.49."""
    cfg = _daemon_cfg(tmp_path)
    runner = NodeRunner(cfg.run, build_daemon_node(cfg))
    out = Path(cfg.node.out)
    identity = ledger_identity(cfg, runner.setup.plan)
    with Ledger.open(out / LEDGER, identity) as ledger:
        for r in range(4):
            ledger.record(r, runner.step({1, 2}).releases)
        save_state(runner, cfg, 3)
    fresh = NodeRunner(cfg.run, build_daemon_node(cfg))
    with Ledger.open(out / LEDGER, identity) as ledger:  # intact: resumes after round 3
        resume(fresh, cfg, ledger)
    assert fresh.round == 4 and fresh.accountant.steps == 4
    (out / LEDGER).unlink()
    with Ledger.open(out / LEDGER, identity) as ledger, \
            pytest.raises(CheckpointError, match="records no rounds, so the spend"):
        resume(NodeRunner(cfg.run, build_daemon_node(cfg)), cfg, ledger)
    # A new budget and a new model: both files moved away, the node starts from round 0.
    (out / "checkpoint.npz").unlink()
    with Ledger.open(out / LEDGER, identity) as ledger:
        again = NodeRunner(cfg.run, build_daemon_node(cfg))
        resume(again, cfg, ledger)
    assert again.round == 0


# ---- 4. a crashed node's ε ---------------------------------------------------------------

def test_a_crashed_nodes_epsilon_comes_from_its_ledger_not_its_metrics(tmp_path: Path) -> None:
    """SIGKILL between the ledger write and the round's metrics record: the metrics say 3
    rounds, but round 4 may have been sent."""
    z, q, delta = 1.1, 0.1, 1e-5
    node_dir = tmp_path / "0"
    with Ledger.open(node_dir / LEDGER, {"node": 0, "delta": delta}) as ledger:
        for r in range(4):
            ledger.record(r, [(z, q, 1)])
    with MetricsWriter(node_dir) as metrics:
        for r in range(3):
            metrics.write({"round": r, "epsilon": pld_epsilon(z, q, r + 1, delta),
                           "accuracy": 0.5, "loss": 1.0, "bytes_sent": 10})
    entry = node_result(node_dir)
    assert entry["exit"] == "crashed" and entry["rounds_completed"] == 3
    assert entry["epsilon"] == pytest.approx(pld_epsilon(z, q, 4, delta))
    assert entry["epsilon"] > pld_epsilon(z, q, 3, delta)
    assert node_result(node_dir, formal=False)["epsilon"] is None
    assert node_result(tmp_path / "absent")["epsilon"] is None  # no ledger: no DP


# ---- 5. a fixed noise seed in a daemon ---------------------------------------------------

def test_a_fixed_noise_seed_in_a_daemon_prints_no_epsilon(tmp_path: Path) -> None:
    seeded = _daemon_cfg(tmp_path, noise_seed=7)
    runner = NodeRunner(seeded.run, build_daemon_node(seeded))
    runner.step({1, 2})
    assert runner.setup.plan.formal is False and runner.epsilon() is None
    assert not runner.over_budget()  # no claim, so no budget to stop at
    # The simulator releases nothing; its seeded noise stands for OS entropy: ε is printed.
    assert simulate(seeded.run.replace(rounds=2), None)["max_epsilon"] is not None


def test_a_fixed_noise_seed_on_more_than_one_machine_is_refused(tmp_path: Path) -> None:
    run = RunConfig(**{**SMALL, "noise_seed": 7})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"noise_seed is set.*10\.0\.0\.2"):
        NodeConfig(NodeSettings(id=0, out=str(tmp_path)), {1: "tcp://10.0.0.2:7000",
                                                           2: "tcp://127.0.0.1:7000"}, run)
    with pytest.raises(ConfigError, match="noise_seed is set"):
        NodeConfig(NodeSettings(id=0, out=str(tmp_path), listen="tcp://0.0.0.0:7000"),
                   {1: "tcp://127.0.0.1:9", 2: "tcp://127.0.0.1:10"}, run)
    # Loopback only (a local launch), or no DP at all: accepted.
    NodeConfig(NodeSettings(id=0, out=str(tmp_path), endpoints_file="e.json"),
               {1: "", 2: "tcp://localhost:9"}, run)
    NodeConfig(NodeSettings(id=0, out=str(tmp_path)), {1: "tcp://10.0.0.2:7000",
                                                       2: "tcp://127.0.0.1:7000"},
               run.replace(epsilon=float("inf")))


# ---- 7. the spend is the fixed schedule --------------------------------------------------

def test_the_spend_follows_the_calibrated_schedule_whoever_is_up() -> None:
    """Message mode: the z a round achieves depends on how many neighbours are up; charging
    it composed adaptively chosen parameters. Now every round costs the calibrated z*."""
    cfg = RunConfig(**{**SMALL, "topology": "mesh", "nodes": 5})  # type: ignore[arg-type]
    graph: nx.Graph = build_graph(cfg)
    runner = NodeRunner(cfg, build_node(cfg, graph, 0, shard(cfg, load_data(cfg), 0)))
    plan = runner.setup.plan
    assert plan.mode == "message"
    achieved = []
    for active in ({1, 2, 3, 4}, {1}, {1, 3}, set(), {2, 4}, {1, 2, 3, 4}):
        achieved.append(plan.round_noise_multiplier(len(active)) if active else None)
        runner.step(active)
    assert all(z >= plan.noise_multiplier for z in achieved if z is not None)
    assert len({z for z in achieved if z is not None}) > 1  # the degree did change z
    assert [tuple(r) for r in runner.accountant.history] == [
        (plan.noise_multiplier, plan.sample_rate, cfg.rounds)]
    assert runner.epsilon() == pytest.approx(
        pld_epsilon(plan.noise_multiplier, plan.sample_rate, cfg.rounds, cfg.delta), rel=1e-9)
    assert runner.epsilon() <= cfg.epsilon + 1e-9


def test_summary_privacy_numbers_recompute_the_printed_epsilon(tmp_path: Path) -> None:
    cfg = RunConfig(**SMALL)  # type: ignore[arg-type]
    summary = simulate(cfg, tmp_path)
    config = json.loads((tmp_path / "summary.json").read_text())["config"]
    for i, entry in summary["nodes"].items():
        z, q = config["noise_multiplier"][i], config["sample_rate"][i]
        assert entry["epsilon"] == pytest.approx(
            pld_epsilon(z, q, config["steps_per_node"], cfg.delta), rel=1e-9)
