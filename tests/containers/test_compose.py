"""The image and the compose file for real: a 4-node ring in containers on a private engine.

`make_compose.py` (CURVE by default) writes the federation; `docker-compose config` validates
it; `docker-compose up` runs it from the image the project's Dockerfile built, on the compose
network with an explicit subnet. While it trains: every container reports healthy, mounts
exactly its own config, key files and output directory, and runs as uid 10001. Then node 1 is
`docker kill`ed (its health goes unhealthy, it stays down, the others finish every round) and
node 3 is `docker restart`ed (it resumes from its checkpoint; its privacy ledger keeps every
round it had, once, and goes on to the last round).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.tools.compose import CONFIG_PATH, IMAGE_UID, KEYS_PATH, OUT_PATH, key_files
from privacy.ledger import Ledger
from tests.containers.engine import BuiltImage, Engine, requires_root

ROOT = Path(__file__).resolve().parents[2]
NODES, ROUNDS, EPSILON = 4, 45, 8.0
RING = {i: sorted({(i - 1) % NODES, (i + 1) % NODES}) for i in range(NODES)}
KILLED, RESTARTED = 1, 3
PROJECT = f"dpnormtest{os.getpid()}"

pytestmark = [requires_root, pytest.mark.slow]


def free_subnet() -> str:
    """A /24 that no route or address on this host overlaps."""
    used = []
    for args in (["route"], ["addr"]):
        out = subprocess.run(["ip", "-4", *args], capture_output=True, text=True,
                             check=True).stdout
        for word in out.split():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    for k in range(200, 250):
        net = ipaddress.ip_network(f"10.213.{k}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return str(net)
    raise AssertionError("no free 10.213.x.0/24 subnet on this host")


@dataclass
class Federation:
    engine: Engine
    lan: Path
    subnet: str
    ids: dict[int, str] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["docker-compose", "-p", PROJECT, *args], cwd=self.lan,
                              env=self.engine.env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        return proc

    def inspect(self, node: int) -> dict[str, Any]:
        out = self.engine.docker("inspect", self.ids[node]).stdout
        return dict(json.loads(out)[0])

    def health(self, node: int) -> str:
        state = self.inspect(node)["State"]
        return str(state.get("Health", {}).get("Status", "none"))

    def metrics(self, node: int) -> list[dict[str, Any]]:
        path = self.lan / "out" / str(node) / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.endswith("}")]

    def rounds_done(self, node: int) -> int:
        done = self.metrics(node)
        return done[-1]["round"] + 1 if done else 0

    def ledger_rounds(self, node: int) -> list[int]:
        doc = json.loads((self.lan / "out" / str(node) / "privacy_ledger.json").read_text())
        return [int(entry[0]) for entry in doc["rounds"]]


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def federation(engine: Engine, image: BuiltImage,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    lan = tmp_path_factory.mktemp("compose") / "lan"
    subnet = free_subnet()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_compose.py"), "--topology", "ring",
         "--nodes", str(NODES), "--out", str(lan), "--image", image.tag, "--subnet", subnet,
         "--dataset", "synthetic", "--model", "logreg", "--rounds", str(ROUNDS),
         "--epsilon", str(EPSILON), "--examples-per-node", "300", "--test-examples", "200",
         "--round-timeout", "5", "--set", "node.min_round_seconds=1.2",
         "--set", "node.checkpoint_every=2", "--set", "node.down_after=6"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    fed = Federation(engine, lan, subnet)
    try:
        started = time.monotonic()
        fed.compose("up", "-d", "--no-build")
        fed.events["up_seconds"] = time.monotonic() - started
        for i in range(NODES):
            fed.ids[i] = fed.compose("ps", "-q", f"node{i}").stdout.strip()
        yield fed
    finally:
        subprocess.run(["docker-compose", "-p", PROJECT, "down", "-v", "--timeout", "10"],
                       cwd=lan, env=engine.env, capture_output=True, timeout=180, check=False)


def test_compose_file_validates(federation: Federation) -> None:
    config = federation.compose("config").stdout
    doc = yaml.safe_load(config)
    assert sorted(doc["services"]) == [f"node{i}" for i in range(NODES)]
    assert doc["networks"]["dpnorm"]["ipam"]["config"] == [{"subnet": federation.subnet}]


def test_containers_start_on_the_explicit_subnet_and_run_as_non_root(
        federation: Federation, image: BuiltImage) -> None:
    fed = federation
    ready = {}
    for i in range(NODES):
        ready[i] = wait_for(f"node{i} READY",
                            lambda i=i: "READY" in fed.engine.docker("logs", fed.ids[i]).stdout,
                            timeout=120)
    first = ready[0] + fed.events["up_seconds"]
    print(f"\nimage {image.tag}: {image.size_bytes / 1e9:.2f} GB; base root fs "
          f"{image.base_seconds:.0f} s, docker build {image.build_seconds:.0f} s "
          f"({image.steps[0]} of {image.steps[1]} steps cached in the full build); compose up "
          f"{fed.events['up_seconds']:.1f} s; first node READY {first:.1f} s after up")
    subnet = ipaddress.ip_network(fed.subnet)
    for i in range(NODES):
        info = fed.inspect(i)
        assert info["Config"]["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
        status = Path(f"/proc/{info['State']['Pid']}/status").read_text()
        uid_line = next(ln for ln in status.splitlines() if ln.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {str(IMAGE_UID)}, uid_line
        (net,) = info["NetworkSettings"]["Networks"].values()
        assert ipaddress.ip_address(net["IPAddress"]) in subnet


def test_every_container_mounts_only_its_own_files(federation: Federation) -> None:
    fed = federation
    anonymous: list[str] = []
    for i in range(NODES):
        mounts = fed.inspect(i)["Mounts"]
        binds = {m["Destination"]: m for m in mounts if m["Type"] == "bind"}
        expected = {CONFIG_PATH: fed.lan / "configs" / f"{i}.toml",
                    OUT_PATH: fed.lan / "out" / str(i),
                    **{f"{KEYS_PATH}/{name}": fed.lan / "keys" / name
                       for name in key_files(i, RING[i])}}
        assert {d: Path(m["Source"]) for d, m in binds.items()} == expected
        assert {d for d, m in binds.items() if m["RW"]} == {OUT_PATH}
        # The image's other VOLUME paths get empty anonymous volumes of this container only.
        volumes = [m for m in mounts if m["Type"] == "volume"]
        assert {m["Destination"] for m in volumes} <= {"/etc/dpnorm", "/data", "/keys"}
        anonymous += [m["Name"] for m in volumes]
        secrets = [d for d in binds if d.endswith(".secret")]
        assert secrets == [f"{KEYS_PATH}/{i}.secret"]
        print(f"node{i} mounts: " + ", ".join(
            f"{d}{'' if m['RW'] else ':ro'}" for d, m in sorted(binds.items())))
    assert len(anonymous) == len(set(anonymous)), "a volume is shared between containers"


def test_healthy_while_training_then_kill_and_restart(federation: Federation) -> None:
    fed = federation
    waited = wait_for("every node healthy",
                      lambda: all(fed.health(i) == "healthy" for i in range(NODES)),
                      timeout=150)
    # Healthy can come before the first round (a fresh, empty metrics.jsonl counts): wait for
    # training, and it must still say healthy then.
    wait_for("every node training", lambda: all(fed.rounds_done(i) >= 2 for i in range(NODES)),
             timeout=120)
    at_healthy = {i: fed.rounds_done(i) for i in range(NODES)}
    assert [fed.health(i) for i in range(NODES)] == ["healthy"] * NODES
    assert all(r < ROUNDS for r in at_healthy.values()), at_healthy
    print(f"\nall 4 healthy after another {waited:.0f} s; healthy while training at rounds "
          f"{at_healthy}")

    fed.engine.docker("kill", fed.ids[KILLED])
    killed_at = fed.rounds_done(KILLED)
    wait_for("the killed node unhealthy", lambda: fed.health(KILLED) == "unhealthy", timeout=90)
    state = fed.inspect(KILLED)["State"]
    assert not state["Running"] and state["ExitCode"] == 137
    print(f"node{KILLED} killed after round {killed_at}: health {fed.health(KILLED)}, "
          f"exit code {state['ExitCode']}")

    wait_for("node3 past a checkpoint", lambda: fed.rounds_done(RESTARTED) >= killed_at + 3,
             timeout=120)
    before = fed.ledger_rounds(RESTARTED)
    fed.engine.docker("restart", "-t", "30", fed.ids[RESTARTED], timeout=120)
    restarted_at = fed.rounds_done(RESTARTED)
    print(f"node{RESTARTED} restarted after round {restarted_at} "
          f"(ledger rounds 0..{before[-1]})")

    def finished(i: int) -> bool:
        return not fed.inspect(i)["State"]["Running"]

    wait_for("the federation to finish", lambda: all(finished(i) for i in range(NODES)),
             timeout=400)
    for i in (j for j in range(NODES) if j != KILLED):
        state = fed.inspect(i)["State"]
        assert state["ExitCode"] == 0, (i, fed.engine.docker("logs", fed.ids[i]).stderr)
        final = json.loads((fed.lan / "out" / str(i) / "final.json").read_text())
        assert (final["rounds_completed"], final["exit"]) == (ROUNDS, "finished"), (i, final)
        assert [m["round"] for m in fed.metrics(i)][-1] == ROUNDS - 1
    assert fed.rounds_done(KILLED) == killed_at or fed.rounds_done(KILLED) == killed_at + 1
    assert fed.inspect(KILLED)["RestartCount"] == 0  # a killed node stays down

    # The restart resumed: the log says where, the ledger kept every earlier round once and
    # went on to the last one, and it still verifies (checksum, identity).
    log = (fed.lan / "out" / str(RESTARTED) / "node.log").read_text()
    resumed = [int(n) for n in re.findall(r"resuming at round (\d+)", log)]
    stopped = [int(n) for n in re.findall(r"exit: stopped after (\d+) rounds", log)]
    # SIGTERM ends the round under way, so the node may release one or two more than `before`.
    assert len(resumed) == 1 and resumed == stopped and resumed[0] > before[-1], (resumed, log)
    # Rounds the others ran while it restarted are skipped (it rejoins them in step), not
    # released: the ledger has every round it ran, once, and final.json counts the rest.
    after = fed.ledger_rounds(RESTARTED)
    skipped = json.loads((fed.lan / "out" / str(RESTARTED) / "final.json").read_text())[
        "rounds_skipped"]
    ran = {m["round"] for m in fed.metrics(RESTARTED)}
    assert after[:len(before)] == before and after == sorted(set(after)), (before, after)
    assert after[-1] == ROUNDS - 1 and ran <= set(after), (after, ran)
    assert len(ran) + skipped == ROUNDS, (sorted(ran), skipped)
    assert fed.inspect(RESTARTED)["RestartCount"] == 0  # `docker restart`, not a crash loop
    path = fed.lan / "out" / str(RESTARTED) / "privacy_ledger.json"
    identity = json.loads(path.read_text())["identity"]
    assert (identity["node"], identity["epsilon"], identity["mode"]) == (
        RESTARTED, EPSILON, final_mode(fed.lan, RESTARTED))
    Ledger.open(path, identity).close()  # verifies the checksum
    print(f"node{RESTARTED} stopped after {stopped[0]} rounds, resumed at round {resumed[0]}; "
          f"ledger rounds 0..{after[-1]}, each once, {skipped} skipped to rejoin; "
          f"nodes 0, 2, 3 finished {ROUNDS} rounds; "
          f"node{KILLED} stopped after {fed.rounds_done(KILLED)}")


def final_mode(lan: Path, node: int) -> str:
    final = json.loads((lan / "out" / str(node) / "final.json").read_text())
    return str(final["privacy"]["mode"])
