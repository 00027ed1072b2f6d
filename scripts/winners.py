"""Publish the measured "which algorithm" answer of a tuned grid (the `heterogeneity` preset).

    python scripts/winners.py runs/het --out docs/results/heterogeneity

Reads the final runs under DIR/final (scripts/experiment.py --tune output) and writes
OUT/winners.json (one cell per (regime, ε): winner, seed-paired margin, every line's score and
tuned settings — what the pre-validation report reads), OUT/winners.md (the winners table and
the seed-paired contrasts: primal-dual vs gossip, denoising in gradient and message mode) and
OUT/tuning.json (every tuned line's candidates and validation scores).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from node.cli import OneSentenceParser, guarded


def main(argv: list[str] | None = None) -> int:
    parser = OneSentenceParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="a tuned experiment directory")
    parser.add_argument("--out", type=Path, required=True, help="where the files go")
    args = parser.parse_args(argv)

    def run() -> int:
        from node.experiments.grid import load_runs
        from node.experiments.studies.winners import (
            contrasts_table,
            save,
            summary_table,
            winners,
            winners_table,
        )

        final = args.dir / "final"
        runs = load_runs(final) if final.is_dir() else []
        if not runs:
            parser.error(f"{final} holds no finished runs; run scripts/experiment.py --tune "
                         "into it first")
        cells = winners(runs)
        save(cells, args.out / "winners.json")
        tuned = {f"{r.regime}/{r.key}/eps-{r.epsilon:g}": r.spec["tuned"]
                 for r in sorted(runs, key=lambda r: (r.regime, r.key, r.epsilon))
                 if r.spec.get("tuned")}
        (args.out / "tuning.json").write_text(json.dumps(tuned, indent=1) + "\n")
        text = ("# Which algorithm: winners per cell\n\n" + summary_table(cells) +
                "\n\nEvery line, mean ± std over seeds (n) [tuned settings]:\n\n" +
                winners_table(cells) +
                "\n\n# Seed-paired contrasts (points; the best line of each side)\n\n" +
                contrasts_table(runs) + "\n")
        (args.out / "winners.md").write_text(text)
        print(f"{len(cells)} cells from {len(runs)} runs → {args.out}")
        return 0

    return guarded(run)


if __name__ == "__main__":
    raise SystemExit(main())
