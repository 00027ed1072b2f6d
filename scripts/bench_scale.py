#!/usr/bin/env python3
"""How many daemons fit on one machine: N real nodes on a ring (logreg or mlp), R rounds each.

    python scripts/bench_scale.py [--sizes 8 16 32 64] [--model logreg] [--rounds 20]
                                  [--dataset fashion-mnist] [--repeat 1] [--no-fork-server]

Prints one JSON line per run, then one with the largest N that finished every round. A run's
line: whether every node finished, start-up (first node started → every node READY, in wall
seconds and in CPU seconds of the nodes and the template), wall seconds, median seconds per
round, and per node the peak RSS (VmHWM from /proc, sampled every half second, and the
`peak_rss_bytes` each node wrote to final.json) and the peak PSS (from
/proc/<pid>/smaps_rollup: shared pages such as torch's libraries divided among the processes
mapping them, so the per-node PSS times N is what N nodes really occupy). With the fork server
(the default on Linux) the template's own PSS is reported apart and counted in the total.
MB are 2²⁰ bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from node.config import RunConfig
from node.core.data import FASHION_MNIST_DIR
from node.outputs.files import read_json, read_metrics
from node.tools.local import LaunchError, LocalLaunch
from node.tools.plan import DaemonOptions

MB = 2**20


def proc_kib(pid: int, name: str, key: str) -> int | None:
    """The `key:` line of /proc/<pid>/<name> in KiB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class Sampler:
    """Per node: the largest VmHWM and PSS seen; for the federation: the largest PSS sum."""

    def __init__(self, launch: LocalLaunch, every: float = 0.5) -> None:
        self.launch, self.every = launch, every
        self.rss: dict[int, int] = {}
        self.pss: dict[int, int] = {}
        self.template_pss = 0
        self.pss_total = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(self.every):
            total = 0
            for i, proc in list(self.launch.processes.items()):
                rss = proc_kib(proc.pid, "status", "VmHWM")
                pss = proc_kib(proc.pid, "smaps_rollup", "Pss")
                if rss is not None:
                    self.rss[i] = max(self.rss.get(i, 0), rss * 1024)
                if pss is not None:
                    self.pss[i] = max(self.pss.get(i, 0), pss * 1024)
                    total += pss * 1024
            template = self.launch.template_pid
            pss = proc_kib(template, "smaps_rollup", "Pss") if template is not None else None
            if pss is not None:
                self.template_pss = max(self.template_pss, pss * 1024)
                total += pss * 1024
            self.pss_total = max(self.pss_total, total)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: list[int]) -> dict[str, float] | None:
    """Median and maximum over the nodes, in MB."""
    if not values:
        return None
    return {"median": round(statistics.median(values) / MB, 1),
            "max": round(max(values) / MB, 1)}


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    cfg = RunConfig(topology="ring", nodes=n, rounds=args.rounds, model=args.model,
                    dataset=args.dataset, examples_per_node=args.examples_per_node,
                    test_examples=args.test_examples, eval_every=5, threads=1,
                    epsilon=args.epsilon)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        launch = LocalLaunch(cfg, out, DaemonOptions(node={"round_timeout": 60.0,
                                                           "startup_timeout": 600.0}),
                             fork_server=None if args.fork_server else False)
        started = time.monotonic()
        startup = startup_cpu = None
        with Sampler(launch) as sampler:
            try:
                launch.start(timeout=600)
                startup = time.monotonic() - started  # as summary.json's startup_seconds
                # CPU, unlike wall time, does not depend on what else the machine runs.
                pids = [p.pid for p in launch.processes.values()] + [launch.template_pid or 0]
                startup_cpu = sum(cpu_seconds(pid) for pid in pids if pid)
                finished = launch.wait(timeout=args.timeout) and launch.succeeded()
            except LaunchError as exc:
                finished = False
                print(f"N={n}: {exc}", file=sys.stderr)
            finally:
                launch.stop_all(grace=10.0)
        wall = time.monotonic() - started
        per_round: list[float] = []
        reported: list[int] = []
        for i in range(n):
            path = out / str(i) / "metrics.jsonl"
            if path.exists():
                per_round += [r["round_seconds"] for r in read_metrics(path)[1:]]
            final = read_json(out / str(i) / "final.json") or {}
            if isinstance(final.get("peak_rss_bytes"), int):
                reported.append(final["peak_rss_bytes"])
    return {
        "nodes": n, "dataset": args.dataset, "model": args.model, "rounds": args.rounds,
        "fork_server": launch.fork_server, "finished": finished,
        "startup_seconds": round(startup, 2) if startup is not None else None,
        "startup_cpu_seconds": round(startup_cpu, 2) if startup_cpu is not None else None,
        "wall_seconds": round(wall, 1),
        "median_seconds_per_round": round(statistics.median(per_round), 4) if per_round
        else None,
        "peak_rss_mb_per_node": spread(list(sampler.rss.values())),
        "final_peak_rss_mb_per_node": spread(reported),
        "pss_mb_per_node": spread(list(sampler.pss.values())),
        "template_pss_mb": round(sampler.template_pss / MB, 1) if sampler.template_pss
        else None,
        "pss_mb_total": round(sampler.pss_total / MB, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--model", default="logreg", choices=["logreg", "mlp"])
    parser.add_argument("--rounds", type=int, default=20)
    have_fashion = Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists()
    parser.add_argument("--dataset", choices=["fashion-mnist", "synthetic"],
                        default="fashion-mnist" if have_fashion else "synthetic")
    parser.add_argument("--examples-per-node", type=int, default=None,
                        help="cap each node's shard (default: the whole shard)")
    parser.add_argument("--test-examples", type=int, default=2000)
    parser.add_argument("--epsilon", type=float, default=float("inf"))
    parser.add_argument("--repeat", type=int, default=1, help="runs per size")
    parser.add_argument("--timeout", type=float, default=900.0, help="per run, seconds")
    parser.add_argument("--no-fork-server", dest="fork_server", action="store_false",
                        help="spawn each node as its own `python -m node`")
    args = parser.parse_args()
    finished: list[int] = []
    for n in args.sizes:
        for _ in range(args.repeat):
            result = run_size(n, args)
            print(json.dumps(result), flush=True)
            if result["finished"]:
                finished.append(n)
    print(json.dumps({"largest_finished": max(finished, default=None)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
