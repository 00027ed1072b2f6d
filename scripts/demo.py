#!/usr/bin/env python3
"""What `make demo` runs: a local 6-node ring of real daemons over ZeroMQ training with DP-Norm.

    python scripts/demo.py --out runs/demo [--data-dir /usr/share/datasets/fashion-mnist]

Fashion-MNIST, a small CNN, (ε = 8, δ = 1e-5)-DP per node with noise on every dual message, and
DP-Norm's denoising. Shows live progress, then prints a table per node and writes the metrics,
summary.json and PNG plots (accuracy, dual norm, loss vs round) into --out. Sized to finish in
under 10 minutes on 2 CPU cores. Without the Fashion-MNIST files it says so and runs on
synthetic data instead.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from node.cli import fail, guarded
from node.config import RunConfig
from node.core.data import FASHION_MNIST_DIR, load_fashion_mnist
from node.errors import DataError

# Measured on a 2-core VM: 200 rounds take about 2.5 minutes including ~50 s of start-up and
# first-round warm-up, and reach ~75% test accuracy at ε = 8 (300 rounds: 4.5 min, 77%). (Until
# every round was charged the calibrated z*, message mode printed ε ≈ 7 for the same run.)
# lr 0.4 beat 0.1-0.3 for the same rounds. Six processes share the cores: one torch thread each.
DEMO = dict(topology="ring", nodes=6, algorithm="dpnorm", epsilon=8.0, delta=1e-5,
            privacy_mode="message", model="cnn", local_steps=1, lr=0.4, batch_size=64,
            test_examples=1000, eval_every=5, primal_every=5, threads=1, seed=0)
ROUNDS = 200
# Each round's deadline must cover six nodes' compute on two shared cores, with slack.
NODE = {"round_timeout": 30.0, "startup_timeout": 120.0, "checkpoint_every": 20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--data-dir", default=FASHION_MNIST_DIR,
                        help=f"directory holding the Fashion-MNIST IDX files ({FASHION_MNIST_DIR})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds (default {ROUNDS})")
    parser.add_argument("--quiet", action="store_true", help="no live progress")
    parser.add_argument("--resume", action="store_true",
                        help="continue the demo already in --out from its checkpoints")
    parser.add_argument("--force", action="store_true",
                        help="move a demo already in --out aside into OUT/previous-<UTC time>/ "
                             "(nothing is deleted)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        fail(f"--rounds must be at least 1, got {args.rounds}.")

    dataset = "fashion-mnist"
    try:
        load_fashion_mnist(args.data_dir)
    except DataError as exc:
        print(f"note: {exc}.\nnote: running the demo on synthetic data instead.", flush=True)
        dataset = "synthetic"
    cfg = guarded(lambda: RunConfig(**DEMO, rounds=args.rounds, dataset=dataset,  # type: ignore[arg-type]
                                    data_dir=args.data_dir))

    from node.experiments.grid import plot_run
    from node.tools.live import format_table, launch
    from node.tools.plan import DaemonOptions

    out = Path(args.out)
    print(f"DP-Norm demo: {cfg.nodes} daemons on 127.0.0.1 in a {cfg.topology}, {cfg.model} on "
          f"{dataset}, {cfg.rounds} rounds, epsilon {cfg.epsilon:g} per node "
          f"({cfg.effective_privacy_mode} mode), output in {out}/", flush=True)
    started = time.monotonic()
    code, summary = launch(cfg, out, DaemonOptions(node=NODE), quiet=args.quiet,
                           fresh=not args.resume, force=args.force,
                           timeout=30 * 60)  # a hang, not a slow machine, should hit this
    if summary is None:
        return code
    print()
    print(format_table(summary))
    plots = plot_run(out)
    print(f"\nplots: {', '.join(str(p) for p in plots)}")
    print(f"summary: {out / 'summary.json'}; per-node metrics and logs: {out}/<node>/")
    print(f"demo took {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
