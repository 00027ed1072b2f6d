"""scripts/launch_local.py end to end: real daemons on 127.0.0.1, contract files, bad input.

Time bounds: each federation is 4 processes (a few seconds of imports each on 2 cores) running
5 rounds of logreg on synthetic data with a 5 s round deadline; every subprocess call has a
timeout, and the launcher itself runs under --timeout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from node.experiments.grid import plot_run
from node.outputs.files import read_metrics
from node.tools.live import MetricsTail

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "launch_local.py"
RECORD_KEYS = {
    "round", "node", "time", "loss", "accuracy", "auroc", "balanced_accuracy", "dual_norm",
    "consensus_distance", "epsilon", "lifetime_epsilon", "bytes_sent", "bytes_received",
    "peers_alive", "neighbours_heard", "round_seconds", "compute_seconds", "wait_seconds",
    "suspects",
}
NODE_KEYS = {"accuracy", "auroc", "balanced_accuracy", "loss", "epsilon", "lifetime_epsilon",
             "bytes_sent", "rounds_completed", "exit"}
SMALL = ["--nodes", "4", "--rounds", "5", "--dataset", "synthetic", "--model", "logreg",
         "--lr", "0.5", "--examples-per-node", "200", "--test-examples", "200",
         "--round-timeout", "5", "--timeout", "150"]


def launch_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def script_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("launch_local", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rounds_done(node_dir: Path) -> int:
    path = node_dir / "metrics.jsonl"
    return len(read_metrics(path)) if path.exists() else 0


def check_run(out: Path, rounds: int, degree: int, private: bool) -> None:
    """Every contract file is there and tells one consistent story."""
    summary = json.loads((out / "summary.json").read_text())
    ids = [str(i) for i in range(4)]
    assert summary["rounds"] == rounds and sorted(summary["nodes"]) == ids
    assert {"mean_accuracy", "max_epsilon", "wall_seconds", "config"} <= set(summary)
    assert 0 < summary["startup_seconds"] < summary["wall_seconds"]  # launch → every READY
    assert summary["config"]["nodes"] == 4
    endpoints = json.loads((out / "endpoints.json").read_text())
    assert sorted(endpoints) == ids
    assert all(re.fullmatch(r"tcp://127\.0\.0\.1:\d+", ep) for ep in endpoints.values())
    assert len(set(endpoints.values())) == 4
    for node in ids:
        info = summary["nodes"][node]
        assert set(info) == NODE_KEYS
        assert info["exit"] == "finished" and info["rounds_completed"] == rounds
        final = json.loads((out / node / "final.json").read_text())
        assert {k: final[k] for k in NODE_KEYS} == info
        # Bytes, not KiB: a daemon with torch loaded holds well over 50 MB.
        assert isinstance(final["peak_rss_bytes"], int) and final["peak_rss_bytes"] > 50 * 2**20
        assert (out / node / "node.toml").is_file() and (out / node / "node.log").is_file()
        records = read_metrics(out / node / "metrics.jsonl")
        assert [r["round"] for r in records] == list(range(rounds))
        for r in records:
            assert set(r) == RECORD_KEYS and r["node"] == int(node)
            # In the last round a faster neighbour may already have said BYE (it finished).
            assert r["peers_alive"] == degree or r["round"] == rounds - 1
            assert (r["epsilon"] is not None) == private
        for key in ("time", "bytes_sent", "bytes_received") + (("epsilon",) if private else ()):
            values = [r[key] for r in records]
            assert values == sorted(values), (node, key)
        assert records[0]["bytes_sent"] > 0 and records[-1]["bytes_received"] > 0
        assert info["bytes_sent"] >= records[-1]["bytes_sent"]
    if private:
        assert 0 < summary["max_epsilon"] <= 8.0
        assert set(summary["config"]["noise_multiplier"]) == set(ids)
    else:
        assert summary["max_epsilon"] is None
    assert summary["mean_accuracy"] > 0.1  # better than chance on 10 classes


@pytest.mark.slow
@pytest.mark.parametrize(("topology", "degree", "privacy"),
                         [("ring", 2, []), ("mesh", 3, ["--epsilon", "8"])])
def test_federation_finishes_and_writes_consistent_contract_files(
    tmp_path: Path, topology: str, degree: int, privacy: list[str],
) -> None:
    out = tmp_path / "run"
    proc = launch_cli("--topology", topology, *SMALL, *privacy, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    brief = json.loads(proc.stdout.strip().splitlines()[-1])
    assert brief["rounds"] == 5
    check_run(out, rounds=5, degree=degree, private=bool(privacy))
    written = plot_run(out)
    assert {p.name for p in written} == {"accuracy.png", "dual_norm.png", "loss.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_the_live_view_reads_only_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail({0: path})
    assert tail.poll() == {}  # no file yet
    path.write_text(json.dumps({"round": 0, "accuracy": 0.5}) + "\n" + '{"round": 1, "acc')
    assert tail.poll()[0]["round"] == 0
    with path.open("a") as f:
        f.write('uracy": null}\n')
    assert tail.poll()[0] == {"round": 1, "accuracy": None}
    assert tail.last_accuracy[0] == 0.5  # a round without evaluation keeps the last accuracy


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--topology", "rign"], "unknown topology"),
        (["--lr", "0"], "lr"),
        (["--round-timeout", "-1"], "round_timeout"),
        (["--wire-dtype", "int8"], "wire-dtype"),
        (["--drop", "1.5"], "drop"),
        (["--cut", "5:2:0-1"], "cut"),
        (["--cut", "1:2:0-9"], "outside"),
        (["--set", "node.bogus=1"], "node.bogus"),
        (["--set", "node.listen=tcp://127.0.0.1:5"], "launcher sets node.listen"),
        (["--set", "lr"], "key=value"),
        (["--epsilon", "1", "--delta", "0.5"], "δ"),
        (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent/fmnist"],
         "dataset-fashion-mnist"),
        (["--timeout", "0"], "timeout"),
    ],
)
def test_bad_options_exit_2_with_one_sentence_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str,
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        script_module().main(["--topology", "ring", *SMALL, *args, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert fragment in err
    assert not out.exists(), "nothing may be written or started for bad input"


def test_a_bad_option_on_the_command_line_is_one_sentence(tmp_path: Path) -> None:
    proc = launch_cli("--topology", "ring", "--nodes", "2", "--out", str(tmp_path / "run"),
                      timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "line" in proc.stderr  # the sentence says what to use instead


def test_a_nodes_missing_file_is_refused_before_any_node_starts(tmp_path: Path) -> None:
    # Nodes reading their own files were validated only by each daemon: the node exited 2
    # before READY, after the others had started, and the launcher said 1. It now reads them
    # with the daemon's own reader before starting anything (issue 29).
    out = tmp_path / "run"
    proc = launch_cli("--topology", "ring", *SMALL, "--set",
                      f"node.data_file={tmp_path / 'missing.npz'}", "--out", str(out), "--quiet")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data file "), proc.stderr
    assert "missing.npz does not exist" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_node_and_still_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--topology", "ring", *SMALL, "--rounds", "500", "--set",
            "node.min_round_seconds=0.1", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not all(rounds_done(out / str(i)) >= 2 for i in range(4)):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the nodes never started their rounds"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)  # ≤ 10 s grace plus the summary
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    summary = json.loads((out / "summary.json").read_text())
    for node, info in summary["nodes"].items():
        assert info["exit"] == "stopped", (node, info)
        assert 2 <= info["rounds_completed"] < 500
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert str(out).encode() not in cmdline, "a node outlived the launcher"
