"""Byzantine scenarios: a hostile daemon that speaks the real protocol, inside the RMS bound.

Node 3 of the 4-node ring is `hostile_peer --attack MODE` (node.adversary.attacks): every message it
sends is well formed, for the right round, below `max_message_rms`, and — with CURVE on — from
an authenticated neighbour, so today's validation accepts all of it. Three federations with the
same seed: no attacker, the attack with `robust = off`, the attack with `robust = clip+screen`.

`label_flip` is data poisoning, not a message attack: node 3 is then the real daemon on its own
shard with flipped labels (`node.tools.chaos.poisoned`), honest in every message, and must
finish its rounds like the others. Its accuracy on the true labels does not collapse (gossip
pulls it to the consensus every round); what shows that it trained on flipped labels is its
training loss, far above the honest nodes'. The screen need not report it (its messages are
honest); how many neighbours did is measured.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path
from typing import Any

from gossip.errors import Rejection
from node.tools.chaos.harness import (
    HOSTILE_PEER,
    NODE,
    ROUND_TIMEOUT,
    SLACK,
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
from node.tools.chaos.network import MAX_NORM
from node.tools.local import read_final
from node.tools.plan import DaemonOptions

# Run as a module, like the hostile peer, so that it ships with the package.
POISONED = ("-m", "node.tools.chaos.poisoned")
BYZANTINE = 3
HONEST = [0, 1, 2]
# label_flip: node 3's mean training loss over the last rounds must be at least this many times
# every honest node's. Measured 1.7-1.9x with robust = off and 5-7x with clip+screen (60 and 120
# rounds), 1.0x with its labels left unflipped; the ratio falls slowly with more rounds, as the
# consensus model memorises more of the flipped rows.
LOSS_RATIO = 1.3
LAST_ROUNDS = 10
# A real daemon on a loaded machine sometimes sends after the receiver closed the round, as
# honest nodes do to each other: a verdict on timing, not on content.
LATE = Rejection.STALE_ROUND
# The chaos scenarios' pace. Unpaced (0), the D-PSGD scenarios hold as well and run in half the
# time; DP-Norm's defended accuracy then depends on arrival order: 72.6 and 72.7 % against a
# fault-free 78.1 in 2 of 8 unpaced runs (5.4 points), within 3.4 at this pace (issue 31).
PACE = 0.1


def byzantine(out: Path, seed: int = 0, quick: bool = True, attack: str = "scaled",
              algorithm: str = "dpsgd", curve: bool = True, within: float = 3.0,
              pace: float = PACE, **_: Any) -> Outcome:
    """Node 3 runs `attack`; the defence must keep honest accuracy within `within` points of
    the fault-free run. `pace` is every node's min_round_seconds."""
    flip = attack == "label_flip"
    if flip:
        promise = ("node 3, the real daemon on flipped labels, finishes its rounds with no "
                   f"message rejected and a training loss {LOSS_RATIO:g}x the honest nodes'; it "
                   "costs > 5 points without the defence; with clip+screen honest accuracy is "
                   f"within {within:g} points of the fault-free run")
    else:
        promise = ("the attack (accepted by every check) costs > 5 points without the defence; "
                   f"with clip+screen honest accuracy is within {within:g} points of the "
                   "fault-free run and the attacker is reported by both its neighbours")
    outcome = Outcome(f"byzantine-{attack}-{algorithm}", promise)
    rounds = 60 if quick else 120
    cfg = base_run(seed, rounds, algorithm=algorithm)
    node = {**NODE, "max_message_rms": MAX_NORM, "min_round_seconds": pace}
    options = DaemonOptions(node=node, curve=curve)
    if flip:
        command = [sys.executable, *POISONED, "--poisoned", str(BYZANTINE)]
    else:
        command = [sys.executable, *HOSTILE_PEER, "--hostile", str(BYZANTINE), "--seed",
                   str(seed), "--lifetime", "120", "--attack", attack]
    with timed(outcome):
        accuracy: dict[str, float] = {}
        with launched(cfg, out / "clean", options) as launch:
            finish(launch, outcome, 120)
            accuracy["clean"] = mean_accuracy(out / "clean", HONEST)
        for defence in ("off", "clip+screen"):
            run_out = out / defence.replace("+", "-")
            with launched(cfg.replace(robust=defence), run_out, options,
                          plays={BYZANTINE: command}) as launch:
                finish(launch, outcome, 120, nodes=None if flip else HONEST)
            accuracy[defence] = mean_accuracy(run_out, HONEST)
            crashed = log_crashes(run_out, HONEST)
            outcome.check(not crashed, f"nodes {crashed} logged an unexpected exception")
            worst = max(max_wait(run_out, i) for i in HONEST)
            outcome.check(worst <= ROUND_TIMEOUT + SLACK, f"an honest node waited {worst:.2f} s")
            counts = [(read_final(run_out / str(i)) or {}).get("rejected_messages", {})
                      .get(str(BYZANTINE), {}) for i in HONEST]
            rejected = sum(n for c in counts for kind, n in c.items() if not flip or kind != LATE)
            outcome.check(rejected == 0, f"{rejected} Byzantine messages were rejected: the attack "
                          "must stay inside every check")
            if flip:
                run = "off" if defence == "off" else "defended"
                outcome.measured[f"late_{run}"] = sum(c.get(LATE, 0) for c in counts)
                check_poisoned(outcome, run_out, run)
            if defence != "off":
                flagged = [i for i in (0, 2)
                           if BYZANTINE in (read_final(run_out / str(i)) or {}).get("suspects", [])]
                outcome.measured["reported_by"] = len(flagged)
                if not flip:
                    outcome.check(len(flagged) == 2, f"only nodes {flagged} reported the attacker")
        clean, off, on = accuracy["clean"], accuracy["off"], accuracy["clip+screen"]
        outcome.measured.update(accuracy_clean=clean, accuracy_attack_off=off,
                                accuracy_attack_defended=on, curve=str(curve))
        outcome.check(not math.isnan(off) and off < clean - 0.05,
                      f"the attack cost only {100 * (clean - off):.1f} points without the defence")
        outcome.check(on >= clean - within / 100,
                      f"defended honest accuracy {on:.4f} is more than {within:g} points below "
                      f"{clean:.4f}")
    return outcome


def check_poisoned(outcome: Outcome, run_out: Path, run: str) -> None:
    """Node 3 trained on its flipped labels: the consensus model fits them far worse than the
    honest nodes' true ones (with unflipped labels its loss equals theirs)."""
    crashed = log_crashes(run_out, [BYZANTINE])
    outcome.check(not crashed, "the poisoned daemon logged an unexpected exception")
    outcome.measured[f"accuracy_poisoned_{run}"] = mean_accuracy(run_out, [BYZANTINE])
    losses = [recent_loss(run_out, i) for i in (*HONEST, BYZANTINE)]
    honest = max(losses[:-1])
    ratio = losses[-1] / honest if honest > 0 else math.nan
    outcome.measured[f"loss_ratio_{run}"] = ratio
    outcome.check(ratio >= LOSS_RATIO, f"the poisoned node's training loss is only {ratio:.2f}x "
                  "the honest nodes': it did not train on flipped labels")


def recent_loss(out: Path, node: int) -> float:
    """The node's mean training loss over its last rounds (NaN when it recorded none)."""
    losses = [r["loss"] for r in records(out, node)[-LAST_ROUNDS:] if r.get("loss") is not None]
    return statistics.fmean(losses) if losses else math.nan
