"""Issue 29 items 1 and 2 with real daemons: a real run's directory survives every refused
command byte for byte, `--force` moves it aside, a node's exit 2 is passed through, and a
metrics port in use is refused before any node starts.

Each federation is 3 logreg nodes on synthetic data, 3 rounds, under --timeout; every
subprocess has a timeout.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "launch_local.py"
RING = ["--topology", "ring", "--nodes", "3", "--rounds", "3", "--dataset", "synthetic",
        "--model", "logreg", "--lr", "0.5", "--examples-per-node", "200",
        "--test-examples", "100", "--epsilon", "2", "--round-timeout", "5", "--timeout", "150",
        "--quiet"]


def _launch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *RING, *args], capture_output=True,
                          text=True, timeout=200, cwd=ROOT)


def hashes(root: Path) -> dict[str, str]:
    """Every entry under `root`: a file's SHA-256, a directory's name."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def free_ports(count: int) -> int:
    """A base port whose `count` successive ports are free now (bound and released)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                socket.create_server(("127.0.0.1", port)).close()
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports found")


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_refused_commands_leave_a_real_run_byte_identical_and_force_moves_it_aside(
        tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = free_ports(3)
    first = _launch("--out", str(out), "--metrics-port", str(base))
    assert first.returncode == 0, first.stderr
    for i in range(3):   # node i served its metrics on BASE + i (one port each)
        assert f"metrics_port = {base + i}\n" in (out / str(i) / "node.toml").read_text()
    before = hashes(out)
    assert any(k.endswith("privacy_ledger.json") for k in before)

    # The same --out again: it used to be wiped, ledgers included.
    again = _launch("--out", str(out))
    assert again.returncode == 2 and "already holds a run" in one_error(again)
    assert hashes(out) == before
    # A bad resume (another ε): it deleted every final.json, rewrote the summary "crashed".
    bad = _launch("--out", str(out), "--resume", "--epsilon", "3")
    assert bad.returncode == 2 and "cannot resume node 0" in one_error(bad)
    assert hashes(out) == before
    # A bad option.
    option = _launch("--out", str(out), "--resume", "--drop", "1.5")
    assert option.returncode == 2 and "drop" in one_error(option)
    assert hashes(out) == before
    # A resume of the finished run: it ran the live view for 60 s and wrote accuracy null.
    done = _launch("--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert "nothing to resume: every node finished" in done.stderr
    assert hashes(out) == before   # no node started: not even a log line was added

    forced = _launch("--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    aside = sorted(out.glob("previous-*"))
    assert len(aside) == 1
    assert hashes(aside[0]) == before   # the whole earlier run, ledgers included, moved
    assert (out / "summary.json").is_file() and (out / "0" / "final.json").is_file()


def test_a_node_that_refuses_to_start_passes_its_exit_2_through(tmp_path: Path) -> None:
    # A cap only a daemon can check (it needs the calibrated noise): every node refuses.
    out = tmp_path / "run"
    proc = _launch("--out", str(out), "--set", "node.lifetime_epsilon=0.5")
    assert proc.returncode == 2, proc.stderr   # it was 1, which --help keeps for failures
    line = one_error(proc)
    assert line.startswith("error: node ") and " refused to start: this run could take " in line
    assert "node.lifetime_epsilon = 0.5" in line


def test_a_metrics_port_in_use_is_refused_before_any_node_starts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = _launch("--out", str(out), "--metrics-port", str(port))
    assert proc.returncode == 2
    line = one_error(proc)
    assert f"node 0's metrics port {port} cannot be used on 127.0.0.1" in line
    assert "--metrics-port" in line
    assert not out.exists()


def test_a_resume_a_node_refuses_after_the_launchers_checks_keeps_the_runs_records(
        tmp_path: Path) -> None:
    # A non-private run resumed for one more round passes every check the launcher can run;
    # the daemons then refuse the lifetime cap (a release without a proven bound has ε = ∞).
    # Nodes stopped while waiting for their neighbours wrote "stopped" over the earlier
    # final.json, and the summary was rewritten: both are put back, byte for byte.
    out = tmp_path / "run"
    plain = [a for a in RING if a not in ("--epsilon", "2")]
    first = subprocess.run([sys.executable, str(SCRIPT), *plain, "--out", str(out)],
                           capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    records = {k: v for k, v in hashes(out).items()
               if not k.endswith((".log", "node.toml"))}   # the logs say why it stopped
    again = subprocess.run([sys.executable, str(SCRIPT), *plain, "--rounds", "4", "--resume",
                            "--set", "node.lifetime_epsilon=5", "--out", str(out)],
                           capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert again.returncode == 2, again.stderr
    assert "refused to start" in one_error(again)
    after = {k: v for k, v in hashes(out).items() if not k.endswith((".log", "node.toml"))}
    assert after == records
