"""Chaos scenarios: real node daemons on 127.0.0.1, faults injected only from outside.

Each scenario starts a small federation with `LocalLaunch`, injects one kind of fault — signals
(SIGKILL, SIGSTOP/SIGCONT, SIGTERM), the seeded fault layer (`[faults]`: loss, duplication,
reordering, jitter, partitions) or a hostile peer process (`tests/faults/hostile_peer.py`) — and
measures what the guarantees in `docs/RELIABILITY.md` promise. It returns an `Outcome`: the
measured numbers and the list of broken guarantees (empty when the scenario passed).

`tests/faults/` asserts on these outcomes; `scripts/chaos.py` prints them as a table. Every
scenario is seeded (which node, which round, which moment) and every wait in it has a deadline;
`quick=True` is the CI size. Nothing here patches the daemon: it only sees processes, files and
sockets.
"""

from __future__ import annotations

import json
import math
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from node.config import RunConfig
from node.daemon_config import FaultSettings
from node.launch_plan import DaemonOptions
from node.launcher import LocalLaunch, read_final
from node.metrics import read_metrics

__all__ = ["SCENARIOS", "Outcome", "run_scenario"]

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_PEER = ROOT / "tests" / "faults" / "hostile_peer.py"
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
    path = out / str(node) / "metrics.jsonl"
    return len(read_metrics(path)) if path.exists() else 0


def records(out: Path, node: int) -> list[dict[str, Any]]:
    path = out / str(node) / "metrics.jsonl"
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
             command: list[str] | None = None) -> Iterator[LocalLaunch]:
    """A started federation that is always stopped (SIGTERM, then SIGKILL) on the way out."""
    launch = LocalLaunch(cfg, out, options, command=command)
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
        outcome.check(info["exit"] == "finished" and
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


# ---- crash and restart --------------------------------------------------------------------


def crash_restart(out: Path, seed: int = 0, quick: bool = True) -> Outcome:
    """SIGKILL a seeded-random node at a seeded-random round, restart it from its checkpoint."""
    from privacy.accountant import Accountant
    from privacy.ledger import Ledger

    rng = random.Random(seed)
    rounds = 150 if quick else 250
    victim = rng.randrange(4)
    kill_round = rng.randint(6, 20)
    outcome = Outcome("crash", "every node finishes; the restarted node's ledger ε covers every "
                      "round it sent, no round is released twice, ε stays within the target")
    # Full batches (q = 1): noise calibration then takes ~1 s instead of ~8 s at start-up,
    # so the restarted node is back while the others still train.
    cfg = base_run(seed, rounds, epsilon=8.0, delta=1e-5, batch_size=600)
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
        rejoined = sum(1 for r in mine[killed_after:] if r["peers_alive"] > 0)
        # Measured, not asserted: whether it is back before the others finish depends on how
        # long a restart takes on this machine (imports + data + calibration, 3-25 s).
        outcome.measured["rounds_with_neighbours_after_restart"] = rejoined
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
    from node.checkpoint import CheckpointError, load_checkpoint

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
    faults = FaultSettings(cuts=cuts, seed=seed)
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

LOSSY = FaultSettings(drop=0.2, duplicate=0.1, reorder=0.2, reorder_ms=30.0, jitter_ms=50.0)
ACCURACY_RUN = {"quick": 80, "full": 150}
# Far above any honest message (dual RMS ~0.05, model RMS < 1), far below an attack.
MAX_NORM = 10.0


def accuracy_run(seed: int, quick: bool) -> RunConfig:
    return base_run(seed, ACCURACY_RUN["quick" if quick else "full"])


def accuracy_node(**extra: Any) -> dict[str, Any]:
    return {**NODE, "max_message_norm": MAX_NORM, **extra}


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
                      "rejected and counted per peer; with max_message_norm the x1e6 duals "
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
                              {**NODE, "max_message_norm": math.inf}, unbounded)
            outcome.measured["accuracy_attacked_without_bound"] = acc
    return outcome


def run_hostile(out: Path, seed: int, quick: bool, node: Mapping[str, Any],
                outcome: Outcome) -> float:
    """One federation with node 3 hostile; checks what the honest nodes counted."""
    cfg = accuracy_run(seed, quick)
    honest = [i for i in range(4) if i != HOSTILE]
    command = [sys.executable, str(HOSTILE_PEER), "--hostile", str(HOSTILE), "--seed",
               str(seed), "--lifetime", "150"]
    with launched(cfg, out, DaemonOptions(node=node), command=command) as launch:
        finish(launch, outcome, 150, nodes=honest)
    outcome.check(not log_crashes(out, honest),
                  f"nodes {log_crashes(out, honest)} logged an unexpected exception")
    worst = max(max_wait(out, i) for i in honest)
    outcome.check(worst <= ROUND_TIMEOUT + SLACK, f"an honest node waited {worst:.2f} s")
    sent_path = out / str(HOSTILE) / "hostile.json"
    if not outcome.check(sent_path.exists(), "the hostile peer left no record of what it sent"):
        return math.nan
    sent: dict[str, dict[str, int]] = json.loads(sent_path.read_text())["sent"]
    bounded = math.isfinite(float(node.get("max_message_norm", math.inf)))
    totals: dict[str, int] = {}
    for target, kinds in sent.items():
        final = read_final(out / target) or {}
        counted = final.get("rejected_messages", {})
        mine = counted.get(str(HOSTILE), {})
        for kind, n in kinds.items():
            totals[kind] = totals.get(kind, 0) + n
            if kind == "stranger":
                got = counted.get("stranger", {}).get("PeerError", 0)
            elif kind == "norm":
                got = mine.get("NormError", 0)
                if not bounded:
                    continue
            else:
                got = mine.get(kind, 0)
            ok = got == n
            outcome.check(ok, f"node {target} counted {got} {kind} from the hostile peer, "
                              f"it sent {n}")
    outcome.measured.update({f"sent_{k}": v for k, v in sorted(totals.items())})
    return mean_accuracy(out, honest)


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
                    outcome.check(exit_reason == "stopped",
                                  f"trial {t}: node {i}'s final.json says {exit_reason!r}")
                    problem = valid_jsonl(run_out / str(i) / "metrics.jsonl")
                    outcome.check(problem is None, f"trial {t}: {problem}")
            outcome.measured[f"sigterm_at_s_{t}"] = moment
        outcome.measured["slowest_exit_s"] = slowest
    return outcome


SCENARIOS: dict[str, Callable[..., Outcome]] = {
    "crash": crash_restart,
    "checkpoint": checkpoint_kills,
    "freeze": freeze,
    "partition": partition,
    "lossy": lossy_links,
    "hostile": hostile_peer,
    "shutdown": shutdown,
}


def run_scenario(name: str, out: Path, seed: int = 0, quick: bool = True,
                 **kwargs: Any) -> Outcome:
    return SCENARIOS[name](out / name, seed=seed, quick=quick, **kwargs)

