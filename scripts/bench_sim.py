#!/usr/bin/env python3
"""Seconds per simulated round, set-up seconds and peak memory, printed as JSON so that later
changes can be compared.

    python scripts/bench_sim.py [--nodes 6] [--rounds 5] [--model cnn] [--cases all]
    python scripts/bench_sim.py --nodes 10000 --model logreg --dataset synthetic --cases no_dp

By default: 6 nodes, small CNN, Fashion-MNIST (synthetic if absent), three configurations: no
DP, DP in message mode (noise on each dual) and DP in gradient mode (DP-SGD noise); `--cases`
picks some. Each runs `simulate` without output files; the first round is a warm-up (lazy torch
initialisation, first allocations) and is left out of the median. `setup_seconds` is
`build_runners` (graph, partition, every node's model, trainer and privacy plan);
`peak_rss_mb` the process's peak resident memory during that case (VmHWM, reset before each
case where the kernel allows, else the process's peak so far).

The baseline, compute only, is one node's local gradient step alone (no algorithm, no
evaluation, no messages), per case; `compute_share` is N such steps over the median round, and
`evaluate_seconds_per_node` shows where most of the rest goes (every node evaluates on the
test split every `--eval-every` rounds, and in the last).

Data: when the dataset cannot give every node `--min-examples` training examples (the CLI's
synthetic task has 6,000, so from 1,001 nodes on), a larger synthetic task of the same kind
(28×28 Gaussian classes, 1,000 test examples) is drawn: N·min-examples rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from node.config import MODELS, RunConfig
from node.core.data import Dataset, load_data, load_fashion_mnist, synthetic
from node.core.runner import NodeRunner
from node.errors import DataError
from node.sim.simulate import build_runners, simulate

CASES: dict[str, dict[str, Any]] = {
    "no_dp": {"epsilon": float("inf")},
    "dp_message": {"epsilon": 8.0, "privacy_mode": "message"},
    "dp_gradient": {"epsilon": 8.0, "privacy_mode": "gradient"},
}


def dataset(data_dir: str) -> str:
    try:
        load_fashion_mnist(data_dir)
        return "fashion-mnist"
    except DataError:
        return "synthetic"


def bench_data(cfg: RunConfig, min_examples: int) -> tuple[Dataset, str]:
    """The config's own dataset when it has enough rows, else a larger synthetic task."""
    if cfg.dataset == "fashion-mnist" or cfg.nodes * min_examples <= 6000:
        return load_data(cfg), cfg.dataset
    rows = cfg.nodes * min_examples
    return synthetic(rows, 1000, image=True, seed=cfg.seed), f"synthetic-{rows}"


def _reset_peak_rss() -> bool:
    """Reset VmHWM (Linux ≥ 4.0: write 5 to clear_refs); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(cfg: RunConfig, data: Dataset) -> tuple[dict[str, Any], list[NodeRunner]]:
    reset = _reset_peak_rss()
    start = time.perf_counter()
    runners = build_runners(cfg, data)
    setup = time.perf_counter() - start
    marks: list[float] = [time.perf_counter()]
    simulate(cfg, None, runners=runners,
             progress=lambda rnd, runners, elapsed: marks.append(time.perf_counter()))
    per_round = [b - a for a, b in itertools.pairwise(marks)]
    timed = per_round[1:]  # drops the warm-up
    return {
        "median": statistics.median(timed), "mean": statistics.fmean(timed),
        "min": min(timed), "max": max(timed), "first_round": per_round[0],
        "per_round": [round(t, 4) for t in per_round], "setup_seconds": setup,
        "peak_rss_mb": round(peak_rss_mb(), 1), "peak_rss_reset": reset,
    }, runners


def compute_per_step(runner: NodeRunner, steps: int) -> tuple[float, float]:
    """One node's local gradient step, nothing else (the floor a round cannot go below), and
    one evaluation on the test split."""
    trainer = runner.setup.trainer
    w = trainer.layout.flatten(trainer.model)
    trainer.gradient(w)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        trainer.gradient(w)
    step = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    trainer.evaluate(w)
    return step, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--model", choices=MODELS, default="cnn")
    parser.add_argument("--topology", default="ring", help="e.g. ring, random-regular:4")
    parser.add_argument("--cases", default="all",
                        help=f"comma-separated, of {', '.join(CASES)} (default all)")
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--min-examples", type=int, default=6,
                        help="training examples per node below which the synthetic task grows")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--dataset", choices=["auto", "fashion-mnist", "synthetic"],
                        default="auto", help="auto: Fashion-MNIST if installed, else synthetic")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--steps", type=int, default=20, help="steps for the compute baseline")
    args = parser.parse_args(argv)
    cases = list(CASES) if args.cases == "all" else args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = RunConfig(topology=args.topology, nodes=args.nodes, rounds=args.rounds + 1,
                     model=args.model,
                     dataset=dataset(args.data_dir) if args.dataset == "auto" else args.dataset,  # type: ignore[arg-type]
                     data_dir=args.data_dir, local_steps=1, batch_size=64, noise_seed=0,
                     eval_every=args.eval_every)
    start = time.perf_counter()
    data, name = bench_data(base, args.min_examples)  # once for every case
    load_seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "nodes": args.nodes, "model": args.model, "topology": args.topology, "dataset": name,
        "train_examples": len(data.y_train), "test_examples": min(len(data.y_test),
                                                                  base.test_examples or 10**9),
        "eval_every": args.eval_every, "rounds_timed": args.rounds,
        "data_seconds": load_seconds, "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        "machine": platform.processor() or platform.machine(), "seconds_per_round": {},
        "compute_seconds_per_node_step": {}, "evaluate_seconds_per_node": {},
    }
    for name in cases:
        cfg = base.replace(**CASES[name])
        timing, runners = run_case(cfg, data)
        step, evaluate = compute_per_step(runners[0], args.steps)
        del runners
        # What the simulator adds on top of the gradient steps (algorithm, evaluation, noise).
        timing["compute_share"] = args.nodes * step / timing["median"]
        result["seconds_per_round"][name] = timing
        result["compute_seconds_per_node_step"][name] = step
        result["evaluate_seconds_per_node"][name] = evaluate
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
