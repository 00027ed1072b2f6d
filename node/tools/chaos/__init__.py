"""Chaos scenarios: real node daemons on 127.0.0.1, faults injected only from outside.

Rule 1: a scenario sees only processes, files and sockets — it never patches the daemon; every
wait has a deadline. Rule 2: this package imports the launch tooling and the daemon's file
formats (`node.daemon.settings`, `node.daemon.state`), never its event loop.

Each scenario starts a small federation with `LocalLaunch`, injects one kind of fault — signals
(`process`: SIGKILL, SIGSTOP/SIGCONT, SIGTERM), the seeded fault layer (`network`: loss,
duplication, reordering, jitter, partitions) or a hostile peer process (`hostile_peer`;
`byzantine`: one whose attacks stay in-bound) — and
measures what the guarantees in `docs/RELIABILITY.md` promise. It returns an `Outcome`: the
measured numbers and the list of broken guarantees (empty when the scenario passed).
`tests/faults/` asserts on these outcomes; `scripts/chaos.py` prints them as a table. Every
scenario is seeded (which node, which round, which moment); `quick=True` is the CI size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.tools.chaos.byzantine import byzantine
from node.tools.chaos.harness import Outcome, fmt
from node.tools.chaos.network import HEAL_ROUNDS, hostile_peer, lossy_links, partition
from node.tools.chaos.process import checkpoint_kills, crash_restart, freeze, shutdown
from node.tools.chaos.rejoin import rejoin

__all__ = [
    "HEAL_ROUNDS", "SCENARIOS", "Outcome", "byzantine", "checkpoint_kills", "crash_restart",
    "fmt", "freeze", "hostile_peer", "lossy_links", "partition", "rejoin", "run_scenario",
    "shutdown",
]  # fmt: skip

SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "crash": crash_restart,
    "rejoin": rejoin,
    "checkpoint": checkpoint_kills,
    "freeze": freeze,
    "partition": partition,
    "lossy": lossy_links,
    "hostile": hostile_peer,
    "shutdown": shutdown,
    "byzantine": byzantine,
}


def run_scenario(name: str, out: Path, seed: int = 0, quick: bool = True,
                 **kwargs: Any) -> Outcome:
    return SCENARIOS[name](out / name, seed=seed, quick=quick, **kwargs)
