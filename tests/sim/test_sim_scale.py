"""The simulator at scale: what N nodes share is computed once, and sharing changes no number.

`build_runners` partitions once (`node.core.data.shards`), builds one `Federation` (maximum degree,
mixing weights, the initial model) and shares the test split; these tests pin that it gives
exactly what N independent `build_node(shard(...))` calls (the daemon's way) give, and that a
large federation's metrics files (opened per record) hold what a small one's (held open) do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import node.core.data.run_data as run_data
from node.config import RunConfig
from node.core import assemble
from node.core.assemble import build_graph, build_node
from node.core.data import load_data, shard, shards
from node.core.runner import NodeRunner
from node.outputs.files import read_metrics
from node.sim import simulate as simulation
from node.sim.simulate import build_runners, simulate, simulation_noise_seed

SMALL = dict(nodes=5, rounds=4, dataset="synthetic", model="logreg", lr=0.5, batch_size=32,
             examples_per_node=200, test_examples=300, primal_every=1)
VOLATILE = {"time", "round_seconds", "compute_seconds"}  # wall clock, not the computation


def one_by_one(cfg: RunConfig) -> list[NodeRunner]:
    """Each node as a daemon builds it: its own shard, partition, graph pass and model."""
    graph, data = build_graph(cfg), load_data(cfg)
    return [NodeRunner(cfg, build_node(cfg, graph, i, shard(cfg, data, i),
                                       noise_seed=simulation_noise_seed(cfg, i)))
            for i in range(cfg.nodes)]


@pytest.mark.parametrize("partition", ["iid", "dirichlet:0.5", "classes:2"])
@pytest.mark.parametrize("cap", [None, 40])
def test_shards_are_each_nodes_shard_and_share_the_test_split(partition: str,
                                                              cap: int | None) -> None:
    cfg = RunConfig(nodes=7, dataset="synthetic", model="logreg", partition=partition,
                    examples_per_node=cap, test_examples=250)
    data = load_data(cfg)
    together = shards(cfg, data)
    assert len(together) == cfg.nodes
    pointers = set()
    for i, own in enumerate(together):
        alone = shard(cfg, data, i)
        assert torch.equal(own.x_train, alone.x_train) and torch.equal(own.y_train, alone.y_train)
        assert torch.equal(own.x_test, alone.x_test) and torch.equal(own.y_test, alone.y_test)
        assert len(own.y_test) == 250 and (own.num_classes, own.in_shape) == (10, (1, 28, 28))
        pointers.add(own.x_test.untyped_storage().data_ptr())
    assert len(pointers) == 1  # one test split, viewed by every node


def test_build_runners_computes_the_shared_parts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"partition_of": 0, "build_model": 0, "max_degree": 0}
    # Where each is looked up when called: the shard cutter and the node builder.
    home = {"partition_of": run_data, "build_model": assemble, "max_degree": assemble}

    def counting(name: str) -> Callable[..., Any]:
        real = getattr(home[name], name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    for name in calls:
        monkeypatch.setattr(home[name], name, counting(name))
    runners = build_runners(RunConfig(**{**SMALL, "nodes": 30}))  # type: ignore[arg-type]
    assert calls == {"partition_of": 1, "build_model": 1, "max_degree": 1}
    # One model module, called functionally; every node's parameters are its own tensors.
    assert len({id(r.setup.trainer.model) for r in runners}) == 1
    assert len({r.setup.algorithm.w.data_ptr() for r in runners}) == 30


@pytest.mark.parametrize(("algorithm", "epsilon", "mode"), [
    ("dpnorm", float("inf"), None), ("dpsgd", float("inf"), None), ("ecl", float("inf"), None),
    ("dpnorm", 4.0, "message"), ("dpsgd", 4.0, "gradient"),
])
def test_shared_set_up_gives_the_same_numbers_as_nodes_built_one_by_one(
        tmp_path: Path, algorithm: str, epsilon: float, mode: str | None) -> None:
    cfg = RunConfig(**SMALL, topology="random-regular:2" if algorithm == "ecl" else "ring",  # type: ignore[arg-type]
                    algorithm=algorithm, epsilon=epsilon, privacy_mode=mode)  # type: ignore[arg-type]
    shared, alone = build_runners(cfg), one_by_one(cfg)
    for a, b in zip(shared, alone, strict=True):
        assert a.setup.plan == b.setup.plan and a.setup.neighbours == b.setup.neighbours
        assert torch.equal(a.setup.algorithm.w, b.setup.algorithm.w)
    fast = simulate(cfg, tmp_path / "shared", runners=shared)
    slow = simulate(cfg, tmp_path / "alone", runners=alone)
    assert fast["nodes"] == slow["nodes"]
    for i in range(cfg.nodes):
        x = read_metrics(tmp_path / "shared" / str(i) / "metrics.jsonl")
        y = read_metrics(tmp_path / "alone" / str(i) / "metrics.jsonl")
        assert len(x) == len(y) == cfg.rounds
        for r, s in zip(x, y, strict=True):
            assert {k: v for k, v in r.items() if k not in VOLATILE} == \
                   {k: v for k, v in s.items() if k not in VOLATILE}


def test_a_large_federation_writes_the_same_metrics_files(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig(**SMALL)  # type: ignore[arg-type]
    simulate(cfg, tmp_path / "held")
    monkeypatch.setattr(simulation, "OPEN_WRITERS_UP_TO", 2)  # 5 nodes: opened per record
    simulate(cfg, tmp_path / "reopened")
    for i in range(cfg.nodes):
        x = read_metrics(tmp_path / "held" / str(i) / "metrics.jsonl")
        y = read_metrics(tmp_path / "reopened" / str(i) / "metrics.jsonl")
        assert [r["round"] for r in y] == list(range(cfg.rounds))
        assert [{k: v for k, v in r.items() if k not in VOLATILE} for r in x] == \
               [{k: v for k, v in r.items() if k not in VOLATILE} for r in y]


def test_a_thousand_nodes_build_and_run_a_round() -> None:
    cfg = RunConfig(nodes=1000, rounds=1, dataset="synthetic", model="logreg",
                    test_examples=50, topology="random-regular:4")
    summary = simulate(cfg, None)
    assert len(summary["nodes"]) == 1000
    assert all(info["exit"] == "finished" and info["rounds_completed"] == 1
               for info in summary["nodes"].values())
