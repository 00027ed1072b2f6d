#!/usr/bin/env python3
"""How many daemons fit on one machine: N real nodes on a ring (logreg or mlp), 20 rounds each.

    python scripts/bench_scale.py [--sizes 8 16 32] [--model logreg] [--rounds 20]

Prints JSON per N: finished or not, wall seconds, median seconds per round, peak RSS per node
(VmHWM from /proc, sampled while the nodes run), and the largest N that finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.config import RunConfig
from node.outputs.files import read_metrics
from node.tools.local import LaunchError, LocalLaunch
from node.tools.plan import DaemonOptions


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_size(n: int, model: str, rounds: int, timeout: float) -> dict[str, object]:
    cfg = RunConfig(topology="ring", nodes=n, rounds=rounds, model=model, dataset="synthetic",
                    examples_per_node=500, test_examples=500, eval_every=5, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        launch = LocalLaunch(cfg, out, DaemonOptions(node={"round_timeout": 60.0,
                                                           "startup_timeout": 600.0}))
        peaks: dict[int, float] = {}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for i, proc in launch.processes.items():
                    rss = peak_rss_mb(proc.pid)
                    if rss is not None:
                        peaks[i] = max(peaks.get(i, 0.0), rss)
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        try:
            sampler.start()
            launch.start(timeout=600)
            finished = launch.wait(timeout=timeout) and launch.succeeded()
        except LaunchError as exc:
            finished = False
            print(f"N={n}: {exc}", file=sys.stderr)
        finally:
            done.set()
            launch.stop_all(grace=10.0)
        wall = time.monotonic() - started
        per_round = []
        for i in range(n):
            path = out / str(i) / "metrics.jsonl"
            if path.exists():
                per_round += [r["round_seconds"] for r in read_metrics(path)[1:]]
    return {"nodes": n, "finished": finished, "wall_seconds": round(wall, 1),
            "median_seconds_per_round": round(statistics.median(per_round), 4) if per_round
            else None,
            "peak_rss_mb_per_node": round(max(peaks.values()), 1) if peaks else None,
            "peak_rss_mb_total": round(sum(peaks.values()), 1) if peaks else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--model", default="logreg", choices=["logreg", "mlp"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900.0, help="per size, seconds")
    args = parser.parse_args()
    results = [run_size(n, args.model, args.rounds, args.timeout) for n in args.sizes]
    largest = max((r["nodes"] for r in results if r["finished"]), default=None)
    print(json.dumps({"model": args.model, "rounds": args.rounds, "runs": results,
                      "largest_finished": largest}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
