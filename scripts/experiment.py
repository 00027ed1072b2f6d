#!/usr/bin/env python3
"""Run the DP-Norm evidence grid on the simulator; resumable, with progress.

    python scripts/experiment.py --preset quick --out runs/quick            # ≤ 10 min, 2 cores
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --jobs 2
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --seeds 0 1 --list
    python scripts/experiment.py --preset quick --out runs/quick --executor ray --jobs 2
    python scripts/experiment.py --preset dpnorm-paper --out runs/paper --ray-address HEAD:6379
    python scripts/experiment.py --preset heterogeneity --out runs/het --tune 3 \
        --skews iid classes:2 --graphs ring-6 ring-16 --ks 1 4 --epsilons inf 4 --seeds 0 1

Re-running the same command skips every run that finished (its directory has DONE) and redoes
the rest. Then `python scripts/report.py runs/quick` writes the figures and tables.

`--tune B` first runs B tuning candidates per line on a validation split of the nodes' own
training data (node.experiments.tuning; under `<out>/tuning`), then the final runs with the chosen
settings (under `<out>/final`). Tuning on private data costs privacy that the printed ε does not
include; `--tune-on control` tunes on the noise-free clipped control instead, which trains on
the same private rows without noise and is not covered by ε either (docs/PRIVACY.md).

`--executor ray` (needs `pip install -e '.[ray]'`) runs each run as a Ray task: on a local Ray of
`--jobs` CPUs, or with `--ray-address` on a running Ray cluster, whose CPUs then set the
parallelism. The results come back to this machine and land in `--out` as with the pool.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from node.experiments.grid import PRESETS, build_grid, is_done, preset, run_grid
    from node.experiments.heterogeneity import estimate_seconds, select_regimes
    from node.experiments.tuning import Protocol, tuned_specs, tuning_specs

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
    parser.add_argument("--skews", nargs="+", help="only these label skews (preset axes)")
    parser.add_argument("--graphs", nargs="+", help="only these graphs (preset axes)")
    parser.add_argument("--ks", nargs="+", help="only these local-step counts K (preset axes)")
    parser.add_argument("--tune", type=int, metavar="B",
                        help="tune every line with B runs on a validation split first")
    parser.add_argument("--tune-on", choices=("private", "control"), default="private",
                        help="tune private lines on their own runs or on the noise-free "
                             "clipped control; both read the private rows, so both cost privacy "
                             "the printed ε omits (tune a deployment on public or synthetic data)")
    parser.add_argument("--tune-lr-only", action="store_true",
                        help="tune the step size only (θ = 1, γ = 0.1, one local step for "
                             "FedAvg/SCAFFOLD): a budget of 3 tries 3 step sizes per method")
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
    chosen = preset(args.preset)
    wanted = {"skew": args.skews or [], "graph": args.graphs or [], "K": args.ks or []}
    regimes = args.regimes or []
    try:  # bad filters are one sentence before any run starts
        if any(wanted.values()):
            regimes = select_regimes(chosen.axes, wanted) if chosen.axes else \
                fail(f"preset {args.preset} has no skew/graph/K axes; use --regimes.")
            regimes = [r for r in regimes if not args.regimes or r in args.regimes]
        for name, known, given in (("method", chosen.methods, args.methods or []),
                                   ("regime", tuple(chosen.regimes), args.regimes or [])):
            unknown = [g for g in given if g not in known]
            if unknown:
                fail(f"unknown {name} {unknown[0]!r} for preset {args.preset}; choose from "
                     f"{', '.join(known)}.")
        protocol = None if args.tune is None else Protocol(
            budget=args.tune, on=args.tune_on,
            **(dict(thetas=(1.0,), gammas=(0.1,), local_steps=(1,)) if args.tune_lr_only
               else {}))
    except ValueError as exc:
        fail(str(exc))
    specs = build_grid(chosen, seeds=args.seeds, overrides=overrides)
    if args.methods:
        specs = [s for s in specs if s.method in args.methods]
    if regimes:
        specs = [s for s in specs if s.regime in regimes]
    if not specs:
        fail("the filters leave no run of this preset; see --list without them.")
    if args.epsilons:
        specs = [s for s in specs if s.epsilon in args.epsilons]
    for spec in specs:  # every run's settings are checked before the first one starts
        try:
            spec.run_config()
        except ConfigError as exc:
            parser.error(f"{spec.path}: {exc}")
    out = Path(args.out)
    try:
        tuning = [] if protocol is None else tuning_specs(specs, protocol)
    except ValueError as exc:
        fail(str(exc))
    for spec in tuning:
        spec.run_config()
    final_root = out if protocol is None else out / "final"
    if args.list:
        # a final run's settings are known once its line is tuned; until then it is to do
        listed = specs if protocol is None else tuned_specs(specs, protocol, out / "tuning")[0]
        waiting = len(specs) - len(listed)
        for root, group in ((out / "tuning", tuning), (final_root, listed)):
            prefix = "" if root == out else f"{root.name}/"  # paths relative to --out
            for s in group:
                print(("done  " if is_done(root, s) else "todo  ") + prefix + s.path)
        if waiting:
            print(f"todo  {waiting} final runs whose tuning has not finished")
        cost = estimate_seconds([*tuning, *specs])
        def span(seconds: float) -> str:
            return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"

        print(f"{len(tuning)} tuning runs + {len(specs)} runs; about {span(cost)} of one core by "
              f"the measured per-step costs (docs/RESULTS.md), {span(cost / 2)} with --jobs 2")
        return 0
    from node.experiments.executors import ExecutorError, LocalExecutor, RayExecutor

    executor = (RayExecutor(address=args.ray_address, cpus=args.jobs,
                            connect_timeout=args.ray_timeout)
                if args.executor == "ray" or args.ray_address else LocalExecutor(args.jobs))
    try:
        if protocol is not None:
            run_grid(tuning, out / "tuning", executor=executor)
            specs, missing = tuned_specs(specs, protocol, out / "tuning")
            if missing:
                print(f"{len(missing)} runs left out: their tuning did not finish (rerun)",
                      file=sys.stderr)
            executor = (RayExecutor(address=args.ray_address, cpus=args.jobs,
                                    connect_timeout=args.ray_timeout)
                        if args.executor == "ray" or args.ray_address
                        else LocalExecutor(args.jobs))
        result = run_grid(specs, final_root, executor=executor)
    except ExecutorError as exc:  # before any run started: nothing done is lost
        fail(str(exc))
    print(json.dumps({k: v for k, v in result.items() if k != "failed"}
                     | {"failed": sorted(result["failed"])}))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
