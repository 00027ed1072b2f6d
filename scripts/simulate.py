#!/usr/bin/env python3
"""Simulate a whole federation in one process: same options and outputs as launch_local.py.

    python scripts/simulate.py --topology ring --nodes 6 --rounds 50 --out runs/sim

A DIR that already holds a run is refused (its metrics would be appended to and its summary
replaced) unless --force moves it aside into DIR/previous-<UTC time>/; nothing is deleted.
"""

from __future__ import annotations

import argparse
import json
import sys

from node.cli import add_run_options, guarded, run_config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quiet", action="store_true", help="no live progress")
    parser.add_argument("--force", action="store_true",
                        help="move a run already in DIR aside into DIR/previous-<UTC time>/")
    add_run_options(parser, skip=("threads",))
    args = parser.parse_args(argv)
    cfg = guarded(lambda: run_config_from_args(args))
    from pathlib import Path

    from node.tools.rundir import check_out, move_aside

    out = Path(args.out)
    guarded(lambda: check_out(out, resume=False, force=args.force))

    import torch

    from node.outputs.records import GOOD_EXITS
    from node.sim.simulate import console_progress, simulate

    torch.set_num_threads(max(1, torch.get_num_threads()))
    progress = None if args.quiet else console_progress()
    move_aside(out)  # --force, after every check: the earlier run is kept, never deleted
    summary = guarded(lambda: simulate(cfg, args.out, progress=progress))
    brief = {k: summary[k] for k in ("rounds", "mean_accuracy", "max_epsilon", "wall_seconds")}
    if "epsilon_scope" in summary["config"]:
        brief["epsilon_scope"] = summary["config"]["epsilon_scope"]
        sys.stderr.write(f"note: {summary['config']['epsilon_scope']}.\n")
    print(json.dumps(brief))
    return 0 if all(v["exit"] in GOOD_EXITS for v in summary["nodes"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
