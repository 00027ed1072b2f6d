#!/usr/bin/env python3
"""Seconds per simulated round: 6 nodes, small CNN, Fashion-MNIST (synthetic if absent), printed
as JSON so later changes can be compared.

    python scripts/bench_sim.py [--rounds 5] [--nodes 6] [--threads N]

Three configurations: no DP, DP in message mode (noise on each dual) and DP in gradient mode
(DP-SGD noise). Each runs `simulate` without output files; the first round is a warm-up (lazy
torch initialisation, first allocations) and is left out. The baseline, compute only, is one
node's local gradient step alone (no algorithm, no evaluation, no messages), per policy;
`compute_share` is N such steps over the measured round, and `evaluate_seconds_per_node` shows
where most of the rest goes (each node evaluates on `test_examples` every round).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from node.config import RunConfig
from node.core.data import load_fashion_mnist
from node.errors import DataError
from node.sim.simulate import build_runners, simulate

CASES = {
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


def seconds_per_round(cfg: RunConfig) -> dict[str, float]:
    marks: list[float] = []
    simulate(cfg, None, progress=lambda rnd, runners, elapsed: marks.append(time.perf_counter()))
    per_round = [b - a for a, b in itertools.pairwise(marks)]  # drops the warm-up
    return {"mean": statistics.fmean(per_round), "min": min(per_round), "max": max(per_round)}


def compute_per_step(cfg: RunConfig, steps: int) -> tuple[float, float]:
    """One node's local gradient step, nothing else (the floor a round cannot go below), and
    one evaluation on the test split (every round evaluates by default)."""
    trainer = build_runners(cfg)[0].setup.trainer
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
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--steps", type=int, default=20, help="steps for the compute baseline")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = RunConfig(topology="ring", nodes=args.nodes, rounds=args.rounds + 1, model="cnn",
                     dataset=dataset(args.data_dir), data_dir=args.data_dir,  # type: ignore[arg-type]
                     local_steps=1, batch_size=64, noise_seed=0)
    result: dict[str, Any] = {
        "nodes": args.nodes, "model": "cnn", "dataset": base.dataset, "rounds_timed":
        args.rounds, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "seconds_per_round": {},
        "compute_seconds_per_node_step": {}, "evaluate_seconds_per_node": {},
    }
    for name, changes in CASES.items():
        cfg = base.replace(**changes)
        result["seconds_per_round"][name] = seconds_per_round(cfg)
        step, evaluate = compute_per_step(cfg, args.steps)
        result["compute_seconds_per_node_step"][name] = step
        result["evaluate_seconds_per_node"][name] = evaluate
    for name, timing in result["seconds_per_round"].items():
        floor = args.nodes * result["compute_seconds_per_node_step"][name]
        # What the simulator adds on top of the gradient steps (algorithm, evaluation, noise).
        timing["compute_share"] = floor / timing["mean"]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
