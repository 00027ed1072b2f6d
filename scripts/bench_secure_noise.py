#!/usr/bin/env python3
"""Cost of `--secure-noise` per round: the secure gradient step against the default, same process.

    python scripts/bench_secure_noise.py [--models cnn mlp] [--rounds 2] [--threads 1]

A gradient-mode round with K = 1 is one call of `node.core.model.trainer.LocalTrainer.gradient`
(messages are the same either way), so a round's privacy cost is that step's:
- default: the `noisy` policy — Poisson sample, per-sample clipping, float32 N(0, (zC)²) on the sum;
- secure: the `secure` policy — exact Poisson sample, each clipped gradient rounded to the
  integer grid, OpenDP's exact discrete Gaussian added in int64 (privacy.discrete).
Models: the Fashion-MNIST CNN (`cnn`, 20,538 parameters) and an MLP of width 680 (`mlp`,
1,003,690 parameters) on random 28×28 inputs; q = 64/640, so about 64 examples a step. The two
steps alternate within each round (a load spike on a shared machine hits both), after one
untimed warm-up of each; times are medians. Also timed: the sampler alone (OpenDP's draws for
one step). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from node.core.model import GradientPolicy, LocalTrainer, build_model
from privacy import discrete
from privacy.mechanisms import make_generator

IN_SHAPE, CLASSES, EXAMPLES, BATCH = (1, 28, 28), 10, 640, 64
WIDTH = {"cnn": None, "mlp": 680}


def _trainer(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             policy: GradientPolicy) -> LocalTrainer:
    return LocalTrainer(model, x, y, x[:1], y[:1], batch_size=BATCH, policy=policy,
                        data_generator=torch.Generator().manual_seed(0),
                        noise_generator=make_generator(1))


def _time(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(name: str, rounds: int) -> dict[str, Any]:
    model = build_model(name, in_shape=IN_SHAPE, num_classes=CLASSES, width=WIDTH[name], seed=0)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(EXAMPLES, *IN_SHAPE, generator=gen)
    y = torch.randint(0, CLASSES, (EXAMPLES,), generator=gen)
    q = BATCH / EXAMPLES
    default = _trainer(model, x, y, GradientPolicy("noisy", 1.0, 1.0, q, BATCH))
    secure = _trainer(model, x, y, GradientPolicy("secure", 1.0, 1.0, q, BATCH))
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    d = w.numel()
    grid = discrete.grid_for(1.0, d)
    scale = discrete.noise_scale(1.0, grid)
    for trainer in (default, secure):   # warm-up: vmap tracing, OpenDP's measurement
        trainer.gradient(w)
    times: dict[str, list[float]] = {"default": [], "secure": [], "sampler": []}
    for _ in range(rounds):
        times["default"].append(_time(lambda: default.gradient(w)))
        times["secure"].append(_time(lambda: secure.gradient(w)))
        times["sampler"].append(_time(lambda: discrete.discrete_gaussian(d, scale)))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"parameters": d, "rounds": rounds,
            "default_seconds_per_round": round(med["default"], 4),
            "secure_seconds_per_round": round(med["secure"], 4),
            "ratio": round(med["secure"] / med["default"], 2),
            "sampler_seconds": round(med["sampler"], 4),
            "sampler_microseconds_per_draw": round(1e6 * med["sampler"] / d, 2),
            "grid_steps_per_clip": grid.scale, "sensitivity_increase": round(
                grid.sensitivity / grid.scale - 1, 5),
            "all_seconds": {k: [round(t, 4) for t in v] for k, v in times.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mlp"], choices=sorted(WIDTH))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {name: bench_model(name, args.rounds) for name in args.models}
    print(json.dumps({"machine": platform.machine(), "threads": args.threads,
                      "torch": torch.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
