"""Chaos scenarios on the network: partitions, lossy links and a hostile peer.

Same contract as `node.tools.chaos` (which lists every scenario): real daemons on 127.0.0.1, faults
injected only from outside — here through the seeded fault layer (`[faults]`) and a hostile peer
process — and an `Outcome` with the measured numbers.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from gossip.errors import STRANGER, Rejection
from gossip.faults import Cut, FaultConfig
from node.config import RunConfig
from node.tools.chaos.harness import (
    HOSTILE_PEER,
    NODE,
    ROUND_TIMEOUT,
    SLACK,
    ChaosTimeout,
    Outcome,
    base_run,
    finish,
    launched,
    log_crashes,
    max_wait,
    mean_accuracy,
    records,
    timed,
)
from node.tools.chaos.hostile_peer import NORM_SENT, STRANGER_SENT
from node.tools.local import read_final
from node.tools.plan import DaemonOptions

# ---- partition ----------------------------------------------------------------------------


def transport_started(out: Path, node: int) -> float:
    """Wall time the node's transport (and so its fault layer's clock) started, from node.log."""
    for line in (out / str(node) / "node.log").read_text(encoding="utf-8").splitlines():
        if "runs without CURVE" in line:
            stamp = " ".join(line.split()[:2])
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise ChaosTimeout(f"node {node}'s log does not say when its transport started")


HEAL_ROUNDS = 20


def partition(out: Path, seed: int = 0, quick: bool = True) -> Outcome:
    """Cut the ring into two halves for a while with the fault layer's `cuts`, then heal it."""
    rounds = 160 if quick else 260
    cut_start, cut_seconds = 8.0, (4.0 if quick else 8.0)
    # Label skew, so that the halves really drift apart while they cannot talk.
    cfg = base_run(seed, rounds, primal_every=1, eval_every=20, partition="classes:4")
    cuts = f"{cut_start}:{cut_start + cut_seconds}:0-1,2-3"
    faults = FaultConfig(cuts=Cut.parse(cuts), seed=seed)
    outcome = Outcome("partition", f"both halves keep training; after healing the consensus "
                      f"distance is back within 2x its pre-partition level in at most "
                      f"{HEAL_ROUNDS} rounds")
    with timed(outcome), launched(cfg, out, DaemonOptions(node=NODE, faults=faults)) as launch:
        finish(launch, outcome, 150)
        starts = [transport_started(out, i) for i in range(4)]
        cut_from, cut_to = min(starts) + cut_start, max(starts) + cut_start + cut_seconds
        sure_from, sure_to = max(starts) + cut_start, min(starts) + cut_start + cut_seconds
        by_node = [records(out, i) for i in range(4)]
        n = min(len(r) for r in by_node)

        def dist(r: int) -> float:
            values = [by_node[i][r]["consensus_distance"] for i in range(4)]
            return statistics.fmean(v for v in values if v is not None) \
                if any(v is not None for v in values) else math.nan

        pre = [r for r in range(n) if max(by_node[i][r]["time"] for i in range(4)) < cut_from]
        post = [r for r in range(n) if min(by_node[i][r]["time"] for i in range(4)) > cut_to]
        during = {i: sum(1 for rec in by_node[i] if sure_from + 1.5 < rec["time"] < sure_to)
                  for i in range(4)}
        outcome.check(len(pre) >= 10, f"only {len(pre)} rounds ran before the cut (start-up "
                      "too slow for this machine?)")
        outcome.check(len(post) >= HEAL_ROUNDS, f"only {len(post)} rounds ran after healing")
        if len(pre) >= 10 and post:
            level = statistics.fmean(dist(r) for r in pre[-10:])
            peak = max(dist(r) for r in range(pre[-1] + 1, post[0] + 5))
            healed = next((k for k, r in enumerate(post) if dist(r) <= 2 * level), None)
            outcome.measured.update(pre_distance=level, peak_distance=peak,
                                    peak_over_pre=peak / level,
                                    rounds_to_heal=healed,
                                    min_rounds_per_node_while_cut=min(during.values()))
            outcome.check(healed is not None and healed <= HEAL_ROUNDS,
                          f"consensus distance not back within 2x ({2 * level:.4g}) after "
                          f"{HEAL_ROUNDS} rounds (took {healed})")
        outcome.check(min(during.values()) >= 3,
                      f"some node ran fewer than 3 rounds while cut off: {during}")
    return outcome


# ---- lossy links --------------------------------------------------------------------------

LOSSY = FaultConfig(drop=0.2, duplicate=0.1, reorder=0.2, reorder_ms=30.0, jitter_ms=50.0)
ACCURACY_RUN = {"quick": 80, "full": 150}
# Far above any honest message (dual RMS ~0.05, model RMS < 1), far below an attack.
MAX_NORM = 10.0


def accuracy_run(seed: int, quick: bool) -> RunConfig:
    return base_run(seed, ACCURACY_RUN["quick" if quick else "full"])


def accuracy_node(**extra: Any) -> dict[str, Any]:
    return {**NODE, "max_message_rms": MAX_NORM, **extra}


def baseline(out: Path, seed: int, quick: bool,
             cache: dict[tuple[int, bool], float] | None = None) -> float:
    """Mean final accuracy of the fault-free run (same seed, same settings)."""
    key = (seed, quick)
    if cache is not None and key in cache:
        return cache[key]
    with launched(accuracy_run(seed, quick), out, DaemonOptions(node=accuracy_node())) as launch:
        check = Outcome("baseline", "")
        finish(launch, check, 150)
        if check.failures:
            raise ChaosTimeout("the fault-free baseline failed: " + "; ".join(check.failures))
        acc = mean_accuracy(out, list(range(4)))
    if cache is not None:
        cache[key] = acc
    return acc


def lossy_links(out: Path, seed: int = 0, quick: bool = True,
                cache: dict[tuple[int, bool], float] | None = None) -> Outcome:
    """20% loss, 10% duplication, reordering and 50 ms jitter on every link."""
    outcome = Outcome("lossy", "final mean accuracy within 2 points of the fault-free run with "
                      "the same seed")
    faults = replace(LOSSY, seed=seed)
    with timed(outcome):
        clean = baseline(out / "clean", seed, quick, cache)
        cfg = accuracy_run(seed, quick)
        with launched(cfg, out / "lossy", DaemonOptions(node=accuracy_node(),
                                                        faults=faults)) as launch:
            finish(launch, outcome, 150)
            lossy = mean_accuracy(out / "lossy", list(range(4)))
        outcome.measured.update(accuracy_clean=clean, accuracy_lossy=lossy,
                                gap_points=100 * (clean - lossy))
        outcome.check(abs(clean - lossy) <= 0.02 + 1e-9,
                      f"accuracy {lossy:.4f} is more than 2 points from {clean:.4f}")
    return outcome


# ---- hostile peer -------------------------------------------------------------------------

HOSTILE = 3


def hostile_peer(out: Path, seed: int = 0, quick: bool = True,
                 cache: dict[tuple[int, bool], float] | None = None,
                 contrast: bool = False) -> Outcome:
    """Node 3 is a hostile process speaking the real codec: NaN/Inf, wrong shapes and dtypes,
    duals x1e6, replays, random bytes, forged sender ids."""
    outcome = Outcome("hostile", "honest nodes never crash or hang; (a) (b) (d) (e) (f) are "
                      "rejected and counted per peer; with max_message_rms the x1e6 duals "
                      "leave honest accuracy within 3 points of the no-attack run")
    with timed(outcome):
        clean = baseline(out / "clean", seed, quick, cache)
        attack = run_hostile(out / "attack", seed, quick, accuracy_node(), outcome)
        outcome.measured.update(accuracy_clean=clean, accuracy_attacked=attack,
                                gap_points=100 * (clean - attack))
        outcome.check(attack >= clean - 0.03,
                      f"honest accuracy {attack:.4f} fell more than 3 points below {clean:.4f}")
        if contrast:
            unbounded = Outcome("hostile-unbounded", "")
            acc = run_hostile(out / "unbounded", seed, quick,
                              {**NODE, "max_message_rms": math.inf}, unbounded)
            outcome.measured["accuracy_attacked_without_bound"] = acc
    return outcome


def run_hostile(out: Path, seed: int, quick: bool, node: Mapping[str, Any],
                outcome: Outcome) -> float:
    """One federation with node 3 hostile; checks what the honest nodes counted."""
    cfg = accuracy_run(seed, quick)
    honest = [i for i in range(4) if i != HOSTILE]
    command = [sys.executable, *HOSTILE_PEER, "--hostile", str(HOSTILE), "--seed",
               str(seed), "--lifetime", "150"]
    with launched(cfg, out, DaemonOptions(node=node),
                  plays={HOSTILE: command}) as launch:
        finish(launch, outcome, 150, nodes=honest)
    outcome.check(not log_crashes(out, honest),
                  f"nodes {log_crashes(out, honest)} logged an unexpected exception")
    worst = max(max_wait(out, i) for i in honest)
    outcome.check(worst <= ROUND_TIMEOUT + SLACK, f"an honest node waited {worst:.2f} s")
    sent_path = out / str(HOSTILE) / "hostile.json"
    if not outcome.check(sent_path.exists(), "the hostile peer left no record of what it sent"):
        return math.nan
    sent: dict[str, dict[str, int]] = json.loads(sent_path.read_text())["sent"]
    bounded = math.isfinite(float(node.get("max_message_rms", math.inf)))
    totals: dict[str, int] = {}
    for target, kinds in sent.items():
        final = read_final(out / target) or {}
        counted = final.get("rejected_messages", {})
        mine = counted.get(str(HOSTILE), {})
        for kind, n in kinds.items():
            totals[kind] = totals.get(kind, 0) + n
            if kind == STRANGER_SENT:
                got = counted.get(STRANGER, {}).get(Rejection.PEER, 0)
            elif kind == NORM_SENT:
                got = mine.get(Rejection.NORM, 0)
                if not bounded:
                    continue
            else:
                got = mine.get(Rejection(kind), 0)
            ok = got == n
            outcome.check(ok, f"node {target} counted {got} {kind} from the hostile peer, "
                              f"it sent {n}")
    outcome.measured.update({f"sent_{k}": v for k, v in sorted(totals.items())})
    return mean_accuracy(out, honest)
