"""Six real daemons on six "hosts" (Linux network namespaces), CURVE on, wired as a ring by the
configs and keys that scripts/make_compose.py writes: as generated for compose (neighbours by
service name, node0..node5 resolving inside the namespaces) and with --hosts (real addresses).

    site A (bridge): nodes 0, 1, 2   ══ trunk ══   site B (bridge): nodes 3, 4, 5
    ring edges 0-1, 1-2, 3-4, 4-5 stay inside a site; 2-3 and 5-0 cross the trunk

Each node gets exactly the key files its container would mount (read from the compose file) and
runs `python -m node` with matplotlib made unimportable, as in the image. Checks:
- the run finishes (every node exits 0 after all its rounds);
- `ip link set trunkA down` for several rounds splits the ring into {0,1,2} and {3,4,5}: the four
  nodes on a cut edge see one peer alive, and both halves keep completing rounds; after the link
  comes back the cut edges are heard from again (peers_alive back to 2, "neighbour j is back");
- with a 1 Mbit/s token bucket on node 1's link (both directions) the run still finishes, and
  the bucket really throttled its traffic;
- the Dockerfile's HEALTHCHECK command passes against a live node and fails where none listens.

Every wait has a deadline; every namespace (and with it every veth, bridge and qdisc) is deleted
afterwards, also on failure. Budget on 2 busy cores: about 1.5 minutes for the module.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lan.netns import Lan, sweep_stale, unavailable

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(Path(sys.executable).absolute())
MAKE_COMPOSE = ROOT / "scripts" / "make_compose.py"
NODES = 6
SITES = ([0, 1, 2], [3, 4, 5])
CROSS = {2: 3, 3: 2, 5: 0, 0: 5}  # node -> its neighbour across the trunk
# `python -m node`, but with matplotlib unimportable: the image leaves it out.
RUN_NODE = ("import runpy, sys; sys.modules['matplotlib'] = None; sys.argv[0] = 'dpnorm-node'; "
            "runpy.run_module('node', run_name='__main__', alter_sys=True)")

REASON = unavailable()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(REASON is not None, reason=f"LAN test skipped: {REASON}")]


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    sweep_stale()  # a killed earlier run cannot clean up after itself
    net = Lan(f"dpn{os.getpid()}", SITES)
    try:
        yield net.build()
    finally:
        net.close()
        assert not net.leftovers(), f"namespaces left behind: {net.leftovers()}"


def make_lan_dir(out: Path, rounds: int, *extra: str) -> Path:
    args = [PYTHON, str(MAKE_COMPOSE), "--out", str(out), "--curve",
            "--topology", "ring", "--nodes", str(NODES), "--rounds", str(rounds),
            "--dataset", "synthetic", "--model", "logreg", "--lr", "0.5",
            "--examples-per-node", "200", "--test-examples", "200", "--epsilon", "inf",
            "--set", "node.heartbeat_interval=0.5", "--set", "node.startup_timeout=60",
            "--set", "node.checkpoint_every=1000", *extra]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return out


def mounted_keys(lan_dir: Path, node: int, dest: Path) -> Path:
    """Copy the key files node's container would mount (per the compose file) into `dest`."""
    compose = yaml.safe_load((lan_dir / "docker-compose.yml").read_text())
    dest.mkdir(parents=True)
    for volume in compose["services"][f"node{node}"]["volumes"]:
        if volume["target"].startswith("/keys/"):
            shutil.copy2(lan_dir / volume["source"], dest / Path(volume["target"]).name)
    return dest


class Federation:
    """The six daemons, each in its namespace. `stop()` kills whatever still runs."""

    def __init__(self, lan: Lan, lan_dir: Path, out: Path) -> None:
        self.lan, self.lan_dir, self.out = lan, lan_dir, out
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT)}
        for i in range(NODES):
            node_out = out / str(i)
            node_out.mkdir(parents=True)
            keys = mounted_keys(lan_dir, i, out / f"keys{i}")
            cmd = ["ip", "netns", "exec", lan.ns(i), PYTHON, "-c", RUN_NODE,
                   "--config", str(lan_dir / "configs" / f"{i}.toml"),
                   "--set", f"node.out={node_out}", "--set", f"node.curve_keys={keys}"]
            with open(node_out / "stdout.log", "wb") as so, \
                    open(node_out / "stderr.log", "wb") as se:
                self.procs[i] = subprocess.Popen(cmd, stdout=so, stderr=se, cwd=ROOT, env=env,
                                                 stdin=subprocess.DEVNULL,
                                                 start_new_session=True)

    def text(self, node: int, name: str) -> str:
        path = self.out / str(node) / name
        return path.read_text(errors="replace") if path.exists() else ""

    def records(self, node: int) -> list[dict[str, Any]]:
        """Complete metrics lines only (a line being written is skipped)."""
        lines = self.text(node, "metrics.jsonl").split("\n")[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def diagnose(self) -> str:
        parts = []
        for i, p in self.procs.items():
            recs = self.records(i)
            last = recs[-1] if recs else {}
            err = self.text(i, "stderr.log")[-300:]
            parts.append(f"node {i}: rc={p.poll()} rounds={len(recs)} "
                         f"peers={last.get('peers_alive')} stderr={err!r}")
        return "\n".join(parts)

    def wait_for(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            crashed = {i: p.returncode for i, p in self.procs.items()
                       if p.poll() not in (None, 0)}
            assert not crashed, f"node(s) failed while waiting for {what}:\n{self.diagnose()}"
            assert time.monotonic() < deadline, \
                f"timed out after {timeout:.0f} s waiting for {what}:\n{self.diagnose()}"
            time.sleep(0.2)

    def wait_ready(self, timeout: float = 90) -> None:
        self.wait_for("READY from every node",
                      lambda: all("READY " in self.text(i, "stdout.log") for i in self.procs),
                      timeout)

    def wait_exit(self, timeout: float) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"nodes still running after {timeout:.0f} s:\n{self.diagnose()}")
        return {i: p.returncode for i, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs.values():
            p.wait(timeout=10)


@pytest.fixture
def federation(lan: Lan, tmp_path: Path) -> Iterator[Callable[..., Federation]]:
    started: list[Federation] = []

    def start(rounds: int, *extra: str, by_address: bool = False) -> Federation:
        if by_address:  # as on separate hosts: --hosts with each node's real address
            extra = ("--hosts", ",".join(Lan.address(i) for i in range(NODES)), *extra)
        lan_dir = make_lan_dir(tmp_path / "lan", rounds, *extra)
        fed = Federation(lan, lan_dir, tmp_path / "run")
        started.append(fed)
        return fed

    try:
        yield start
    finally:
        for fed in started:
            fed.stop()
        lan.set_trunk(up=True)


def check_finished(fed: Federation, rounds: int, timeout: float) -> None:
    codes = fed.wait_exit(timeout)
    assert all(code == 0 for code in codes.values()), fed.diagnose()
    for i in range(NODES):
        final = json.loads(fed.text(i, "final.json"))
        assert final["exit"] == "finished" and final["rounds_completed"] == rounds, (i, final)
        assert "runs without CURVE" not in fed.text(i, "node.log")
        records = fed.records(i)
        assert [r["round"] for r in records] == list(range(rounds))
        assert all(math.isfinite(r["loss"]) for r in records)


def test_partitioned_ring_keeps_training_and_heals(federation: Callable[..., Federation],
                                                   lan: Lan, tmp_path: Path) -> None:
    rounds = 60
    fed = federation(rounds, "--round-timeout", "1.5", "--set", "node.down_after=2",
                     "--set", "node.max_missed_deadlines=2",
                     "--set", "node.min_round_seconds=0.5")
    config = (tmp_path / "lan" / "configs" / "2.toml").read_text()
    assert '"3" = "tcp://node3:7000"' in config  # the compose configs as they are: service names
    fed.wait_ready()
    # Nodes start seconds apart on a busy machine; wait until the whole ring is in step (every
    # node's last three rounds heard both neighbours) before cutting anything.
    fed.wait_for("a steady ring", lambda: all(
        len(recs) >= 4 and all(r["peers_alive"] == 2 for r in recs[-3:])
        for recs in map(fed.records, range(NODES))), 60)

    cut_at = time.time()
    lan.set_trunk(up=False)
    at_cut = {i: len(fed.records(i)) for i in range(NODES)}

    def after(i: int, since: float) -> list[dict[str, Any]]:
        return [r for r in fed.records(i) if r["time"] > since]

    # The cut edges' four ends notice (one peer left), and both halves keep training. Held at
    # least 7 s: longer than ZMTP's 5 s heartbeat timeout, so the TCP connections are dropped and
    # must be re-established afterwards, not merely resumed.
    fed.wait_for("the partition to be noticed", lambda: all(
        any(r["peers_alive"] == 1 for r in after(i, cut_at)) for i in CROSS), 30)
    fed.wait_for("several rounds on both sides of the cut", lambda: (
        time.time() - cut_at > 7 and all(len(fed.records(i)) >= at_cut[i] + 5
                                         for i in range(NODES))), 40)
    heal_at = time.time()
    lan.set_trunk(up=True)
    during = {i: [r for r in fed.records(i) if cut_at < r["time"] <= heal_at]
              for i in range(NODES)}
    for i in range(NODES):
        assert len(during[i]) >= 4, (i, len(during[i]))
        assert all(math.isfinite(r["loss"]) for r in during[i])
    for side in SITES:  # each half trained: its rounds advanced while the other was unreachable
        assert sum(len(during[i]) for i in side) >= 12

    fed.wait_for("the cut edges to come back", lambda: all(
        any(r["peers_alive"] == 2 for r in after(i, heal_at)) for i in CROSS), 40)
    for i, j in CROSS.items():
        log = fed.text(i, "node.log")
        assert f"neighbour {j} is down" in log and f"neighbour {j} is back" in log, (i, j)
        assert not re.search(r"refused a CURVE client", log), (i, "unexpected CURVE refusal")
    assert all(len(fed.records(i)) < rounds for i in CROSS), "too few rounds left after healing"
    check_finished(fed, rounds, timeout=90)


def dockerfile_healthcheck() -> str:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK"))
    return line.split(" CMD ", 1)[1].strip()


def test_bandwidth_limited_link_still_finishes(federation: Callable[..., Federation],
                                               lan: Lan) -> None:
    rounds = 12
    lan.limit(1)  # 1 Mbit/s both ways; logreg's dual is 31 KB, so ≥ 0.5 s per round on node 1
    try:
        fed = federation(rounds, "--round-timeout", "5", by_address=True)
        assert '"2" = "tcp://10.77.0.3:7000"' in (fed.lan_dir / "configs" / "1.toml").read_text()
        bandwidth_limited_run(fed, lan, rounds)
    finally:
        lan.unlimit(1)


def bandwidth_limited_run(fed: Federation, lan: Lan, rounds: int) -> None:
    fed.wait_ready()

    # The image's HEALTHCHECK command, as docker would run it, against live node 0.
    health = dockerfile_healthcheck()
    env = {**os.environ, "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}",
           "DPNORM_PORT": "7000", "DPNORM_OUT": str(fed.out / "0"),
           "DPNORM_HEALTH_MAX_AGE": "600"}
    probe = ["ip", "netns", "exec", lan.ns(0), "sh", "-c", health]
    assert subprocess.run(probe, env=env, timeout=30).returncode == 0
    assert subprocess.run(probe, env={**env, "DPNORM_PORT": "7999"}, timeout=30,
                          capture_output=True).returncode != 0

    check_finished(fed, rounds, timeout=120)
    stats = lan.qdisc_stats(1)
    sent = re.search(r"Sent (\d+) bytes .*overlimits (\d+)", stats)
    assert sent is not None, stats
    assert int(sent.group(1)) > rounds * 2 * 31_000 and int(sent.group(2)) > 0, stats
    # Round 0 includes start-up; after it, node 1's 62 KB per round need ≥ 0.5 s at 1 Mbit/s.
    later = fed.records(1)[1:]
    assert sum(r["round_seconds"] for r in later) / len(later) > 0.25, "the bucket did not bite"
