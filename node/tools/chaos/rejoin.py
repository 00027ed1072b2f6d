"""Chaos scenario: a node killed and restarted from its own config when its neighbours are
`gap` rounds ahead (or restored from an older checkpoint) must rejoin them.

Same contract as every scenario (see `node.tools.chaos`): real daemons on 127.0.0.1, faults
only through signals and files, an `Outcome` with the measured numbers. What it checks:
- the restarted node skips to its neighbours' round, never runs a round twice, and hears at
  least one neighbour in ≥ 90 % of the rounds it runs after the restart (up to its
  neighbours' last round);
- the others' median round period (end to end) after the restart stays within 2x the one
  before the kill;
- every privacy ledger verifies and covers every round its node ran; all nodes finish.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
from pathlib import Path

from node.outputs.files import CHECKPOINT, FINAL, LEDGER
from node.tools.chaos.harness import (
    NODE,
    START_TIMEOUT,
    Outcome,
    base_run,
    finish,
    launched,
    records,
    timed,
    wait_for,
)
from node.tools.plan import DaemonOptions

__all__ = ["HEARD_SHARE", "rejoin"]

HEARD_SHARE = 0.9  # of the rounds a restarted node runs, the share with a neighbour heard
PACE = 0.1  # min_round_seconds, as the other chaos scenarios


def last_round(out: Path, node: int) -> int:
    """The last round node `node` recorded (-1 before any)."""
    mine = records(out, node)
    return mine[-1]["round"] if mine else -1


def round_periods(out: Path, nodes: list[int], *, below: float = float("inf"),
                  above: float = -1) -> list[float]:
    """Seconds from one round's end to the next's, per node, for rounds in (above, below):
    the pace the federation keeps (a round's own `round_seconds` leaves out the pacing)."""
    periods = []
    for i in nodes:
        mine = [r for r in records(out, i) if above < r["round"] < below]
        periods += [b["time"] - a["time"] for a, b in itertools.pairwise(mine)
                    if b["round"] == a["round"] + 1]
    return periods


def rejoin(out: Path, seed: int = 0, quick: bool = True, gap: int = 10,
           older_checkpoint: bool = False) -> Outcome:
    """SIGKILL a seeded node at round 12, restart it once the others are `gap` rounds past the
    round it resumes at; with `older_checkpoint`, from a checkpoint 5+ rounds older."""
    from privacy.ledger import Ledger

    rng = random.Random(seed)
    victim = rng.randrange(4)
    kill_round = 12
    rounds = kill_round + gap + (120 if quick else 240)  # a restart takes 20-40 of them
    outcome = Outcome(f"rejoin+{gap}" + ("-older" if older_checkpoint else ""),
                      "the restarted node skips to its neighbours and hears one in >= 90 % of "
                      "its rounds; the others' median round time stays within 2x; ledgers "
                      "verify")
    cfg = base_run(seed, rounds, epsilon=8.0, delta=1e-5, batch_size=300)
    node = {**NODE, "min_round_seconds": PACE}
    others = [i for i in range(4) if i != victim]
    vdir = out / str(victim)
    restart_index = restarted_round = resume = -1
    usual = 0.0
    with timed(outcome), launched(cfg, out, DaemonOptions(node=node)) as launch:
        old_checkpoint = b""
        if older_checkpoint:
            wait_for(lambda: last_round(out, victim) >= 5, 90, f"node {victim}'s round 5")
            old_checkpoint = (vdir / CHECKPOINT).read_bytes()  # written after round 4
        wait_for(lambda: last_round(out, victim) >= kill_round, 90,
                 f"node {victim} to reach round {kill_round}")
        launch.kill(victim)
        with Ledger.open(vdir / LEDGER, json.loads((vdir / LEDGER).read_text())["identity"]) \
                as ledger:
            resume = ledger.rounds[-1] + 1
        usual = statistics.median(round_periods(out, others, below=kill_round))
        wait_for(lambda: min(last_round(out, i) for i in others) >= resume + gap, 120,
                 f"the others to run {gap} rounds past round {resume}")
        if older_checkpoint:
            (vdir / CHECKPOINT).write_bytes(old_checkpoint)
        ahead = min(last_round(out, i) for i in others) - resume
        restart_index = len(records(out, victim))
        launch.restart(victim, timeout=START_TIMEOUT)
        restarted_round = max(last_round(out, i) for i in others)
        finish(launch, outcome, 60 + rounds * PACE * 3)
    if restart_index < 0:  # a bounded wait ran out before the restart: that is the failure
        return outcome
    mine = records(out, victim)
    ran = [r["round"] for r in mine]
    # The rounds it ran after the restart while its neighbours were still running (the last
    # one or two may come after they finished and left).
    last = min(last_round(out, j) for j in ((victim - 1) % 4, (victim + 1) % 4))  # on the ring
    after = [r for r in mine[restart_index:] if r["round"] <= last]
    heard = sum(1 for r in after if r["neighbours_heard"] > 0)
    later = round_periods(out, others, above=restarted_round)
    final = json.loads((vdir / FINAL).read_text())
    outcome.measured.update(victim=victim, resumed_at=resume, others_ahead_at_restart=ahead,
                            first_round_after=after[0]["round"] if after else None,
                            rounds_skipped=final.get("rounds_skipped"),
                            rounds_run_after=len(after), heard_after=heard,
                            median_round_before=usual,
                            median_round_after=statistics.median(later) if later else None)
    outcome.check(ran == sorted(set(ran)), f"node {victim} ran a round twice")
    outcome.check(bool(after) and after[0]["round"] > resume,
                  f"node {victim} did not skip ahead from round {resume}")
    outcome.check(bool(after) and heard >= HEARD_SHARE * len(after),
                  f"node {victim} heard a neighbour in {heard} of {len(after)} rounds")
    outcome.check(bool(later) and statistics.median(later) <= 2 * usual,
                  "the others' median round time grew past 2x")
    for i in range(4):
        path = out / str(i) / LEDGER
        with Ledger.open(path, json.loads(path.read_text())["identity"]) as ledger:  # verifies
            missing = sorted({r["round"] for r in records(out, i)} - set(ledger.rounds))
        outcome.check(not missing, f"node {i} ran rounds {missing[:5]} its ledger lacks")
    return outcome
