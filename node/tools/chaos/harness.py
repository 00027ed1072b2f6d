"""What every chaos scenario shares: the outcome record, run settings, and bounded waits.

`Outcome` holds a scenario's measured numbers and broken guarantees; `launched`/`finish` start
and end a `LocalLaunch` with deadlines; `wait_for` polls with a deadline and raises
`ChaosTimeout`, so no scenario can hang. The scenarios are in `node.tools.chaos` (process faults)
and `node.tools.chaos.network` (network faults and the hostile peer).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import RunConfig
from node.outputs.files import RunDir, read_metrics
from node.outputs.records import ExitReason
from node.tools.local import LocalLaunch, read_final
from node.tools.plan import DaemonOptions

# Run as a module, so that it ships with the package (the wheel and the image have no tests/).
HOSTILE_PEER = ("-m", "node.tools.chaos.hostile_peer")
ROUND_TIMEOUT = 1.0
# Slack on top of a deadline for scheduling on a loaded 2-core machine.
SLACK = 0.75
NODE: dict[str, Any] = {
    "round_timeout": ROUND_TIMEOUT, "heartbeat_interval": 0.5, "down_after": 3.0,
    "max_missed_deadlines": 2, "checkpoint_every": 5, "min_round_seconds": 0.1,
    "startup_timeout": 20.0,
}
START_TIMEOUT = 120.0
Number = float | int | str | None


class ChaosTimeout(AssertionError):
    """A bounded wait ran out: the scenario fails with this sentence."""


@dataclass
class Outcome:
    """What a scenario measured and which guarantees it saw broken."""

    scenario: str
    guarantee: str
    measured: dict[str, Number] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def check(self, ok: bool, failure: str) -> bool:
        if not ok:
            self.failures.append(failure)
        return ok

    def explain(self) -> str:
        numbers = ", ".join(f"{k}={fmt(v)}" for k, v in self.measured.items())
        return f"{self.scenario}: {'; '.join(self.failures) or 'passed'} ({numbers})"


def fmt(value: Number) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---- shared plumbing ----------------------------------------------------------------------


def base_run(seed: int, rounds: int, **changes: Any) -> RunConfig:
    """4 nodes on a ring, logistic regression on the synthetic task: fast and stable."""
    cfg = RunConfig(topology="ring", nodes=4, rounds=rounds, dataset="synthetic", model="logreg",
                    lr=0.5, examples_per_node=600, test_examples=1000, eval_every=10,
                    threads=1, seed=seed)
    return cfg.replace(**changes)


def rounds_done(out: Path, node: int) -> int:
    return len(records(out, node))


def records(out: Path, node: int) -> list[dict[str, Any]]:
    path = RunDir(out).metrics(node)
    return read_metrics(path) if path.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ChaosTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


@contextmanager
def launched(cfg: RunConfig, out: Path, options: DaemonOptions,
             plays: Mapping[int, list[str]] | None = None) -> Iterator[LocalLaunch]:
    """A started federation that is always stopped (SIGTERM, then SIGKILL) on the way out;
    `plays[i]` is the command node i runs instead of the daemon."""
    launch = LocalLaunch(cfg, out, options, node_commands=plays)
    try:
        launch.start(timeout=START_TIMEOUT)
        yield launch
    finally:
        launch.stop_all(grace=5.0)


def finish(launch: LocalLaunch, outcome: Outcome, timeout: float,
           nodes: list[int] | None = None) -> None:
    """Wait (bounded) for every node to exit; check each honest one finished all its rounds."""
    if not outcome.check(launch.wait(timeout), f"the federation did not finish within "
                         f"{timeout:.0f} s"):
        return
    results = launch.results()
    for i in range(len(launch.nodes)) if nodes is None else nodes:
        proc = launch.processes.get(i)
        rc = None if proc is None else proc.returncode
        outcome.check(rc == 0, f"node {i} exited with status {rc}")
        info = results[str(i)]
        outcome.check(info["exit"] == ExitReason.FINISHED and
                      info["rounds_completed"] == launch.cfg.rounds,
                      f"node {i} ended '{info['exit']}' after {info['rounds_completed']} rounds")


def max_wait(out: Path, node: int, after_round: int = -1) -> float:
    waits = [r["wait_seconds"] for r in records(out, node) if r["round"] > after_round]
    return max(waits, default=0.0)


def mean_accuracy(out: Path, nodes: list[int]) -> float:
    accs = [(read_final(out / str(i)) or {}).get("accuracy") for i in nodes]
    values = [float(a) for a in accs if a is not None]
    return statistics.fmean(values) if len(values) == len(nodes) else math.nan


def log_crashes(out: Path, nodes: list[int]) -> list[str]:
    """Nodes whose log shows an unexpected exception (a peer must never cause one)."""
    bad = []
    for i in nodes:
        path = out / str(i) / "node.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if "Traceback" in text or "unexpected error" in text:
            bad.append(str(i))
    return bad


@contextmanager
def timed(outcome: Outcome) -> Iterator[Outcome]:
    started = time.monotonic()
    try:
        yield outcome
    except ChaosTimeout as exc:
        outcome.failures.append(str(exc))
    finally:
        outcome.seconds = time.monotonic() - started
