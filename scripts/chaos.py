"""Run chaos scenarios against a local launch of real daemons and print a pass/fail table.

    python scripts/chaos.py                     # every scenario, full size
    python scripts/chaos.py crash partition     # just these
    python scripts/chaos.py --quick --seed 3    # CI size, another seed
    python scripts/chaos.py byzantine --attack label_flip   # another Byzantine attack

Scenarios (node/chaos.py, the same code tests/faults/ asserts on): crash, checkpoint, freeze,
partition, lossy, hostile, shutdown, byzantine (an in-bound attacker, CURVE on). Exit status 0
when every scenario passed, 1 otherwise.
Each scenario's files stay under --out (metrics, node.log, final.json of every node).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from node.adversary import ATTACKS
from node.tools.chaos import SCENARIOS, Outcome, fmt, run_scenario


def table(outcomes: list[Outcome]) -> str:
    lines = ["| scenario | result | time (s) | measured |", "|---|---|---|---|"]
    for o in outcomes:
        numbers = ", ".join(f"{k}={fmt(v)}" for k, v in o.measured.items())
        result = "PASS" if o.passed else "FAIL: " + "; ".join(o.failures)
        lines.append(f"| {o.scenario} | {result} | {o.seconds:.0f} | {numbers} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="CI-sized runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="where the runs go (default: a temporary directory)")
    parser.add_argument("--attack", choices=ATTACKS, default=None,
                        help="the byzantine scenario's attack (default: scaled); label_flip "
                             "runs the real daemon on flipped labels")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}.")
    out = args.out or Path(tempfile.mkdtemp(prefix="dpnorm-chaos-"))
    cache: dict[tuple[int, bool], float] = {}  # the fault-free accuracy, shared
    outcomes = []
    for name in names:
        extra: dict[str, Any] = {"cache": cache} if name in ("lossy", "hostile") else {}
        if name == "hostile" and not args.quick:
            extra["contrast"] = True  # also measure the attack without the norm bound
        if name == "byzantine" and args.attack is not None:
            extra["attack"] = args.attack
        print(f"running {name} ...", file=sys.stderr, flush=True)
        outcome = run_scenario(name, out, seed=args.seed, quick=args.quick, **extra)
        print(outcome.explain(), file=sys.stderr, flush=True)
        outcomes.append(outcome)
    print(table(outcomes))
    print(f"\nruns kept in {out}")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
