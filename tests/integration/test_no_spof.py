"""No single point of failure in a local launch: a node forked by the fork server outlives
its template (killed or SIGTERM'd) and still reports its own exit status; a template SIGKILLed
mid-run stops no node (every node runs every round, each exits 0) and the launcher says so in
one line; after that a restarted node is started as its own `python -m node`.

Time bounds: three templates (~3 s of imports each), a 4-node synthetic federation of 30 rounds
paced at 0.25 s and one of 40 rounds at 0.1 s; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.config import RunConfig
from node.outputs.files import read_metrics
from node.tools.forkserver import ForkedProcess, ForkServer, ForkServerError
from node.tools.local import LocalLaunch
from node.tools.plan import DaemonOptions
from tests.integration.test_forkserver import PROBE, ROOT, assert_named, cmdline

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_node_outlives_its_killed_template_and_its_status_still_arrives(
        tmp_path: Path, sig: int) -> None:
    # Its own template: this one is killed.
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    fs = ForkServer(sys.executable, cwd=ROOT, env=env, log_file=tmp_path / "fs.log", entry=PROBE)
    try:
        assert fs.ready(120), (tmp_path / "fs.log").read_text()
        read, write = os.pipe()
        try:
            child = fs.spawn(["sleep", "4", "3"], write, write)
        finally:
            os.close(write)
            os.close(read)
        os.kill(fs.pid, sig)
        deadline = time.monotonic() + 10
        while fs.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        # A SIGTERM'd template exits in order (0), leaving its nodes to the launcher.
        status = -9 if sig == signal.SIGKILL else 0
        assert fs.lost == f"the fork server (pid {fs.pid}) exited with status {status}"
        assert child.poll() is None and Path(f"/proc/{child.pid}").exists()
        # Its own status, 3, written by the node itself: nobody is left to reap and report it.
        assert child.wait(30) == 3
        # All it costs: no more forks, with the reason the launcher reports.
        with pytest.raises(ForkServerError, match=f"exited with status {status}"):
            fs.spawn(["exit", "0"], 1, 2, timeout=5)
    finally:
        fs.close()


PACED = RunConfig(topology="ring", nodes=4, rounds=30, dataset="synthetic", model="logreg",
                  lr=0.5, examples_per_node=200, test_examples=200, eval_every=5, threads=1)


def rounds_done(out: Path, node: int) -> int:
    path = out / str(node) / "metrics.jsonl"
    return len(read_metrics(path)) if path.exists() else 0


def test_a_template_killed_mid_run_stops_no_node(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    # 0.25 s per round: the kill below lands after round 3 of 30, well before the end.
    launch = LocalLaunch(PACED, out, DaemonOptions(node={"min_round_seconds": 0.25,
                                                         "round_timeout": 20.0}),
                         fork_server=True)
    try:
        launch.start(timeout=120)
        assert {type(n.proc) for n in launch.nodes} == {ForkedProcess}
        assert_named(launch)
        template = launch.template_pid
        assert template is not None
        deadline = time.monotonic() + 60
        while min(rounds_done(out, i) for i in range(4)) < 3:
            assert time.monotonic() < deadline, "the nodes did not run 3 rounds in 60 s"
            time.sleep(0.05)
        os.kill(template, signal.SIGKILL)
        killed_at = max(rounds_done(out, i) for i in range(4))
        assert killed_at < PACED.rounds
        assert launch.wait(timeout=120), "the federation did not finish"
    finally:
        launch.stop_all(grace=5.0)
    results = launch.results()
    for i in range(4):
        assert launch.processes[i].returncode == 0  # each node's own status, said by itself
        assert results[str(i)]["exit"] == "finished"
        assert [r["round"] for r in read_metrics(out / str(i) / "metrics.jsonl")] \
            == list(range(PACED.rounds))
    assert launch.succeeded()
    # The launcher said what was lost, and what goes on.
    assert f"the fork server (pid {template}) exited with status -9; its 4 node(s) go on" \
        in caplog.text


def test_after_the_template_is_lost_a_restarted_node_runs_as_its_own_process(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    rounds = 40
    # Short deadlines, as in test_daemon_faults: the others go on while node 1 is down.
    node = {"round_timeout": 1.0, "heartbeat_interval": 0.5, "down_after": 3.0,
            "max_missed_deadlines": 2, "checkpoint_every": 5, "min_round_seconds": 0.1}
    launch = LocalLaunch(PACED.replace(rounds=rounds), out, DaemonOptions(node=node),
                         fork_server=True)
    try:
        launch.start(timeout=120)
        template = launch.template_pid
        assert template is not None
        os.kill(template, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while launch.template_pid is not None:
            assert time.monotonic() < deadline, "the launcher did not notice the lost template"
            time.sleep(0.05)
        deadline = time.monotonic() + 60
        while rounds_done(out, 1) < 6:
            assert time.monotonic() < deadline, "node 1 did not run 6 rounds in 60 s"
            time.sleep(0.05)
        launch.kill(1)
        launch.restart(1, timeout=120)
        restarted = launch.nodes[1].proc
        assert isinstance(restarted, subprocess.Popen)  # no template left to fork it from
        assert cmdline(restarted.pid).startswith("dpnorm-node 1 --config ")
        assert launch.wait(timeout=150), "the federation did not finish"
    finally:
        launch.stop_all(grace=5.0)
    results = launch.results()
    for i in range(4):
        assert launch.processes[i].returncode == 0
        assert results[str(i)]["exit"] == "finished"
        assert results[str(i)]["rounds_completed"] == rounds
    assert (f"node 1: the fork server (pid {template}) exited with status -9; starting it as "
            "its own process") in caplog.text
