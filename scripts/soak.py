"""Soak: N real daemons for a set time, a random fault every F seconds, and what it cost.

    python scripts/soak.py --nodes 12 --minutes 8 --out runs/soak            # ring, 0.5 s rounds
    python scripts/soak.py --nodes 16 --minutes 20 --fault-every 30 --seed 1 --out runs/soak16

Every `--fault-every` seconds a seeded-random node gets a seeded-random fault: SIGKILL and a
restart from its own config `--down` seconds later, or SIGSTOP for `--down` seconds and SIGCONT.
Faults stop one fault interval before the fault-free pace would end the run; then every node
must finish all its rounds (bounded wait). The number of rounds is what the fault-free pace
(`--round-seconds`, the nodes' `min_round_seconds`) fits in `--minutes`.

Prints one JSON object: per node the rounds done, rounds skipped to rejoin, rounds with at
least one neighbour heard (and that share), the median round period (end to end) before the
first fault — the baseline, measured in the same run — and after it, RSS at start and at end,
its exit; then the faults injected and whether every node finished with ≥ 90 % of its rounds
heard. Exit status 0 when that holds, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from node.cli import fail
from node.config import RunConfig
from node.outputs.files import RunDir, read_metrics
from node.outputs.records import ExitReason
from node.tools.local import LocalLaunch, read_final
from node.tools.plan import DaemonOptions

HEARD_SHARE = 0.9


def rss_bytes(pid: int) -> int | None:
    """The process's resident set (VmRSS), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def periods(records: list[dict[str, Any]], *, before: float = float("inf"),
            after: float = float("-inf")) -> list[float]:
    """Seconds between consecutive rounds' ends, for rounds ending in (after, before)."""
    chosen = [r for r in records if after < r["time"] < before]
    return [b["time"] - a["time"] for a, b in itertools.pairwise(chosen)]


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=12)
    p.add_argument("--topology", default="ring")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--fault-every", type=float, default=30.0, metavar="S")
    p.add_argument("--down", type=float, default=8.0, metavar="S",
                   help="seconds a killed node stays down, or a frozen one stopped")
    p.add_argument("--round-seconds", type=float, default=0.5)
    p.add_argument("--round-timeout", type=float, default=5.0)
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.nodes < 3 or args.minutes <= 0 or args.fault_every <= args.down \
            or args.round_seconds <= 0:
        fail("soak needs --nodes >= 3, --minutes > 0, --round-seconds > 0 and "
             "--fault-every longer than --down.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rounds = int(args.minutes * 60 / args.round_seconds)
    cfg = RunConfig(topology=args.topology, nodes=args.nodes, rounds=rounds,
                    dataset="synthetic", model="logreg", lr=0.5, examples_per_node=600,
                    test_examples=500, eval_every=50, threads=1, seed=args.seed,
                    epsilon=args.epsilon, delta=1e-5, batch_size=300)
    node = {"min_round_seconds": args.round_seconds, "round_timeout": args.round_timeout,
            "heartbeat_interval": 1.0, "down_after": 5.0, "checkpoint_every": 10,
            "startup_timeout": 60.0}
    rng = random.Random(args.seed)
    launch = LocalLaunch(cfg, args.out, DaemonOptions(node=node))
    rss_start: dict[int, int | None] = {}
    rss_end: dict[int, int | None] = {}
    faults: list[dict[str, Any]] = []

    def sample() -> None:
        for i, handle in launch.processes.items():
            value = rss_bytes(handle.pid) if handle.poll() is None else None
            if value is not None:
                rss_start.setdefault(i, value)
                rss_end[i] = value

    launch.start()
    started = time.time()
    sample()
    try:
        stop_faults = started + args.minutes * 60 - args.fault_every
        next_fault = started + args.fault_every
        while time.time() < stop_faults:
            time.sleep(1.0)
            sample()
            if time.time() < next_fault:
                continue
            victim = rng.randrange(args.nodes)
            kind = rng.choice(["kill", "freeze"])
            faults.append({"t": round(time.time() - started, 1), "node": victim, "fault": kind})
            print(f"{faults[-1]['t']:7.1f} s  {kind} node {victim}", file=sys.stderr)
            if kind == "kill":
                launch.kill(victim)
                time.sleep(args.down)
                launch.restart(victim)
            else:
                launch.signal(victim, signal.SIGSTOP)
                time.sleep(args.down)
                launch.signal(victim, signal.SIGCONT)
            next_fault += args.fault_every
        deadline = time.time() + args.minutes * 60 + 300
        while launch.running() and time.time() < deadline:
            time.sleep(1.0)
            sample()
    finally:
        launch.stop_all(grace=10.0)
    first_fault = started + faults[0]["t"] if faults else float("inf")
    run = RunDir(args.out)
    nodes: dict[str, Any] = {}
    ok = True
    for i in range(args.nodes):
        records = read_metrics(run.metrics(i)) if run.metrics(i).exists() else []
        heard = sum(1 for r in records if r["neighbours_heard"] > 0)
        final = read_final(run.node(i)) or {}
        share = heard / len(records) if records else 0.0
        finished = final.get("exit") == ExitReason.FINISHED and \
            final.get("rounds_completed") == rounds
        ok = ok and finished and share >= HEARD_SHARE
        nodes[str(i)] = {
            "rounds_run": len(records), "rounds_skipped": final.get("rounds_skipped"),
            "rounds_with_neighbour_heard": heard, "heard_share": round(share, 4),
            "median_round_period_before_faults": median(periods(records, before=first_fault)),
            "median_round_period_after_faults": median(periods(records, after=first_fault)),
            "rss_start_bytes": rss_start.get(i), "rss_end_bytes": rss_end.get(i),
            "exit": final.get("exit"), "rounds_completed": final.get("rounds_completed")}
    print(json.dumps({"nodes": args.nodes, "topology": args.topology, "rounds": rounds,
                      "minutes": args.minutes, "round_seconds": args.round_seconds,
                      "wall_seconds": round(time.time() - started, 1), "faults": faults,
                      "every_node_finished_hearing_90_percent": ok, "per_node": nodes},
                     indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
