"""scripts/make_compose.py: the compose file, the per-node configs and keys, and bad input.

A node must see exactly what it needs: its config lists exactly its graph neighbours (by service
name, or by --hosts address), and its container mounts exactly its own key pair and its
neighbours' public keys, never another node's secret. A node whose key files are missing or
unreadable refuses to start with one sentence naming the file.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.config import RunConfig
from node.core.assemble import build_graph
from node.daemon.settings import load_node_config
from node.tools.compose import CONFIG_PATH, DATA_PATH, KEYS_PATH, OUT_PATH, to_yaml
from topologies import neighbours

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_compose.py"
SMALL = ["--dataset", "synthetic", "--model", "logreg", "--rounds", "3",
         "--examples-per-node", "100", "--test-examples", "100"]


def make_compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def one_sentence_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and fragment in lines[0], lines[0]


def endpoint_host(endpoint: str) -> str:
    match = re.fullmatch(r"tcp://(.+):7000", endpoint)
    assert match, endpoint
    return match.group(1)


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["target"]: v for v in service["volumes"]}


@pytest.mark.parametrize(("topology", "nodes"),
                         [("ring", 6), ("star", 5), ("random-regular:3", 8), ("mesh", 3)])
def test_compose_file_gives_each_node_exactly_its_neighbours_and_keys(
        tmp_path: Path, topology: str, nodes: int) -> None:
    proc = make_compose("--topology", topology, "--nodes", str(nodes), "--out", str(tmp_path),
                        "--curve", *SMALL)
    assert proc.returncode == 0, proc.stderr
    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    graph = build_graph(RunConfig(topology=topology, nodes=nodes))
    services = compose["services"]
    assert sorted(services) == sorted(f"node{i}" for i in range(nodes))
    # One user-defined bridge network that every service joins.
    assert compose["networks"] == {"dpnorm": {"driver": "bridge"}}
    for i in range(nodes):
        service = services[f"node{i}"]
        assert service["networks"] == ["dpnorm"] and service["hostname"] == f"node{i}"
        assert service["command"] == ["--config", CONFIG_PATH]
        assert service["user"] != "0:0" and not service["user"].startswith("0:")
        volumes = mounts(service)
        assert volumes[CONFIG_PATH]["source"] == f"./configs/{i}.toml"
        assert volumes[CONFIG_PATH]["read_only"] is True
        assert volumes[OUT_PATH]["read_only"] is False
        assert (tmp_path / volumes[OUT_PATH]["source"]).is_dir()

        # The config: exactly the graph neighbours, addressed by service name, on port 7000.
        cfg = load_node_config(tmp_path / "configs" / f"{i}.toml")
        expected = set(neighbours(graph, i))
        assert cfg.node.id == i and set(cfg.neighbours) == expected
        assert {endpoint_host(ep) for ep in cfg.neighbours.values()} == \
            {f"node{j}" for j in expected}
        assert all(endpoint_host(ep) == f"node{j}" for j, ep in cfg.neighbours.items())
        assert cfg.node.listen == "tcp://0.0.0.0:7000" and cfg.node.out == OUT_PATH
        assert cfg.node.curve_keys == KEYS_PATH and cfg.run.data_dir == DATA_PATH
        assert (cfg.run.topology, cfg.run.nodes, cfg.run.rounds) == (topology, nodes, 3)

        # The keys: own pair plus the neighbours' public keys, read-only; no other secret.
        keys = {Path(t).name: v for t, v in volumes.items() if t.startswith(KEYS_PATH + "/")}
        assert {n for n in keys if n.endswith(".secret")} == {f"{i}.secret"}
        assert {n for n in keys if n.endswith(".public")} == \
            {f"{j}.public" for j in expected | {i}}
        for name, volume in keys.items():
            assert volume["source"] == f"./keys/{name}" and volume["read_only"] is True
            assert (tmp_path / volume["source"]).is_file()
        secret = tmp_path / "keys" / f"{i}.secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_data_set_is_mounted_read_only_and_hosts_replace_service_names(tmp_path: Path) -> None:
    hosts = ["10.0.0.10", "10.0.0.11", "db.example.org", "fd00::4"]
    data = tmp_path / "fmnist"
    data.mkdir()
    proc = make_compose("--topology", "ring", "--nodes", "4", "--out", str(tmp_path / "lan"),
                        "--hosts", ",".join(hosts), "--port", "7100", "--data-dir", str(data),
                        "--model", "logreg", "--set", "node.min_round_seconds=2",
                        "--round-timeout", "12", "--plaintext")
    assert proc.returncode == 0, proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(warning) == 1 and warning[0].startswith("warning: --plaintext"), proc.stderr
    assert not (tmp_path / "lan" / "keys").exists()
    compose = yaml.safe_load((tmp_path / "lan" / "docker-compose.yml").read_text())
    for i in range(4):
        service = compose["services"][f"node{i}"]
        volumes = mounts(service)
        assert volumes[DATA_PATH] == {"type": "bind", "source": str(data), "target": DATA_PATH,
                                      "read_only": True}
        assert not any(t.startswith(KEYS_PATH) for t in volumes)  # --plaintext: no keys
        assert service["environment"]["DPNORM_PORT"] == "7100"
        assert "fashion-mnist" in service["labels"]["org.dpnorm.shard"]
        cfg = load_node_config(tmp_path / "lan" / "configs" / f"{i}.toml")
        assert cfg.node.listen == "tcp://0.0.0.0:7100" and cfg.node.curve_keys == ""
        assert cfg.node.min_round_seconds == 2 and cfg.node.round_timeout == 12
        assert cfg.run.dataset == "fashion-mnist" and cfg.run.data_dir == DATA_PATH
    cfg3 = load_node_config(tmp_path / "lan" / "configs" / "3.toml")
    assert cfg3.neighbours == {0: "tcp://10.0.0.10:7100", 2: "tcp://db.example.org:7100"}
    cfg0 = load_node_config(tmp_path / "lan" / "configs" / "0.toml")
    assert cfg0.neighbours[3] == "tcp://[fd00::4]:7100"


def test_yaml_writer_round_trips_awkward_strings() -> None:
    doc = {"a": ["x: y", "- z", "#c", "", "naïve \"q\" \\ 'p'", {"k": [1, True, None]}],
           "weird key": {}, "e": [], "n": {"m": {"o": "yes"}}}
    assert yaml.safe_load(to_yaml(doc)) == doc


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--topology", "hexagon", "--nodes", "4"], "hexagon"),
        (["--topology", "ring", "--nodes", "1"], "at least 2 nodes"),
        (["--topology", "ring", "--nodes", "4", "--hosts", "10.0.0.1,10.0.0.2"], "--hosts"),
        (["--topology", "ring", "--nodes", "3", "--hosts", "a,b,not a host!"], "not a host!"),
        (["--topology", "ring", "--nodes", "3", "--port", "70000"], "--port"),
        (["--topology", "ring", "--nodes", "3", "--set", "node.listen=tcp://1.2.3.4:1"],
         "node.listen"),
        (["--topology", "ring", "--nodes", "3", "--set", "node.colour=blue"], "node.colour"),
        (["--topology", "ring", "--nodes", "3", "--lr", "-1"], "lr"),
        (["--topology", "ring", "--nodes", "three"], "nodes"),
        (["--topology", "ring", "--nodes", "3", "--prometheus"], "--metrics-port"),
        (["--topology", "ring", "--nodes", "3", "--metrics-port", "7000"], "--metrics-port"),
        (["--topology", "ring", "--nodes", "3", "--metrics-port", "70000"], "metrics_port"),
        (["--topology", "ring", "--nodes", "3", "--plaintext"], "--plaintext"),
        (["--topology", "ring", "--nodes", "3", "--subnet", "10.1.2"], "--subnet"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path: Path, args: list[str],
                                                      fragment: str) -> None:
    out = tmp_path / "lan"
    one_sentence_error(make_compose(*args, "--out", str(out), "--curve"), fragment)
    assert not out.exists()


def test_existing_keys_are_replaced_only_with_force(tmp_path: Path) -> None:
    args = ["--topology", "ring", "--nodes", "3", "--out", str(tmp_path), "--curve"]
    assert make_compose(*args).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    one_sentence_error(make_compose(*args), "--force")
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == before
    assert make_compose(*args, "--force").returncode == 0
    after = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)
    # With --plaintext the keys are not touched (and not mounted).
    plain = make_compose("--topology", "ring", "--nodes", "3", "--out", str(tmp_path),
                         "--plaintext")
    assert plain.returncode == 0, plain.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == after
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_sentence_error(make_compose("--topology", "ring", "--nodes", "3", "--out", str(blocker)),
                       "is a file")


@pytest.mark.parametrize(
    ("damage", "named"),
    [("remove_own_secret", "0.secret"), ("remove_neighbour_public", "2.public"),
     ("unreadable_secret", "0.secret")],
)
def test_node_with_missing_or_unreadable_key_files_refuses_to_start(
        tmp_path: Path, damage: str, named: str) -> None:
    lan = tmp_path / "lan"
    proc = make_compose("--topology", "ring", "--nodes", "3", "--out", str(lan), "--curve",
                        *SMALL)
    assert proc.returncode == 0, proc.stderr
    keys = lan / "keys"
    if damage == "remove_own_secret":
        (keys / "0.secret").unlink()
    elif damage == "remove_neighbour_public":
        (keys / "2.public").unlink()
    else:  # a directory where the file should be: unreadable even for root
        (keys / "0.secret").unlink()
        (keys / "0.secret").mkdir()
    node = subprocess.run(
        [sys.executable, "-m", "node", "--config", str(lan / "configs" / "0.toml"),
         "--set", f"node.curve_keys={keys}", "--set", f"node.out={tmp_path / 'out'}",
         "--set", "node.listen=tcp://127.0.0.1:0"],
        capture_output=True, text=True, timeout=90, cwd=ROOT)
    one_sentence_error(node, str(keys / named))
    assert "READY" not in node.stdout


def test_curve_is_the_default(tmp_path: Path) -> None:
    proc = make_compose("--topology", "ring", "--nodes", "3", "--out", str(tmp_path), *SMALL)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    for i in range(3):
        assert load_node_config(tmp_path / "configs" / f"{i}.toml").node.curve_keys == KEYS_PATH
        assert f"{KEYS_PATH}/{i}.secret" in mounts(compose["services"][f"node{i}"])
        assert (tmp_path / "keys" / f"{i}.secret").is_file()


def test_a_host_port_in_use_for_prometheus_is_one_sentence(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = make_compose("--topology", "ring", "--nodes", "3", "--out", str(tmp_path / "lan"),
                            "--metrics-port", "9100", "--prometheus", "--prometheus-port",
                            str(port))
        one_sentence_error(proc, f"port {port} (--prometheus-port) is already in use")
    proc = make_compose("--topology", "ring", "--nodes", "3", "--out", str(tmp_path / "lan"),
                        "--metrics-port", "9100", "--prometheus", "--prometheus-port",
                        str(port), "--grafana-port", "0")
    one_sentence_error(proc, "--grafana-port must be between 1 and 65535")
    assert not (tmp_path / "lan").exists()


def test_prometheus_and_grafana_scrape_every_node(tmp_path: Path) -> None:
    import json
    import socket

    ports = []
    for _ in range(2):  # two ports free right now
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = make_compose("--topology", "ring", "--nodes", "4", "--out", str(tmp_path),
                        "--metrics-port", "9100", "--prometheus", "--prometheus-port",
                        str(ports[0]), "--grafana-port", str(ports[1]), "--subnet",
                        "10.203.0.0/24", *SMALL)
    assert proc.returncode == 0, proc.stderr
    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    services = compose["services"]
    assert sorted(services) == ["grafana", "node0", "node1", "node2", "node3", "prometheus"]
    assert compose["networks"]["dpnorm"]["ipam"] == {"config": [{"subnet": "10.203.0.0/24"}]}
    assert services["prometheus"]["ports"] == [f"127.0.0.1:{ports[0]}:9090"]
    assert services["grafana"]["ports"] == [f"127.0.0.1:{ports[1]}:3000"]
    for i in range(4):
        node = load_node_config(tmp_path / "configs" / f"{i}.toml").node
        # Stated in the config: the Prometheus service scrapes from another container.
        assert (node.metrics_port, node.metrics_host) == (9100, "0.0.0.0")
    assert "serves its metrics over plain HTTP on 0.0.0.0:9100" in proc.stderr
    assert "docs/PRIVACY.md" in proc.stderr
    scrape = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"node{i}:9100"], "labels": {"node": str(i)}}
                                     for i in range(4)]
    for service, mount_dir in (("prometheus", "prometheus"), ("grafana", "grafana")):
        for volume in services[service]["volumes"]:
            assert volume["read_only"] is True
            assert volume["source"].startswith(f"./{mount_dir}")
            assert (tmp_path / volume["source"]).exists()
    source = yaml.safe_load((tmp_path / "grafana" / "provisioning" / "datasources" /
                             "dpnorm.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads((tmp_path / "grafana" / "dashboards" / "dpnorm.json").read_text())
    assert dashboard == json.loads((ROOT / "deploy" / "grafana" / "dpnorm.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in ("dpnorm_rounds_completed", "dpnorm_epsilon_spent", "dpnorm_bytes_sent_total",
                 "dpnorm_bytes_received_total", "dpnorm_peers_alive",
                 "dpnorm_rejected_messages_total", "dpnorm_round_seconds_bucket",
                 "dpnorm_accuracy"):
        assert name in exprs, name
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == \
        {source["uid"]}


def test_metrics_stay_on_loopback_unless_a_host_is_given(tmp_path: Path) -> None:
    proc = make_compose("--topology", "ring", "--nodes", "3", "--out", str(tmp_path / "a"),
                        "--metrics-port", "9100", *SMALL)
    assert proc.returncode == 0, proc.stderr
    node = load_node_config(tmp_path / "a" / "configs" / "0.toml").node
    assert node.metrics_host == "" and "plain HTTP" not in proc.stderr
    proc = make_compose("--topology", "ring", "--nodes", "3", "--out", str(tmp_path / "b"),
                        "--metrics-port", "9100", "--metrics-host", "10.0.0.5", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert load_node_config(tmp_path / "b" / "configs" / "0.toml").node.metrics_host == \
        "10.0.0.5"
    assert "plain HTTP on 10.0.0.5:9100" in proc.stderr


def test_a_shared_file_under_dp_is_declared_and_mounted_or_refused(tmp_path: Path) -> None:
    import numpy as np

    data = tmp_path / "sites.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(0, 1, (60, 4)).astype(np.float32), y=rng.integers(0, 3, 60))
    base = ["--topology", "ring", "--nodes", "3", "--dataset", str(data), "--model", "logreg",
            "--epsilon", "2", "--rounds", "3"]
    proc = make_compose(*base, "--out", str(tmp_path / "no"))
    one_sentence_error(proc, f"the number of classes of {data} would be read from its labels")
    assert not (tmp_path / "no").exists()
    proc = make_compose(*base[:5], str(tmp_path / "missing.npz"), *base[6:], "--out",
                        str(tmp_path / "no"))
    one_sentence_error(proc, "missing.npz does not exist")
    assert not (tmp_path / "no").exists()
    proc = make_compose(*base, "--classes", "3", "--public-examples", "16", "--out",
                        str(tmp_path / "lan"))
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load((tmp_path / "lan" / "docker-compose.yml").read_text())["services"]
    for i in range(3):
        cfg = load_node_config(tmp_path / "lan" / "configs" / f"{i}.toml")
        assert cfg.run.dataset == f"{DATA_PATH}/sites.npz" and cfg.shared_file
        mounted = mounts(services[f"node{i}"])[f"{DATA_PATH}/sites.npz"]
        assert mounted["source"] == str(data) and mounted["read_only"] is True
        assert DATA_PATH not in mounts(services[f"node{i}"])
