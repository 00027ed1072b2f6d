#!/usr/bin/env python3
"""Pre-validate a federation on your own data before asking partners to join.

    python scripts/prevalidate.py --data table.csv --sites 4 --epsilon 4 --quick --out runs/pv
    python scripts/prevalidate.py --data breast-cancer --sites 4 --partition drift \\
        --model examples/models.py:table_mlp --epsilon 8 4 1 --out runs/pv-bc

Simulates N sites cut from one file (CSV with a label column, NPZ with x and y, or a named
dataset), runs solo, federated (DP-Norm, DP-D-PSGD; ECL and D-PSGD without privacy) and pooled
training at the given ε, and writes DIR/REPORT.md with one line per question — does federating
beat training alone, how far from pooling, what privacy costs, which algorithm — plus an
estimate of bytes and time per round for a real deployment, and a figure. `--quick` runs one
seed and fewer rounds (≤ 3 minutes on 2 cores for a 10,000-row table). Re-running resumes.
"""

from __future__ import annotations

import argparse
import math


def main(argv: list[str] | None = None) -> int:
    from node.cli import OneSentenceParser, fail, guarded

    parser = OneSentenceParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True,
                        help="FILE.csv, FILE.npz, or breast-cancer / kdd-attacks")
    parser.add_argument("--sites", type=int, default=4, help="simulated sites (default 4)")
    parser.add_argument("--partition", default="iid",
                        help="how the file is cut into sites (see simulate.py --help)")
    parser.add_argument("--model", default="logreg",
                        help="logreg, mlp, or FILE.py:FUNC / package.module:FUNC")
    parser.add_argument("--epsilon", type=float, nargs="+", default=[8.0, 4.0, 1.0],
                        help="privacy budgets to try (ε = ∞ always runs as the reference)")
    parser.add_argument("--label-column", default="label", help="label column of a CSV")
    parser.add_argument("--rounds", type=int, help="rounds per run (default 150, quick 40)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2, quick 0)")
    parser.add_argument("--lr", type=float, default=0.1, help="step size without clipping "
                        "(clipped and private runs take 10×, as in the experiment grid)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--quick", action="store_true", help="one seed, 40 rounds")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        fail("--jobs must be at least 1.")
    if any(not (e > 0) for e in args.epsilon) or any(math.isinf(e) for e in args.epsilon):
        fail("every --epsilon must be a positive finite number (ε = ∞ runs anyway).")

    from node.experiments.studies.prevalidate import Question, check, plan, write_prevalidation

    question = Question(data=args.data, sites=args.sites, partition=args.partition,
                        model=args.model, epsilons=tuple(args.epsilon), quick=args.quick,
                        seeds=tuple(args.seeds) if args.seeds else None, rounds=args.rounds,
                        label_column=args.label_column, lr=args.lr)
    guarded(lambda: check(question))  # data, model and partition, before any run starts
    specs = guarded(lambda: plan(question))

    from node.experiments.grid import run_grid

    result = run_grid(specs, args.out, jobs=args.jobs)
    report = write_prevalidation(args.out)
    print(f"{report}  ({result['ran']} runs now, {result['skipped']} already done, "
          f"{len(result['failed'])} failed, {result['seconds']:.0f} s)")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
