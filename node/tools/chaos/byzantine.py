"""Byzantine scenarios: a hostile daemon that speaks the real protocol, inside the RMS bound.

Node 3 of the 4-node ring is `hostile_peer --attack MODE` (node.core.attacks): every message it
sends is well formed, for the right round, below `max_message_rms`, and — with CURVE on — from
an authenticated neighbour, so today's validation accepts all of it. Three federations with the
same seed: no attacker, the attack with `robust = off`, the attack with `robust = clip+screen`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

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
    timed,
)
from node.tools.chaos.network import MAX_NORM
from node.tools.local import read_final
from node.tools.plan import DaemonOptions

BYZANTINE = 3
HONEST = [0, 1, 2]


def byzantine(out: Path, seed: int = 0, quick: bool = True, attack: str = "scaled",
              algorithm: str = "dpsgd", curve: bool = True, within: float = 3.0,
              **_: Any) -> Outcome:
    """Node 3 runs `attack`; the defence must keep honest accuracy within `within` points of
    the fault-free run."""
    outcome = Outcome(f"byzantine-{attack}-{algorithm}", "the attack (accepted by every check) "
                      "costs > 5 points without the defence; with clip+screen honest accuracy "
                      f"is within {within:g} points of the fault-free run and the attacker is "
                      "reported by both its neighbours")
    rounds = 60 if quick else 120
    cfg = base_run(seed, rounds, algorithm=algorithm)
    node = {**NODE, "max_message_rms": MAX_NORM}
    options = DaemonOptions(node=node, curve=curve)
    command = [sys.executable, *HOSTILE_PEER, "--hostile", str(BYZANTINE), "--seed", str(seed),
               "--lifetime", "120", "--attack", attack]
    with timed(outcome):
        accuracy: dict[str, float] = {}
        with launched(cfg, out / "clean", options) as launch:
            finish(launch, outcome, 120)
            accuracy["clean"] = mean_accuracy(out / "clean", HONEST)
        for defence in ("off", "clip+screen"):
            run_out = out / defence.replace("+", "-")
            with launched(cfg.replace(robust=defence), run_out, options, command=command) as launch:
                finish(launch, outcome, 120, nodes=HONEST)
            accuracy[defence] = mean_accuracy(run_out, HONEST)
            crashed = log_crashes(run_out, HONEST)
            outcome.check(not crashed, f"nodes {crashed} logged an unexpected exception")
            worst = max(max_wait(run_out, i) for i in HONEST)
            outcome.check(worst <= ROUND_TIMEOUT + SLACK, f"an honest node waited {worst:.2f} s")
            rejected = sum(sum((read_final(run_out / str(i)) or {}).get("rejected_messages", {})
                               .get(str(BYZANTINE), {}).values()) for i in HONEST)
            outcome.check(rejected == 0, f"{rejected} Byzantine messages were rejected: the attack "
                          "must stay inside every check")
            if defence != "off":
                flagged = [i for i in (0, 2)
                           if BYZANTINE in (read_final(run_out / str(i)) or {}).get("suspects", [])]
                outcome.measured["reported_by"] = len(flagged)
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
