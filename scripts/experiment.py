#!/usr/bin/env python3
"""Run the DP-Norm evidence grid on the simulator; resumable, with progress.

    python scripts/experiment.py --preset quick --out runs/quick            # ≤ 10 min, 2 cores
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --jobs 2
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --seeds 0 1 --list

Re-running the same command skips every run that finished (its directory has DONE) and redoes
the rest. Then `python scripts/report.py runs/quick` writes the figures and tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from node.experiments.grid import PRESETS, build_grid, is_done, preset, run_grid

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="dpnorm-paper")
    parser.add_argument("--out", required=True, help="output directory (one folder per run)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
    parser.add_argument("--methods", nargs="+", help="only these methods (names as in --list)")
    parser.add_argument("--regimes", nargs="+", help="only these data regimes")
    parser.add_argument("--epsilons", type=float, nargs="+",
                        help="only these ε values (inf for the runs without privacy)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a RunConfig setting for every run (e.g. rounds=10)")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    args = parser.parse_args(argv)

    from node.config import RunConfig, coerce
    from node.errors import ConfigError

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set needs KEY=VALUE, got {item!r}")
        try:
            overrides[key] = coerce(RunConfig, key, value)
        except (ConfigError, KeyError) as exc:
            parser.error(f"--set {item}: {exc}")
    specs = build_grid(preset(args.preset), seeds=args.seeds, overrides=overrides)
    if args.methods:
        specs = [s for s in specs if s.method in args.methods]
    if args.regimes:
        specs = [s for s in specs if s.regime in args.regimes]
    if args.epsilons:
        specs = [s for s in specs if s.epsilon in args.epsilons]
    for spec in specs:  # every run's settings are checked before the first one starts
        try:
            spec.run_config()
        except ConfigError as exc:
            parser.error(f"{spec.path}: {exc}")
    if args.list:
        for s in specs:
            print(("done  " if is_done(args.out, s) else "todo  ") + s.path)
        print(f"{len(specs)} runs")
        return 0
    result = run_grid(specs, args.out, jobs=args.jobs)
    print(json.dumps({k: v for k, v in result.items() if k != "failed"}
                     | {"failed": sorted(result["failed"])}))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
