#!/usr/bin/env python3
"""Cost of differential privacy per local step: the DP step over the plain step, same run.

    python scripts/bench_dp.py [--models cnn resnet10] [--batch 64] [--repeats 15] [--threads 1]

Both steps are `node.core.model.trainer.LocalTrainer.gradient`, the oracle the algorithms call:
- plain: a mini-batch of `--batch` examples, one mean-loss backward pass;
- dp: the `noisy` policy — Poisson sampling, per-sample gradients (torch.func vmap(grad)),
  clipping each to C, N(0, (zC)²) noise on the sum, division by the expected batch size.
By default the node holds exactly `--batch` examples and q = 1, so every DP step processes the
same batch size as the plain one (with `--examples N`, q = batch/N and the realised batch varies).
The two steps alternate within each repeat (so a load spike on a shared machine hits both), after
`--warmup` untimed steps; times are medians. Prints one JSON object; the issue's target is a
ratio ≤ 3 for the CNN. `--breakdown` also times the DP step's parts separately.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from node.core.model import DEFAULT_WIDTH, GradientPolicy, LocalTrainer, build_model
from privacy.mechanisms import (
    clipped_grad_sum,
    per_sample_gradients,
    privatize_gradient_sum,
)

TARGET = {"cnn": 3.0}
IN_SHAPE, CLASSES = (1, 28, 28), 10


def _trainer(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
             policy: GradientPolicy) -> LocalTrainer:
    return LocalTrainer(model, x, y, x[:1], y[:1], batch_size=batch, policy=policy,
                        data_generator=torch.Generator().manual_seed(0),
                        noise_generator=torch.Generator().manual_seed(1))


def _time(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_model(name: str, *, batch: int, examples: int, repeats: int, warmup: int,
                breakdown: bool) -> dict[str, Any]:
    model = build_model(name, in_shape=IN_SHAPE, num_classes=CLASSES, seed=0)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(examples, *IN_SHAPE, generator=gen)
    y = torch.randint(0, CLASSES, (examples,), generator=gen)
    plain = _trainer(model, x, y, batch, GradientPolicy("plain"))
    dp = _trainer(model, x, y, batch, GradientPolicy("noisy", clip=1.0, noise_multiplier=1.0))
    w = plain.layout.flatten(model)
    for _ in range(warmup):
        plain.gradient(w)
        dp.gradient(w)
    plain_s, dp_s = [], []
    for _ in range(repeats):
        plain_s.append(_time(lambda: plain.gradient(w)))
        dp_s.append(_time(lambda: dp.gradient(w)))
    p, d = statistics.median(plain_s), statistics.median(dp_s)
    result: dict[str, Any] = {
        "params": w.numel(),
        "width": DEFAULT_WIDTH[name],
        "plain_ms": round(1e3 * p, 3),
        "dp_ms": round(1e3 * d, 3),
        "ratio": round(d / p, 3),
        "ratio_of_pairs_median": round(statistics.median(b / a for a, b in
                                                         zip(plain_s, dp_s, strict=True)), 3),
    }
    if name in TARGET:
        result["target_ratio"] = TARGET[name]
        result["meets_target"] = d / p <= TARGET[name]
    if breakdown:
        result["dp_parts_ms"] = _breakdown(dp, w, batch, repeats)
    return result


def _breakdown(trainer: LocalTrainer, w: torch.Tensor, batch: int,
               repeats: int) -> dict[str, float]:
    """Median times on a fixed batch of `batch` examples: the per-sample gradients alone, the
    whole clipped sum (per-sample gradients + norms + clipping + sum), and the noise."""
    params = trainer.layout.unflatten(w)
    xb, yb = trainer.x[:batch], trainer.y[:batch]
    loss_fn = trainer._mean_loss
    gen = torch.Generator().manual_seed(3)
    total, _, _ = clipped_grad_sum(loss_fn, params, xb, yb, 1.0)
    parts: dict[str, list[float]] = {"per_sample_gradients": [], "clipped_grad_sum": [],
                                     "noise": []}
    for _ in range(repeats):
        parts["per_sample_gradients"].append(
            _time(lambda: per_sample_gradients(loss_fn, params, xb, yb)))
        parts["clipped_grad_sum"].append(
            _time(lambda: clipped_grad_sum(loss_fn, params, xb, yb, 1.0)))
        parts["noise"].append(_time(lambda: privatize_gradient_sum(total, 1.0, 1.0, batch, gen)))
    return {k: round(1e3 * statistics.median(v), 3) for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet10"],
                        choices=["logreg", "mlp", "cnn", "resnet10"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--examples", type=int, default=None,
                        help="examples on the node (default: = batch, i.e. q = 1)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable numbers on a shared machine)")
    parser.add_argument("--breakdown", action="store_true", help="also time the DP step's parts")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("batch, repeats and threads must be ≥ 1 and warmup ≥ 0")
    examples = args.examples or args.batch
    if examples < args.batch:
        parser.error("--examples must be at least --batch")
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "batch": args.batch, "examples": examples, "sample_rate": args.batch / examples,
        "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
        "torch": torch.__version__, "machine": platform.machine(),
        "models": {},
    }
    for name in args.models:
        report["models"][name] = bench_model(name, batch=args.batch, examples=examples,
                                             repeats=args.repeats, warmup=args.warmup,
                                             breakdown=args.breakdown)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
