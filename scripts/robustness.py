"""Measure Byzantine robustness: every attack x {defence off, clip+screen} in the simulator.

    python scripts/robustness.py --quick --out results/robustness   # 3 min on 2 cores
    python scripts/robustness.py --out DIR                          # 80 rounds

A 6-node ring with 1 Byzantine node and a 16-node torus with 2, with and without DP (ε = 8),
logistic regression on Fashion-MNIST shards (node/experiments/studies/robustness.py). Writes
DIR/robustness.json (one row per run), DIR/robustness.md (the table) and DIR/robustness.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from node.cli import OneSentenceParser, guarded


def main(argv: list[str] | None = None) -> int:
    parser = OneSentenceParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 rounds instead of 80")
    parser.add_argument("--out", type=Path, required=True, help="where the results go")
    parser.add_argument("--algorithms", nargs="+", choices=("dpnorm", "dpsgd"),
                        default=("dpnorm", "dpsgd"), help="default: both families")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds (each row has one; the table averages over them)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes, one core each (default 2)")
    args = parser.parse_args(argv)

    def run() -> int:
        from node.experiments.studies.robustness import grid, plot, table

        if args.jobs < 1:
            parser.error(f"--jobs must be at least 1, got {args.jobs}")
        rows = grid(args.quick, algorithms=args.algorithms, seeds=args.seeds, jobs=args.jobs,
                    log=lambda line: print(line, file=sys.stderr, flush=True))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "robustness.json").write_text(json.dumps(rows, indent=1) + "\n")
        text = table(rows)
        (args.out / "robustness.md").write_text(text + "\n")
        plot(rows, args.out / "robustness.png")
        print(text)
        return 0

    return guarded(run)


if __name__ == "__main__":
    raise SystemExit(main())
