"""One user file given as `dataset` to daemons under DP (issue 26, item 1).

Measured on main before the fix (600-row NPZ, 3-node ring, ε = 2): adding one row to the file
changed 209, 212 and 208 of the daemons' training rows, moved q, and a row with a new label
changed every message's length, yet every daemon printed a formal ε. Now each row's side and
site are a keyed hash of that row, the class count and q are declared, and nothing is fitted on
the file; a launch without the declarations is refused with one sentence before anything
starts. The rows are compared as the daemon itself builds its node (`build_daemon_node`).

Time bound: six node builds (seconds each) and one 3-node launch of 6 paced rounds (≤ 120 s).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from node.config import RunConfig
from node.daemon.main import build_daemon_node
from node.daemon.settings import NodeConfig
from node.errors import ConfigError, DataError
from node.tools.local import LocalLaunch
from node.tools.plan import DaemonOptions, node_configs

ROOT = Path(__file__).resolve().parents[2]
ROWS, FEATURES, CLASSES, NODES = 600, 6, 3, 3
Row = tuple[bytes, int]
pytestmark = pytest.mark.slow


def table(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, ROWS)
    means = rng.normal(0, 2, (CLASSES, FEATURES))
    return (means[y] + rng.normal(0, 1, (ROWS, FEATURES))).astype(np.float32), y


def write(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def run_config(path: Path, **changes: object) -> RunConfig:
    base: dict[str, object] = dict(
        topology="ring", nodes=NODES, rounds=6, model="logreg", dataset=str(path), epsilon=2.0,
        classes=CLASSES, public_examples=160, batch_size=16, lr=0.5, threads=1)
    return RunConfig(**{**base, **changes})  # type: ignore[arg-type]


def daemon_configs(cfg: RunConfig, out: Path) -> list[NodeConfig]:
    return node_configs(cfg, DaemonOptions(),
                        lambda i: {"id": i, "listen": "tcp://127.0.0.1:0", "out": str(out / str(i)),
                                   "endpoints_file": str(out / "endpoints.json")},
                        endpoint=lambda j: "")


def rows(x: torch.Tensor, y: torch.Tensor) -> Counter[Row]:
    xs, ys = x.numpy(), y.numpy()
    return Counter((xs[i].tobytes(), int(ys[i])) for i in range(len(ys)))


def daemons(path: Path, out: Path) -> list[tuple[Counter[Row], float, int]]:
    """Per node, as the daemon builds it: its training rows, its q and its message length."""
    built = []
    for config in daemon_configs(run_config(path), out):
        setup = build_daemon_node(config)
        built.append((rows(setup.trainer.x, setup.trainer.y), setup.plan.record()["sample_rate"],
                      setup.layout.numel))
    return built


def test_one_added_row_changes_at_most_one_training_row_of_one_daemon(tmp_path: Path) -> None:
    x, y = table()
    before = daemons(write(tmp_path / "sites.npz", x, y), tmp_path / "out")
    assert [q for _, q, _ in before] == [16 / 160] * NODES  # declared, not the share's size
    assert sum(len(r) for r, _, _ in before) < ROWS  # a held-out part evaluates, never trains
    # A copy of one of node 1's training rows, inserted first (every row index shifts), and a
    # fresh row appended (held out, or trained on by one node).
    picked, label = next(iter(before[1][0]))
    copy = np.frombuffer(picked, dtype=np.float32)[None]
    fresh = np.random.default_rng(9).normal(0, 1, (1, FEATURES)).astype(np.float32)
    grown = {
        "copy": (write(tmp_path / "copy.npz", np.concatenate([copy, x]), np.r_[label, y]),
                 (picked, label)),
        "fresh": (write(tmp_path / "fresh.npz", np.concatenate([x, fresh]), np.r_[y, 2]),
                  (fresh[0].tobytes(), 2)),
    }
    came: dict[str, list[int]] = {}
    for name, (path, row) in grown.items():
        after = daemons(path, tmp_path / "out")
        added = [a - b for (a, _, _), (b, _, _) in zip(after, before, strict=True)]
        left = [(b - a).total() for (a, _, _), (b, _, _) in zip(after, before, strict=True)]
        assert left == [0] * NODES, (name, "training rows left a daemon", left)
        assert all(c <= Counter({row: 1}) for c in added), (name, [c.total() for c in added])
        came[name] = [c.total() for c in added]
        assert sum(came[name]) <= 1, (name, came[name])
        assert [(q, n) for _, q, n in after] == [(q, n) for _, q, n in before], name
    assert came["copy"] == [0, 1, 0]  # identical rows share their site: exactly one row more


def test_what_would_move_a_constant_is_refused(tmp_path: Path) -> None:
    x, y = table()
    path = write(tmp_path / "sites.npz", x, y)
    # A row with a new label would change every message's length: outside the declared classes.
    labelled = write(tmp_path / "labelled.npz", np.concatenate([x, x[:1]]), np.r_[y, 5])
    with pytest.raises(DataError, match=r"has a label 5, outside the declared classes 0\.\.2"):
        build_daemon_node(daemon_configs(run_config(labelled), tmp_path / "out")[0])
    for changes, fragment in (
            ({"classes": None}, "declare classes = K"),
            ({"public_examples": None}, "declare the Poisson rate"),
            ({"partition": "dirichlet:0.5"}, "use partition iid"),
            ({"standardise": "public"}, "mean and std of all of"),
            ({"examples_per_node": 100}, "examples_per_node cannot cap")):
        with pytest.raises(ConfigError, match=fragment):
            daemon_configs(run_config(path, **changes), tmp_path / "out")


def test_launch_local_refuses_an_undeclared_shared_file_in_one_sentence(tmp_path: Path) -> None:
    x, y = table()
    path = write(tmp_path / "sites.npz", x, y)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "launch_local.py"), "--dataset", str(path),
         "--epsilon", "2", "--nodes", "3", "--rounds", "2", "--model", "logreg", "--out",
         str(out), "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "classes = K" in lines[0]
    assert not out.exists()  # nothing written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples}


def test_a_federation_on_a_shared_file_trains_with_declared_constants(tmp_path: Path) -> None:
    x, y = table()
    cfg = run_config(write(tmp_path / "sites.npz", x, y))
    launch = LocalLaunch(cfg, tmp_path / "run", DaemonOptions(
        node={"round_timeout": 20.0, "min_round_seconds": 0.5}))
    port = free_port()  # node 0 serves its metrics: what a private node on this file releases
    toml = launch.nodes[0].config
    toml.write_text(toml.read_text().replace("metrics_port = 0", f"metrics_port = {port}"))
    launch.start(timeout=90)
    seen: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 90
        while seen.get("dpnorm_rounds_completed", 0) < 3 and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not listening yet
                seen = scrape(port)
            time.sleep(0.2)
        assert launch.wait(timeout=120)
    finally:
        launch.stop_all(grace=5.0)
    assert launch.succeeded()
    assert seen.get("dpnorm_rounds_completed", 0) >= 3 and seen["dpnorm_epsilon_spent"] > 0, seen
    assert not any(name.startswith(("dpnorm_accuracy", "dpnorm_round_seconds"))
                   for name in seen), seen
    for i in range(NODES):
        final = json.loads((tmp_path / "run" / str(i) / "final.json").read_text())
        assert final["exit"] == "finished" and final["accuracy"] is not None
        assert final["privacy"]["sample_rate"] == 16 / 160 and final["privacy"]["formal"]
        assert 0 < final["epsilon"] <= 2.0
