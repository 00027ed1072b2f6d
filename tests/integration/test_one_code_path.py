"""The daemon runs the simulator's algorithm: same seed, no DP, no faults → same losses.

Also: a node trains on its own NPZ/CSV files instead of a shard of a public dataset.
Time bound: two small federations, each at most 120 s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from node.config import RunConfig
from node.outputs.files import read_metrics
from node.sim.simulate import simulate
from node.tools.local import LocalLaunch
from node.tools.plan import DaemonOptions

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("algorithm", ["dpnorm", "dpsgd"])
def test_launch_local_and_simulate_give_the_same_per_round_losses(tmp_path: Path,
                                                                  algorithm: str) -> None:
    cfg = RunConfig(topology="ring", nodes=4, rounds=8, algorithm=algorithm,  # type: ignore[arg-type]
                    dataset="synthetic", model="mlp", width=32, lr=0.3, examples_per_node=256,
                    test_examples=200, primal_every=1, threads=1)
    simulate(cfg, tmp_path / "sim")
    launch = LocalLaunch(cfg, tmp_path / "daemons",
                         DaemonOptions(node={"round_timeout": 20.0, "startup_timeout": 90.0}))
    launch.start(timeout=90)
    try:
        assert launch.wait(timeout=120)
    finally:
        launch.stop_all(grace=5.0)
    assert launch.succeeded()
    for i in range(cfg.nodes):
        sim = read_metrics(tmp_path / "sim" / str(i) / "metrics.jsonl")
        real = read_metrics(tmp_path / "daemons" / str(i) / "metrics.jsonl")
        assert [r["round"] for r in real] == list(range(cfg.rounds))
        for a, b in zip(sim, real, strict=True):
            assert abs(a["loss"] - b["loss"]) < 1e-5, (i, a["round"], a["loss"], b["loss"])
            assert abs(a["accuracy"] - b["accuracy"]) < 1e-9


def test_nodes_train_on_their_own_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(0, 2, (3, 8))
    files = {}
    for i in range(3):
        y = rng.integers(0, 3, 240)
        x = (means[y] + rng.normal(0, 1, (240, 8))).astype(np.float32)
        if i == 2:  # one organisation exports CSV, the others NPZ
            path = tmp_path / "node2.csv"
            header = ",".join([*(f"f{k}" for k in range(8)), "label"])
            rows = [",".join([*map(str, row), str(lbl)]) for row, lbl in zip(x, y, strict=True)]
            path.write_text(header + "\n" + "\n".join(rows) + "\n")
        else:
            path = tmp_path / f"node{i}.npz"
            np.savez(path, x=x, y=y)
        files[i] = path
    cfg = RunConfig(topology="ring", nodes=3, rounds=15, dataset="synthetic", model="logreg",
                    lr=0.5, threads=1)
    launch = LocalLaunch(cfg, tmp_path / "run", DaemonOptions(node={"round_timeout": 20.0}))
    for i, path in files.items():  # each node's own file, as an operator would configure it
        toml = launch.nodes[i].config
        toml.write_text(toml.read_text().replace('data_file = ""', f'data_file = "{path}"'))
    launch.start(timeout=90)
    try:
        assert launch.wait(timeout=120)
    finally:
        launch.stop_all(grace=5.0)
    assert launch.succeeded()
    for i in range(3):
        accuracy = launch.results()[str(i)]["accuracy"]
        assert accuracy is not None and accuracy > 0.6  # 3 classes: chance is 1/3
