"""Real daemons on 127.0.0.1 survive a killed and a frozen neighbour (every wait bounded).

Time bounds: each test starts 4 processes (a few seconds of imports each on 2 cores) and runs
120 paced rounds of 0.1 s; each waits at most 150 s in total before failing.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from node.config import RunConfig
from node.outputs.files import read_metrics
from node.tools.local import LocalLaunch
from node.tools.plan import DaemonOptions

pytestmark = pytest.mark.slow

ROUNDS = 120
ROUND_TIMEOUT = 1.0
RUN = RunConfig(topology="ring", nodes=4, rounds=ROUNDS, dataset="synthetic", model="logreg",
                lr=0.5, examples_per_node=300, test_examples=300, eval_every=5, threads=1)
NODE = {"round_timeout": ROUND_TIMEOUT, "heartbeat_interval": 0.5, "down_after": 3.0,
        "max_missed_deadlines": 2, "checkpoint_every": 5, "min_round_seconds": 0.1,
        "startup_timeout": 60.0}


def rounds_done(out: Path, node: int) -> int:
    path = out / str(node) / "metrics.jsonl"
    return len(read_metrics(path)) if path.exists() else 0


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def launch(tmp_path: Path):  # type: ignore[no-untyped-def]
    run = LocalLaunch(RUN, tmp_path / "run", DaemonOptions(node=NODE))
    run.start(timeout=90)
    yield run
    run.stop_all(grace=5.0)


def assert_bounded_waits(out: Path, node: int) -> None:
    # A round never waits for its neighbours past its deadline (plus scheduling slack).
    worst = max(r["wait_seconds"] for r in read_metrics(out / str(node) / "metrics.jsonl"))
    assert worst <= ROUND_TIMEOUT + 0.75, f"node {node} waited {worst:.2f} s in one round"


def test_killed_node_does_not_stall_the_ring_and_rejoins_from_its_checkpoint(
    launch: LocalLaunch,
) -> None:
    out = launch.out
    wait_for(lambda: rounds_done(out, 1) >= 12, 90, "node 1 to run 12 rounds")
    launch.kill(1)
    killed_at = rounds_done(out, 1)
    assert launch.results()["1"]["exit"] == "crashed"
    # The others keep going: at least 10 more rounds each while node 1 is dead.
    others = (0, 2, 3)
    marks = {i: rounds_done(out, i) for i in others}
    wait_for(lambda: all(rounds_done(out, i) >= marks[i] + 10 for i in others), 60,
             "the survivors to run 10 more rounds")
    launch.restart(1, timeout=90)
    assert launch.wait(timeout=120), "the federation did not finish"
    results = launch.results()
    for i in range(4):
        assert launch.processes[i].returncode == 0
        assert results[str(i)]["exit"] == "finished"
        assert results[str(i)]["rounds_completed"] == ROUNDS
        assert_bounded_waits(out, i)
    rounds = [r["round"] for r in read_metrics(out / "1" / "metrics.jsonl")]
    resumed = rounds[killed_at:]
    # It resumed from its last checkpoint (every 5 rounds), not from zero; then, the others
    # being 10+ rounds on, it skipped to their round rather than train alone, and finished.
    log = (out / "1" / "node.log").read_text()
    resumed_at = int(re.findall(r"resuming at round (\d+)", log)[-1])
    assert killed_at - 5 <= resumed_at <= killed_at
    assert resumed and resumed[0] >= min(marks.values()) + 10
    # Not run, over both lives: the rounds between the kill and where it rejoined.
    assert json.loads((out / "1" / "final.json").read_text())["rounds_skipped"] \
        == ROUNDS - len(set(rounds)) == resumed[0] - killed_at
    assert resumed[-1] == ROUNDS - 1
    counters = [r["bytes_sent"] for r in read_metrics(out / "1" / "metrics.jsonl")]
    assert counters == sorted(counters)


def test_frozen_node_catches_up_after_three_deadlines(launch: LocalLaunch) -> None:
    out = launch.out
    wait_for(lambda: rounds_done(out, 2) >= 10, 90, "node 2 to run 10 rounds")
    launch.signal(2, signal.SIGSTOP)
    frozen_at = rounds_done(out, 2)
    time.sleep(3.5 * ROUND_TIMEOUT)
    assert rounds_done(out, 2) == frozen_at
    launch.signal(2, signal.SIGCONT)
    assert launch.wait(timeout=120), "the federation did not finish"
    results = launch.results()
    for i in range(4):
        assert launch.processes[i].returncode == 0
        assert results[str(i)]["exit"] == "finished"
        assert results[str(i)]["rounds_completed"] == ROUNDS
        if i != 2:
            assert_bounded_waits(out, i)
