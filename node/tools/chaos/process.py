"""Chaos scenarios on processes: crash and restart, kills during checkpoint writes, freeze,
SIGTERM at a random moment.

Same contract as every scenario (see `node.tools.chaos`): real daemons on 127.0.0.1, faults
injected only through signals, and an `Outcome` with the measured numbers.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from pathlib import Path

from node.outputs.files import RunDir
from node.outputs.records import ExitReason
from node.tools.chaos.harness import (
    NODE,
    ROUND_TIMEOUT,
    SLACK,
    START_TIMEOUT,
    Outcome,
    base_run,
    finish,
    launched,
    max_wait,
    records,
    rounds_done,
    timed,
    wait_for,
)
from node.tools.chaos.rejoin import HEARD_SHARE
from node.tools.local import read_final
from node.tools.plan import DaemonOptions

__all__ = ["checkpoint_kills", "crash_restart", "freeze", "shutdown"]


# ---- crash and restart --------------------------------------------------------------------


def crash_restart(out: Path, seed: int = 0, quick: bool = True) -> Outcome:
    """SIGKILL a seeded-random node at a seeded-random round, restart it from its checkpoint."""
    from privacy.accountant import Accountant
    from privacy.ledger import Ledger

    rng = random.Random(seed)
    rounds = 90 if quick else 250
    victim = rng.randrange(4)
    kill_round = rng.randint(6, 20)
    outcome = Outcome("crash", "every node finishes; the restarted node's ledger ε covers every "
                      "round it sent, no round is released twice, ε stays within the target; "
                      "it hears a neighbour in >= 90 % of its rounds after the restart")
    # Large batches (q = 1/2): few, cheap steps, so the restarted node is back while the
    # others still train. (q = 1 is refused under DP: no subsampling, and q ≥ 1 would make
    # the normaliser depend on the data.)
    cfg = base_run(seed, rounds, epsilon=8.0, delta=1e-5, batch_size=300)
    node = {**NODE, "min_round_seconds": 0.2}
    with timed(outcome), launched(cfg, out, DaemonOptions(node=node)) as launch:
        wait_for(lambda: rounds_done(out, victim) >= kill_round, 90,
                 f"node {victim} to reach round {kill_round}")
        launch.kill(victim)
        killed_after = rounds_done(out, victim)
        others = [i for i in range(4) if i != victim]
        marks = {i: rounds_done(out, i) for i in others}
        wait_for(lambda: all(rounds_done(out, i) >= marks[i] + 3 for i in others), 60,
                 "the survivors to run 3 rounds without it")
        launch.restart(victim, timeout=START_TIMEOUT)
        finish(launch, outcome, 150)
        mine = records(out, victim)
        done = [r["round"] for r in mine]
        resumed = done[killed_after:]
        # Of the rounds it ran after the restart while a neighbour was up (the others may
        # have finished before a slow restart), it must hear one in nearly all: it skips to
        # their round instead of training alone (node.tools.chaos.rejoin has the cases).
        up = [r for r in mine[killed_after:] if r["peers_alive"] > 0]
        heard = sum(1 for r in up if r["neighbours_heard"] > 0)
        outcome.measured.update(rounds_with_a_neighbour_up_after_restart=len(up),
                                rounds_with_a_neighbour_heard_after_restart=heard)
        outcome.check(heard >= HEARD_SHARE * len(up),
                      f"node {victim} heard a neighbour in {heard} of the {len(up)} rounds it "
                      "ran with one up after its restart")
        outcome.measured.update(victim=victim, killed_after_round=killed_after - 1,
                                resumed_at_round=resumed[0] if resumed else None)
        outcome.check(done == sorted(set(done)), f"node {victim} ran a round twice: {done}")
        ledger_path = out / str(victim) / "privacy_ledger.json"
        document = json.loads(ledger_path.read_text())
        events = {r: spent for r, spent in document["rounds"]}
        with Ledger.open(ledger_path, document["identity"]) as ledger:  # verifies the checksum
            ledger_rounds = set(ledger.rounds)
            eps_ledger = ledger.epsilon(cfg.delta)
        sent = Accountant()  # ε of the rounds the node is known to have run and sent
        for r in sorted(set(done)):
            for z, q, count in events.get(r, []):
                sent.spend(z, q, count)
        eps_sent = sent.epsilon(cfg.delta)
        final = read_final(out / str(victim)) or {}
        eps_final = final.get("epsilon")
        outcome.measured.update(ledger_rounds=len(ledger_rounds), epsilon_ledger=eps_ledger,
                                epsilon_sent=eps_sent, epsilon_final=eps_final,
                                epsilon_target=cfg.epsilon)
        missing = sorted(set(done) - ledger_rounds)
        outcome.check(not missing, f"rounds {missing} were sent but are not in the ledger")
        outcome.check(eps_ledger >= eps_sent - 1e-9,
                      f"ledger ε {eps_ledger:.4f} < ε of what was sent {eps_sent:.4f}")
        outcome.check(eps_final is not None and abs(eps_final - eps_ledger) < 1e-6,
                      f"final.json ε {eps_final} differs from the ledger's {eps_ledger:.4f}")
        outcome.check(eps_ledger <= cfg.epsilon + 1e-6,
                      f"ε {eps_ledger:.4f} exceeds the target {cfg.epsilon}")
    return outcome


# ---- checkpoints under SIGKILL ------------------------------------------------------------


def checkpoint_kills(out: Path, seed: int = 0, quick: bool = True) -> Outcome:
    """SIGKILL one node again and again while it writes a checkpoint every round."""
    from node.daemon.state import CheckpointError, load_checkpoint

    rng = random.Random(seed)
    kills = 4 if quick else 12
    victim = rng.randrange(3)
    outcome = Outcome("checkpoint", "after every SIGKILL the checkpoint loads (or there is none "
                      "yet): never half-written")
    # A wide MLP makes each checkpoint ~5 MB, so writes take a real share of a round.
    cfg = base_run(seed, 100_000, nodes=3, model="mlp", width=512, eval_every=1000)
    node = {**NODE, "checkpoint_every": 1, "min_round_seconds": 0.05}
    ckpt = out / str(victim) / "checkpoint.npz"
    tmp = ckpt.with_name(f".{ckpt.name}.tmp")
    mid_write = loaded = 0
    rounds_seen: list[int] = []
    with timed(outcome), launched(cfg, out, DaemonOptions(node=node)) as launch:
        k = 0
        # At least `kills` kills, and more (aimed, at most 3x in all) until one has provably
        # landed inside a write: whether a given kill beats the rename is a race by nature.
        while k < kills or (mid_write == 0 and k < 3 * kills):
            before = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
            wait_for(lambda b=before: ckpt.exists() and ckpt.stat().st_mtime_ns != b,  # type: ignore[misc]
                     60, f"node {victim} to write a checkpoint")
            if k % 2 == 0 or k >= kills:
                # Aim inside a write: wait for the temp file to appear, then a random 0–2 ms.
                wait_for(tmp.exists, 30, "a checkpoint write to start", poll=0.0002)
                time.sleep(rng.uniform(0.0, 0.002))
            else:
                time.sleep(rng.uniform(0.0, 0.3))  # any moment of a round
            launch.signal(victim, signal.SIGKILL)
            proc = launch.nodes[victim].proc
            if proc is not None:
                proc.wait(10)
            mid_write += tmp.exists()
            try:
                state = load_checkpoint(ckpt)
            except CheckpointError as exc:
                outcome.check(False, f"kill {k + 1}: {exc}")
            else:
                if state is not None:
                    loaded += 1
                    rounds_seen.append(state.round)
                    outcome.check(state.meta.get("node") == victim,
                                  f"kill {k + 1}: the checkpoint names node "
                                  f"{state.meta.get('node')}")
            launch.stop_all([victim], grace=5.0)
            launch.restart(victim, timeout=START_TIMEOUT)
            k += 1
        # The last restart must resume from that checkpoint and keep going.
        mark = rounds_done(out, victim)
        wait_for(lambda: rounds_done(out, victim) >= mark + 3, 60,
                 f"node {victim} to run after its last restart")
    outcome.measured.update(victim=victim, kills=k, killed_mid_write=mid_write,
                            checkpoints_loaded=loaded,
                            last_checkpoint_round=rounds_seen[-1] if rounds_seen else None)
    outcome.check(loaded == k, f"only {loaded} of {k} kills left a loadable checkpoint")
    outcome.check(mid_write >= 1, "no kill landed inside a checkpoint write (test too weak)")
    return outcome


# ---- freeze -------------------------------------------------------------------------------


def freeze(out: Path, seed: int = 0, quick: bool = True) -> Outcome:
    """SIGSTOP a seeded-random node for several round deadlines, then SIGCONT it."""
    rng = random.Random(seed)
    rounds = 60 if quick else 120
    victim = rng.randrange(4)
    deadlines = rng.randint(3, 5)
    outcome = Outcome("freeze", "the others keep training while it is frozen (no round waits "
                      "past its deadline); after SIGCONT it rejoins and everyone finishes")
    cfg = base_run(seed, rounds)
    with timed(outcome), launched(cfg, out, DaemonOptions(node=NODE)) as launch:
        wait_for(lambda: rounds_done(out, victim) >= 10, 90, f"node {victim} to run 10 rounds")
        launch.signal(victim, signal.SIGSTOP)
        frozen_at = rounds_done(out, victim)
        others = [i for i in range(4) if i != victim]
        marks = {i: rounds_done(out, i) for i in others}
        time.sleep(deadlines * ROUND_TIMEOUT + 0.5)
        progress = min(rounds_done(out, i) - marks[i] for i in others)
        still = rounds_done(out, victim) == frozen_at
        launch.signal(victim, signal.SIGCONT)
        finish(launch, outcome, 120)
        worst = max(max_wait(out, i) for i in others)
        outcome.measured.update(victim=victim, frozen_seconds=deadlines * ROUND_TIMEOUT + 0.5,
                                others_rounds_while_frozen=progress,
                                others_max_wait_s=worst)
        outcome.check(still, f"node {victim} ran rounds while stopped")
        outcome.check(progress >= deadlines - 1,
                      f"the others ran only {progress} rounds in {deadlines} deadlines")
        outcome.check(worst <= ROUND_TIMEOUT + SLACK,
                      f"a survivor waited {worst:.2f} s in one round (deadline {ROUND_TIMEOUT})")
    return outcome


# ---- shutdown -----------------------------------------------------------------------------


def valid_jsonl(path: Path) -> str | None:
    """None if every line of the file is a complete JSON object, else what is wrong."""
    if not path.exists():
        return None
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        return f"{path} ends in a torn line"
    for k, line in enumerate(data.splitlines(), 1):
        try:
            if not isinstance(json.loads(line), dict):
                return f"{path}:{k} is not a JSON object"
        except ValueError:
            return f"{path}:{k} is not valid JSON"
    return None


def shutdown(out: Path, seed: int = 0, quick: bool = True) -> Outcome:
    """SIGTERM every node at one seeded-random moment: all exit fast and leave valid files."""
    rng = random.Random(seed)
    trials = 1 if quick else 3
    outcome = Outcome("shutdown", "after SIGTERM every process exits (status 0) within 5 s and "
                      "every metrics file is valid JSONL to its last line")
    node = {**NODE, "checkpoint_every": 1}
    slowest = 0.0
    with timed(outcome):
        for t in range(trials):
            moment = rng.uniform(0.0, 3.0)
            run_out = out / f"trial{t}"
            with launched(base_run(seed, 1000), run_out, DaemonOptions(node=node)) as launch:
                wait_for(lambda o=run_out: all(rounds_done(o, i) >= 3 for i in range(4)),  # type: ignore[misc]
                         60, "every node to run 3 rounds")
                time.sleep(moment)
                sent = time.monotonic()
                for i in range(4):
                    launch.signal(i, signal.SIGTERM)
                exits: dict[int, float] = {}
                while len(exits) < 4 and time.monotonic() - sent < 15:
                    for i, proc in launch.processes.items():
                        if i not in exits and proc.poll() is not None:
                            exits[i] = time.monotonic() - sent
                    time.sleep(0.01)
                slow = max(exits.values(), default=math.inf) if len(exits) == 4 else math.inf
                slowest = max(slowest, slow)
                outcome.check(slow <= 5.0, f"trial {t}: slowest exit {slow:.2f} s after SIGTERM")
                for i, proc in launch.processes.items():
                    outcome.check(proc.returncode == 0,
                                  f"trial {t}: node {i} exited with {proc.returncode}")
                    exit_reason = (read_final(run_out / str(i)) or {}).get("exit")
                    outcome.check(exit_reason == ExitReason.STOPPED,
                                  f"trial {t}: node {i}'s final.json says {exit_reason!r}")
                    problem = valid_jsonl(RunDir(run_out).metrics(i))
                    outcome.check(problem is None, f"trial {t}: {problem}")
            outcome.measured[f"sigterm_at_s_{t}"] = moment
        outcome.measured["slowest_exit_s"] = slowest
    return outcome
