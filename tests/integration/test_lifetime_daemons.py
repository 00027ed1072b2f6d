"""Issue 26 items 3 and 4 with real daemons.

3. The lifetime ledger: a rerun into the same directory (`--force`) adds to the data's spend,
   which lives in the state directory (not in the run directory, not in the installation); its
   ε is the accountant's composition of both runs' releases; the cap refuses a run before it
   writes anything; a SIGKILL right after a round's spend was committed leaves the lifetime
   ledger covering every release sent.
4. The issue's reproduction: a 3-node ring at ε = 2 runs to the end, node 0's ledger is
   removed, the launch is resumed. Node 0's resume is refused, and since issue 29 by the
   launcher itself, before any node starts: every file of the run stays as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node.config import RunConfig
from node.outputs.files import LEDGER, read_metrics
from node.tools.local import DaemonOptions, LocalLaunch
from privacy.accountant import Accountant, Release
from privacy.ledger import read_spend

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "launch_local.py"
RING = ["--topology", "ring", "--nodes", "3", "--rounds", "5", "--dataset", "synthetic",
        "--model", "logreg", "--lr", "0.5", "--examples-per-node", "200",
        "--test-examples", "100", "--epsilon", "2", "--round-timeout", "5", "--timeout", "150",
        "--quiet"]


def _files(root: Path, skip: frozenset[str] = frozenset()) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *RING, *args], capture_output=True,
                          text=True, timeout=200, cwd=ROOT)


def _history(node_dir: Path) -> list[Release]:
    spend = read_spend(node_dir / LEDGER)
    assert spend is not None
    return list(spend[1].history)


def test_a_resume_a_node_would_refuse_is_refused_before_anything_is_touched(
        tmp_path: Path, own_state_dir: Path) -> None:
    out = tmp_path / "run"
    first = _launch("--out", str(out))
    assert first.returncode == 0, first.stderr
    (out / "0" / LEDGER).unlink()
    run, state = _files(out), _files(own_state_dir)

    again = _launch("--out", str(out), "--resume")
    # The launcher runs node 0's own check, reading only: it used to start every node, node 0
    # refused, and the summary was rewritten (issue 26); now nothing starts or changes
    # (issue 29), so the summary still says what the first run proved.
    assert again.returncode == 2, again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot resume node 0"), again.stderr
    assert "records no rounds" in lines[0]
    assert _files(out) == run
    assert _files(own_state_dir) == state


def test_a_rerun_adds_to_the_lifetime_spend_and_the_cap_refuses(
        tmp_path: Path, own_state_dir: Path) -> None:
    cfg = RunConfig(topology="ring", nodes=3, rounds=4, dataset="synthetic", model="logreg",
                    lr=0.5, batch_size=16, examples_per_node=200, test_examples=100,
                    epsilon=2.0, threads=1)
    out = tmp_path / "run"
    runs: list[list[list[Release]]] = []
    for rounds in (4, 6):   # a different schedule, so a different z: a heterogeneous history
        launch = LocalLaunch(cfg.replace(rounds=rounds), out,   # fresh: what --force does
                             DaemonOptions(node={"round_timeout": 10.0}))
        launch.start(timeout=90)
        try:
            assert launch.wait(timeout=120)
        finally:
            launch.stop_all(grace=5.0)
        assert launch.succeeded()
        runs.append([_history(out / str(i)) for i in range(3)])
    for i in range(3):
        final = json.loads((out / str(i) / "final.json").read_text())
        both = Accountant()
        for z, q, count in [*runs[0][i], *runs[1][i]]:
            both.spend(z, q, count)
        assert final["lifetime_epsilon"] > final["epsilon"]
        # The PLD composition of both runs' releases, computed here: the same number.
        assert final["lifetime_epsilon"] == pytest.approx(both.epsilon(cfg.delta), rel=1e-9)
        last = read_metrics(out / str(i) / "metrics.jsonl")[-1]
        assert last["lifetime_epsilon"] == final["lifetime_epsilon"]
        assert "over the lifetime of its data" in (out / str(i) / "stderr.log").read_text()
    # Kept in the state directory: not in the run directory, not in the installation.
    kept = sorted((own_state_dir / "dpnorm" / "lifetime").glob("*.json"))
    assert len(kept) == 3
    for path in kept:
        assert not path.is_relative_to(out) and not path.is_relative_to(ROOT)
        assert not path.is_relative_to(sys.prefix)

    spent = json.loads((out / "0" / "final.json").read_text())["lifetime_epsilon"]
    state = _files(own_state_dir)
    refused = subprocess.run(
        [sys.executable, "-m", "node", "--config", str(out / "0" / "node.toml"),
         "--set", f"node.out={tmp_path / 'third'}",
         "--set", f"node.lifetime_epsilon={spent + 0.1}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "node.lifetime_epsilon" in refused.stderr
    assert _files(own_state_dir) == state and not (tmp_path / "third" / LEDGER).exists()


# The daemon's start (node/daemon/main.py), then rounds "commit, then send" to a sink file; the
# process SIGKILLs itself right after round `crash_after` was committed, before sending it.
DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from node.core.runner import NodeRunner
    from node.daemon.lifetime import open_spend
    from node.daemon.main import build_daemon_node
    from node.daemon.settings import load_node_config
    from node.daemon.state import resume

    config, crash_after, sink = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    cfg = load_node_config(config)
    setup = build_daemon_node(cfg)
    ledger, lifetime = open_spend(cfg, setup)
    runner = NodeRunner(cfg.run, setup, ledger, lifetime)
    resume(runner, cfg, ledger)
    while runner.round < cfg.run.rounds:
        out = runner.step({1, 2})
        if out.round == crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
        with sink.open("a") as f:
            f.write(json.dumps({"round": out.round, "events": out.releases}) + "\\n")
            f.flush()
            os.fsync(f.fileno())
""")


def test_a_crash_leaves_the_lifetime_ledger_covering_every_release_sent(
        tmp_path: Path, own_state_dir: Path) -> None:
    from node.daemon.settings import NodeSettings, render_toml
    from privacy.lifetime import lifetime_history

    run = RunConfig(topology="ring", nodes=3, rounds=6, dataset="synthetic", model="logreg",
                    lr=0.5, batch_size=16, examples_per_node=200, test_examples=100,
                    epsilon=4.0, threads=1)
    config = tmp_path / "node0.toml"
    config.write_text(render_toml(run, NodeSettings(id=0, out=str(tmp_path / "0")),
                                  {1: "tcp://127.0.0.1:9", 2: "tcp://127.0.0.1:10"}))
    driver, sink = tmp_path / "driver.py", tmp_path / "sent.jsonl"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

    def drive(crash_after: int) -> int:
        return subprocess.run([sys.executable, str(driver), str(config), str(crash_after),
                               str(sink)], capture_output=True, text=True, timeout=120,
                              cwd=ROOT, env=env).returncode

    def lifetime() -> list[Release]:
        (path,) = (own_state_dir / "dpnorm" / "lifetime").glob("*.json")
        return lifetime_history(path, path.stem)

    def sent() -> list[Release]:
        return [Release(*e) for line in sink.read_text().splitlines()
                for e in json.loads(line)["events"]]

    def covers(recorded: list[Release], released: list[Release]) -> bool:
        a, b = Accountant(), Accountant()
        for z, q, c in recorded:
            a.spend(z, q, c)
        for z, q, c in released:
            b.spend(z, q, c)
        return a.steps >= b.steps and a.epsilon(run.delta) >= b.epsilon(run.delta)

    assert drive(crash_after=2) == -9
    assert len(sent()) == 2 and len(lifetime()) == 3   # the committed, unsent round counts
    assert covers(lifetime(), sent())
    assert drive(crash_after=-1) == 0   # resumes after the recorded round, to the end
    assert [json.loads(line)["round"] for line in sink.read_text().splitlines()] == \
        [0, 1, 3, 4, 5]
    assert covers(lifetime(), sent()) and len(lifetime()) == 6
