"""node.metrics_port: a real Prometheus server scrapes three live daemons.

Three daemons on 127.0.0.1 (ring, logreg on synthetic data, ε = 8, a fault layer that corrupts
some messages so that receivers reject them) each serve /metrics on a port of their own.
Debian's `prometheus` runs on loopback with the scrape config `make_compose.py --prometheus`
writes (node.tools.monitoring), and its HTTP API must return every dpnorm series, one per node,
with values the nodes also wrote to metrics.jsonl, and no round time (a private run: compute
time follows the Poisson batch, docs/PRIVACY.md). A daemon whose metrics port is taken says
so in one sentence and exits 2 before it is READY; without the port it never imports
prometheus_client.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gossip.faults import FaultConfig
from node.config import RunConfig
from node.tools.compose import to_yaml
from node.tools.monitoring import prometheus_config
from node.tools.plan import DaemonOptions, config_text, node_configs
from tests.containers.engine import requires_root

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
# Synthetic data: its test split is public, so the accuracy is served.
SERIES = ["dpnorm_rounds_completed", "dpnorm_epsilon_spent", "dpnorm_bytes_sent_total",
          "dpnorm_bytes_received_total", "dpnorm_peers_alive", "dpnorm_rejected_messages_total",
          "dpnorm_accuracy"]
WITHHELD = ["dpnorm_round_seconds_bucket", "dpnorm_round_seconds_count"]  # ε = 8

pytestmark = [requires_root, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def query(api: str, expr: str) -> list[dict[str, Any]]:
    data = get_json(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert data["status"] == "success", data
    return list(data["data"]["result"])


def write_configs(tmp: Path, rounds: int, corrupt: float = 0.0) -> tuple[list[Path], list[int]]:
    gossip = [free_port() for _ in range(NODES)]
    metrics = [free_port() for _ in range(NODES)]
    cfg = RunConfig(topology="ring", nodes=NODES, rounds=rounds, model="logreg",
                    dataset="synthetic", examples_per_node=200, test_examples=100, epsilon=8.0,
                    eval_every=2)
    options = DaemonOptions(node={"min_round_seconds": 0.5, "round_timeout": 5.0},
                            faults=FaultConfig(corrupt=corrupt, seed=3))
    configs = node_configs(
        cfg, options,
        lambda i: {"id": i, "listen": f"tcp://127.0.0.1:{gossip[i]}", "out": str(tmp / str(i)),
                   "metrics_port": metrics[i]},
        lambda j: f"tcp://127.0.0.1:{gossip[j]}")
    paths = []
    for c in configs:
        path = tmp / f"{c.node.id}.toml"
        path.write_text(config_text(c))
        paths.append(path)
    return paths, metrics


@pytest.fixture
def prometheus(tmp_path: Path, packages: None) -> Iterator[tuple[str, Path]]:
    """A Prometheus server on 127.0.0.1 whose config the test writes (reloaded on change)."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(to_yaml(prometheus_config({})))
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
    api = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                urllib.request.urlopen(f"{api}/-/ready", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "prometheus never became ready"
                time.sleep(0.3)
        yield api, config
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_nodes(paths: list[Path]) -> list[subprocess.Popen[str]]:
    return [subprocess.Popen([sys.executable, "-m", "node", "--config", str(p)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for p in paths]


def records(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.endswith("}")]


def test_prometheus_scrapes_every_series_of_a_live_federation(
        tmp_path: Path, prometheus: tuple[str, Path]) -> None:
    api, config = prometheus
    paths, metrics = write_configs(tmp_path, rounds=40, corrupt=0.05)
    targets = {i: f"127.0.0.1:{metrics[i]}" for i in range(NODES)}
    doc = prometheus_config(targets)
    doc["global"]["scrape_interval"] = "1s"
    config.write_text(to_yaml(doc))
    request = urllib.request.Request(f"{api}/-/reload", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    procs = start_nodes(paths)
    try:
        deadline = time.monotonic() + 240
        seen: dict[str, list[dict[str, Any]]] = {}
        while True:
            for p in procs:
                assert p.poll() is None, p.communicate()[1]
            seen = {name: query(api, name) for name in SERIES}
            rounds = {r["metric"]["node"]: float(r["value"][1])
                      for r in seen["dpnorm_rounds_completed"]}
            if len(rounds) == NODES and min(rounds.values()) >= 6 \
                    and seen["dpnorm_rejected_messages_total"] and seen["dpnorm_accuracy"]:
                break
            assert time.monotonic() < deadline, f"series never all appeared: {seen}"
            time.sleep(1)
        print("\nPrometheus query results (live run):")
        for name, result in seen.items():
            for r in result:
                labels = {k: v for k, v in r["metric"].items()
                          if k not in ("__name__", "job", "instance")}
                print(f"  {name}{labels} = {r['value'][1]}")
        for name in SERIES:
            if name != "dpnorm_rejected_messages_total":
                assert {r["metric"]["node"] for r in seen[name]} == {"0", "1", "2"}, name
        for r in seen["dpnorm_rejected_messages_total"]:
            assert {"peer", "reason", "node"} <= set(r["metric"]), r
            assert float(r["value"][1]) >= 1
        # Prometheus holds what the nodes wrote: a scraped value is one of node i's records.
        for name, key in (("dpnorm_bytes_sent_total", "bytes_sent"),
                          ("dpnorm_bytes_received_total", "bytes_received"),
                          ("dpnorm_epsilon_spent", "epsilon")):
            for r in seen[name]:
                written = {rec[key] for rec in records(tmp_path / r["metric"]["node"])}
                assert float(r["value"][1]) in {float(v) for v in written}, (name, r)
                assert float(r["value"][1]) > 0
        for r in seen["dpnorm_peers_alive"]:
            assert float(r["value"][1]) == 2
        for r in seen["dpnorm_accuracy"]:
            assert 0.0 < float(r["value"][1]) <= 1.0
        for name in WITHHELD:
            assert query(api, name) == [], name
        for p in procs:
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_a_metrics_port_in_use_is_one_sentence_and_exit_2_before_joining(
        tmp_path: Path) -> None:
    paths, metrics = write_configs(tmp_path, rounds=2)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        holder.bind(("127.0.0.1", metrics[0]))
        holder.listen()
        proc = subprocess.run([sys.executable, "-m", "node", "--config", str(paths[0])],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"node.metrics_port {metrics[0]}" in lines[0] and "Traceback" not in proc.stderr
    assert "READY" not in proc.stdout
    assert records(tmp_path / "0") == []


def test_without_a_metrics_port_the_daemon_never_imports_prometheus_client() -> None:
    probe = ("import sys, node.daemon.main, node.daemon.loop; "
             "print('prometheus_client' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "False"
