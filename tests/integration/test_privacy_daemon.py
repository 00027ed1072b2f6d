"""The privacy ledger with real processes: a crash between the ledger write and the send, a
ledger that must not be trusted, and a daemon that runs out of budget.

1. A driver built like `node/daemon/main.py` (build_daemon_node, NodeRunner, Ledger, resume)
   runs rounds "record, then send" against a file sink and SIGKILLs itself right after
   `ledger.record` of one round. The ledger on disk then accounts for at least everything that
   was sent, and a restarted node resumes *after* the recorded round instead of releasing it
   again with fresh noise.
2. `python -m node` refuses a corrupt ledger and one that belongs to another node or config —
   also one written for another schedule (rounds), whose noise was calibrated for it: exit 2,
   one sentence, and the ledger file is left exactly as it was (never reset).
3. Two daemons; node 0's ledger already holds most of its budget: it stops with exit reason
   `budget`, ε ≤ target, and says BYE, which node 1 logs before finishing on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from node.config import RunConfig
from node.core.assemble import build_graph
from node.core.mechanism import Mechanism
from node.core.privacy_plan import privacy_plan
from node.core.runner import NodeRunner
from node.daemon.main import build_daemon_node
from node.daemon.settings import NodeConfig, NodeSettings, load_node_config, render_toml
from node.daemon.state import ledger_identity, resume
from node.outputs.files import read_metrics
from node.tools.local import DaemonOptions, LocalLaunch, read_final
from privacy.accountant import Accountant
from privacy.errors import LedgerError, PrivacyError
from privacy.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
RUN = RunConfig(topology="ring", nodes=3, rounds=6, dataset="synthetic", model="logreg",
                lr=0.5, batch_size=16, examples_per_node=200, test_examples=100, epsilon=4.0,
                threads=1)
CRASH_AFTER = 2   # the driver dies right after recording this round, before sending it

# What node/__main__.py does before the daemon's loop, then the loop's privacy skeleton:
# over_budget → step → ledger.record (durable) → send. The "send" appends to a sink file.
DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from node.daemon.settings import load_node_config
    from node.core.assemble import build_graph
    from node.core.privacy_plan import privacy_plan
    from node.daemon.main import build_daemon_node
    from node.core.runner import NodeRunner
    from node.daemon.state import ledger_identity, resume
    from privacy.ledger import Ledger

    config, crash_after, sink = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    cfg = load_node_config(config)
    setup = build_daemon_node(cfg)
    runner = NodeRunner(cfg.run, setup)
    ledger = Ledger.open(Path(cfg.node.out) / "privacy_ledger.json",
                         ledger_identity(cfg, setup.plan))
    resume(runner, cfg, ledger)
    active = set(setup.neighbours)
    while runner.round < cfg.run.rounds and not runner.over_budget():
        r = runner.round
        out = runner.step(active)
        ledger.record(r, out.releases)
        if r == crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
        with sink.open("a") as f:
            line = {"round": r, "events": out.releases, "to": sorted(out.duals)}
            f.write(json.dumps(line) + "\\n")
            f.flush()
            os.fsync(f.fileno())
""")


def _node_config(tmp_path: Path, node: int = 0, run: RunConfig = RUN) -> Path:
    """A daemon config for `node` of RUN's ring (the neighbours' endpoints are never dialled)."""
    settings = NodeSettings(id=node, out=str(tmp_path / f"node{node}"), startup_timeout=5.0)
    ring = {0: (1, 2), 1: (0, 2), 2: (0, 1)}[node]
    path = tmp_path / f"node{node}.toml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(render_toml(run, settings, {j: f"tcp://127.0.0.1:{9 + j}" for j in ring}))
    return path


def _identity(cfg: NodeConfig, plan: Mechanism) -> dict[str, Any]:
    # The daemon's own: the ledger refuses any other identity.
    return ledger_identity(cfg, plan)


def test_crash_between_ledger_write_and_send_never_under_counts_or_replays(
    tmp_path: Path,
) -> None:
    config = _node_config(tmp_path)
    driver, sink = tmp_path / "driver.py", tmp_path / "sent.jsonl"
    driver.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(driver), str(config), str(CRASH_AFTER), str(sink)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=ENV)
    assert proc.returncode == -9, proc.stderr   # SIGKILL: no handler, no flush, no cleanup

    sent = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [m["round"] for m in sent] == list(range(CRASH_AFTER))
    cfg = load_node_config(config)
    setup = build_daemon_node(cfg)
    ledger = Ledger.open(Path(cfg.node.out) / "privacy_ledger.json",
                         _identity(cfg, setup.plan))
    try:
        # The recorded-but-unsent round is on disk: the ledger over-counts, never under-counts.
        assert ledger.rounds == list(range(CRASH_AFTER + 1))
        sent_spend = Accountant()
        for message in sent:
            for z, q, count in message["events"]:
                sent_spend.spend(z, q, count)
        delta = cfg.run.delta
        assert ledger.epsilon(delta) > sent_spend.epsilon(delta) > 0

        # The restarted node resumes after the recorded round: it never draws new noise for it.
        runner = NodeRunner(cfg.run, setup)
        resume(runner, cfg, ledger)
        assert runner.round == CRASH_AFTER + 1
        assert runner.accountant.epsilon(delta) == ledger.epsilon(delta)
        with pytest.raises(PrivacyError, match="already released"):
            ledger.record(CRASH_AFTER, runner.next_releases())
        active = set(setup.neighbours)
        while runner.round < cfg.run.rounds and not runner.over_budget():
            r = runner.round
            ledger.record(r, runner.step(active).releases)
        # Calibrated for all R rounds, the lost round included: the run still fits its budget.
        assert ledger.rounds == list(range(cfg.run.rounds))
        assert ledger.epsilon(delta) <= cfg.run.epsilon
    finally:
        ledger.close()


def _write_ledger(path: Path, identity: dict[str, Any], rounds: int) -> bytes:
    with Ledger.open(path, identity) as ledger:
        for r in range(rounds):
            ledger.record(r, [(1.0, 0.08, 1)])
    return path.read_bytes()


def test_node_refuses_a_corrupt_or_foreign_ledger_without_resetting_it(tmp_path: Path) -> None:
    probe = load_node_config(_node_config(tmp_path / "probe"))
    identity = _identity(probe, privacy_plan(RUN, build_graph(RUN), 0, RUN.examples_per_node))
    cases: list[tuple[Path, Path, bytes, str]] = []

    config = _node_config(tmp_path / "corrupt")
    ledger = Path(load_node_config(config).node.out) / "privacy_ledger.json"
    good = _write_ledger(ledger, identity, 2)
    bad = good.replace(b"[[0,", b"[[7,", 1)          # an edited spend: the checksum breaks
    assert bad != good
    ledger.write_bytes(bad)
    cases.append((config, ledger, bad, "damaged"))

    config = _node_config(tmp_path / "foreign")
    ledger = Path(load_node_config(config).node.out) / "privacy_ledger.json"
    cases.append((config, ledger, _write_ledger(ledger, {**identity, "node": 1}, 3),
                  "another node"))

    # A restart that changes the schedule z* was calibrated from, after rounds were released.
    config = _node_config(tmp_path / "rounds", run=RUN.replace(rounds=2 * RUN.rounds))
    ledger = Path(load_node_config(config).node.out) / "privacy_ledger.json"
    cases.append((config, ledger, _write_ledger(ledger, identity, 3),
                  f"rounds {RUN.rounds} ≠ {2 * RUN.rounds}"))

    # The daemon's CLI; started together, since each needs a few seconds of imports.
    procs = [subprocess.Popen([sys.executable, "-m", "node", "--config", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, env=ENV)
             for config, *_ in cases]
    for proc, (_, ledger, before, fragment) in zip(procs, cases, strict=True):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        assert "Traceback" not in stderr and "READY" not in stdout, stderr
        # The sentence is the last line (the console log handler may echo it above).
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: The privacy ledger ") and fragment in last, stderr
        assert last.count(". ") == 0 and last.endswith("."), last   # one sentence
        assert ledger.read_bytes() == before, "a refused ledger must be left as it was"

    # The same refusal, in process, for a truncated file and for another configuration.
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(LedgerError, match="not valid JSON"):
        Ledger.open(truncated, identity)
    other_config = tmp_path / "eps8.json"
    _write_ledger(other_config, {**identity, "epsilon": 8.0}, 1)
    with pytest.raises(LedgerError, match="another node or configuration"):
        Ledger.open(other_config, identity)
    schedule = tmp_path / "rounds.json"
    _write_ledger(schedule, identity, 1)
    longer = RUN.replace(rounds=2 * RUN.rounds)
    longer_cfg = load_node_config(_node_config(tmp_path / "longer", run=longer))
    plan = privacy_plan(longer, build_graph(longer), 0, RUN.examples_per_node)
    with pytest.raises(LedgerError, match=f"rounds {RUN.rounds} ≠ {2 * RUN.rounds}"):
        Ledger.open(schedule, _identity(longer_cfg, plan))
    assert truncated.read_bytes() == good[: len(good) // 2]


@pytest.mark.slow   # two real daemons: ~15 s on a shared 2-core machine
def test_daemon_out_of_budget_stops_says_bye_and_exits_budget(tmp_path: Path) -> None:
    run = RunConfig(topology="line", nodes=2, rounds=6, dataset="synthetic", model="logreg",
                    lr=0.5, batch_size=16, examples_per_node=200, test_examples=100,
                    epsilon=4.0, threads=1, primal_every=0)
    node = {"round_timeout": 2.0, "heartbeat_interval": 0.5, "down_after": 3.0,
            "startup_timeout": 60.0}
    launch = LocalLaunch(run, tmp_path / "run", DaemonOptions(node=node))
    # Both nodes have the same shard size and degree, hence the same calibrated plan.
    plan = privacy_plan(run, build_graph(run), 0, 200)
    # Both nodes already released round 0 (so both resume at round 1, in step). Node 0's
    # ledger also holds 3 earlier releases at its calibrated z, so it cannot finish.
    for n, extra in zip(launch.nodes, (3, 0), strict=True):
        cfg = load_node_config(n.config)
        with Ledger.open(n.out / "privacy_ledger.json", _identity(cfg, plan)) as ledger:
            ledger.record(0, [(plan.noise_multiplier, plan.sample_rate, 1 + extra)])
    try:
        launch.start(timeout=90)
        assert launch.wait(timeout=120), "the daemons did not finish"
    finally:
        launch.stop_all(grace=5.0)
    finals = [read_final(n.out) for n in launch.nodes]
    assert all(f is not None for f in finals)
    f0, f1 = finals
    assert f0 is not None and f1 is not None
    assert launch.processes[0].returncode == 0 and f0["exit"] == "budget"
    assert 0 < f0["epsilon"] <= run.epsilon
    assert f0["rounds_completed"] < run.rounds
    # What it spent is what its ledger holds, and no later round was released.
    records = read_metrics(launch.nodes[0].out / "metrics.jsonl")
    assert records and all(r["epsilon"] is not None for r in records)
    assert records[-1]["round"] == f0["rounds_completed"] - 1
    with Ledger.open(launch.nodes[0].out / "privacy_ledger.json",
                     _identity(load_node_config(launch.nodes[0].config), plan)) as ledger:
        assert ledger.rounds[-1] == f0["rounds_completed"] - 1
        assert ledger.epsilon(run.delta) == pytest.approx(f0["epsilon"], rel=1e-12)
    # Node 1 heard the BYE and finished its own rounds.
    log = (launch.nodes[1].out / "node.log").read_text()
    assert "neighbour 0 is down (bye)" in log, log[-2000:]
    assert launch.processes[1].returncode == 0 and f1["exit"] == "finished"
    assert f1["rounds_completed"] == run.rounds
