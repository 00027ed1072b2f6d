#!/usr/bin/env python3
"""Run the DP-Norm evidence grid on the simulator; resumable, with progress.

    python scripts/experiment.py --preset quick --out runs/quick            # ≤ 10 min, 2 cores
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --jobs 2
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --seeds 0 1 --list
    python scripts/experiment.py --preset quick --out runs/quick --executor ray --jobs 2
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --ray-address HEAD:6379

Re-running the same command skips every run that finished (its directory has DONE) and redoes
the rest. Then `python scripts/report.py runs/quick` writes the figures and tables.

`--executor ray` (needs `pip install -e '.[ray]'`) runs each run as a Ray task: on a local Ray of
`--jobs` CPUs, or with `--ray-address` on a running Ray cluster, whose CPUs then set the
parallelism. The results come back to this machine and land in `--out` as with the pool.
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
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes, or a local Ray's CPUs (1 thread each)")
    parser.add_argument("--executor", choices=("local", "ray"),
                        help="local: a process pool on this machine (the default); ray: Ray "
                             "tasks on a local Ray, or on a cluster with --ray-address")
    parser.add_argument("--ray-address", metavar="HOST:PORT",
                        help="a running Ray cluster's head (see `ray start --head`); implies "
                             "--executor ray")
    parser.add_argument("--ray-timeout", type=float, default=20.0, metavar="S",
                        help="seconds to wait for the cluster at --ray-address (default 20)")
    parser.add_argument("--methods", nargs="+", help="only these methods (names as in --list)")
    parser.add_argument("--regimes", nargs="+", help="only these data regimes")
    parser.add_argument("--epsilons", type=float, nargs="+",
                        help="only these ε values (inf for the runs without privacy)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a RunConfig setting for every run (e.g. rounds=10)")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    args = parser.parse_args(argv)
    if args.executor == "local" and args.ray_address:
        parser.error("--ray-address needs --executor ray")
    if args.ray_timeout <= 0:
        parser.error("--ray-timeout must be positive")

    from node.cli import fail
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
    from node.experiments.executors import ExecutorError, LocalExecutor, RayExecutor

    executor = (RayExecutor(address=args.ray_address, cpus=args.jobs,
                            connect_timeout=args.ray_timeout)
                if args.executor == "ray" or args.ray_address else LocalExecutor(args.jobs))
    try:
        result = run_grid(specs, args.out, executor=executor)
    except ExecutorError as exc:  # before any run started: nothing done is lost
        fail(str(exc))
    print(json.dumps({k: v for k, v in result.items() if k != "failed"}
                     | {"failed": sorted(result["failed"])}))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
