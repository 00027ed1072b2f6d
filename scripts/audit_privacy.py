#!/usr/bin/env python3
"""A distinguishing experiment on the real runner: an empirical lower bound on ε per mode.

    python scripts/audit_privacy.py                      # 20,000 trials per world and mode
    python scripts/audit_privacy.py --trials 100000 --epsilon 1

For each privacy mode, node 0 of a two-node line releases its first message on D and on D plus
a worst-case canary (node/sim/audit.py); the Clopper–Pearson lower bound on ε from those
releases must stay below the printed ε, and with a quarter of the noise (the positive control)
it must not. Prints one JSON line per audit; exit status 1 when a bound fails either way.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20_000, help="releases per world")
    parser.add_argument("--epsilon", type=float, default=2.0, help="the target ε of the run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["message", "gradient"],
                        choices=["message", "gradient"])
    args = parser.parse_args(argv)
    import torch

    from node.sim.audit import audit

    torch.set_num_threads(1)
    ok = True
    for mode in args.modes:
        for scale, expect in ((1.0, True), (0.25, False)):
            started = time.perf_counter()
            result = audit(mode, trials=args.trials, seed=args.seed, noise_scale=scale,
                           epsilon=args.epsilon)
            ok &= result.holds == expect
            print(json.dumps({"mode": mode, "noise_scale": scale, "trials": result.trials,
                              "printed_epsilon": result.printed_epsilon,
                              "epsilon_lower_bound": result.epsilon_lower_bound,
                              "holds": result.holds, "expected_to_hold": expect,
                              "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
