#!/usr/bin/env python3
"""Time per round of a 6-node ring of real daemons (CNN, ZeroMQ exchange) against the same six
nodes computing the same rounds with no exchange at all, measured in the same run.

    python scripts/bench_round.py [--rounds 40] [--nodes 6] [--model cnn]

Prints JSON. The compute-only baseline runs the same number of processes at the same time, each
building its node exactly as the daemon does and running `NodeRunner.step` back to back, so both
sides see the same CPU contention; the difference is the cost of talking to neighbours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from node.config import RunConfig
from node.outputs.files import read_metrics
from node.tools.local import LocalLaunch
from node.tools.plan import DaemonOptions, default_threads


def compute_only(cfg_json: str, node: int, rounds: int) -> None:
    """Worker: the node's rounds without sockets; prints seconds per round (after warm-up)."""
    import torch

    from node.config import run_config_from_mapping
    from node.core.assemble import build_graph, build_node, load_data, shard
    from node.core.runner import NodeRunner
    from node.daemon.wiring import compute_round

    cfg = run_config_from_mapping(json.loads(cfg_json))
    torch.set_num_threads(cfg.threads)
    graph = build_graph(cfg)
    runner = NodeRunner(cfg, build_node(cfg, graph, node, shard(cfg, load_data(cfg), node)))
    active = set(runner.setup.neighbours)
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        out = compute_round(runner, active)  # the daemon's own round work: budget, step, ε
        assert out is not None
        # Absorb messages of the same size the neighbours would have sent.
        runner.absorb({j: y.clone() for j, y in out.duals.items()})
        if runner.due_for_evaluation(r):
            runner.evaluate()
        times.append(time.perf_counter() - start)
    print(json.dumps(statistics.median(times[2:])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        compute_only(args.config, args.worker, args.rounds)
        return 0
    cfg = RunConfig(topology="ring", nodes=args.nodes, rounds=args.rounds, model=args.model,
                    dataset="fashion-mnist" if Path(RunConfig().data_dir).exists()
                    else "synthetic", epsilon=8.0, eval_every=10, test_examples=1000,
                    threads=default_threads(args.nodes), noise_seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        launch = LocalLaunch(cfg, Path(tmp) / "run", DaemonOptions(node={"round_timeout": 30.0}))
        launch.start(timeout=120)
        started = time.monotonic()
        finished = launch.wait(timeout=1800)
        wall = time.monotonic() - started
        launch.stop_all(grace=5.0)
        per_node = []
        for i in range(cfg.nodes):
            records = read_metrics(Path(tmp) / "run" / str(i) / "metrics.jsonl")[2:]
            per_node.append(statistics.median(r["round_seconds"] for r in records))
        mapping = json.dumps({k: v for k, v in cfg.to_dict().items() if v is not None})
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(i), "--config",
                                     mapping, "--rounds", str(args.rounds)],
                                    stdout=subprocess.PIPE, text=True)
                   for i in range(cfg.nodes)]
        baseline = [json.loads(w.communicate(timeout=1800)[0]) for w in workers]
    exchange, compute = statistics.median(per_node), statistics.median(baseline)
    print(json.dumps({
        "nodes": cfg.nodes, "model": cfg.model, "dataset": cfg.dataset, "rounds": cfg.rounds,
        "finished": finished, "daemon_wall_seconds": round(wall, 2),
        "seconds_per_round_with_exchange": round(exchange, 4),
        "seconds_per_round_compute_only": round(compute, 4),
        "overhead": round(exchange / compute - 1, 4), "target_overhead": 0.10,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
