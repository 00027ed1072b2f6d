"""N dpnorm nodes on a LAN: per-node configs, CURVE keys and a docker-compose file.

`scripts/make_compose.py` is the command line. What it writes under DIR:

    DIR/docker-compose.yml       one service per node (node0, node1, ...) on one user-defined
                                 bridge network; each mounts only its own files (below)
    DIR/configs/<id>.toml        node <id>: listens on tcp://0.0.0.0:PORT and reaches neighbour j
                                 at tcp://<host j>:PORT (the service name `node<j>`, or --hosts)
    DIR/keys/<id>.secret|public  one CURVE key pair per node (unless plaintext)
    DIR/out/<id>/                node <id>'s metrics.jsonl, node.log, checkpoint and final.json
    DIR/prometheus, DIR/grafana  with monitoring: see node.tools.monitoring

Paths inside a container are fixed (the Dockerfile declares them as volumes): the config at
CONFIG_PATH, the data set read-only at DATA_PATH, the keys at KEYS_PATH (own pair + neighbours'
public keys only) and the writable output at OUT_PATH. Which part of the data set a node trains
on is decided by its config (node id, nodes, partition, seed), exactly as in a local launch.

Every failure is a `ConfigError` (or the topology's `TopologyError`) whose message is one sentence.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gossip.keys import generate_topology_keys
from node.config import RunConfig
from node.daemon.settings import NodeConfig, shared_file_rules
from node.errors import ConfigError
from node.tools.monitoring import Monitoring, grafana_files, prometheus_config
from node.tools.monitoring import services as monitoring_services
from node.tools.monitoring import targets as metrics_targets
from node.tools.plan import DaemonOptions, config_text, node_configs, shares_file

__all__ = [
    "CONFIG_PATH",
    "DATA_PATH",
    "IMAGE_UID",
    "KEYS_PATH",
    "OUT_PATH",
    "LanPlan",
    "key_files",
    "lan_configs",
    "service_name",
    "to_yaml",
    "write_lan",
]

CONFIG_PATH = "/etc/dpnorm/node.toml"
DATA_PATH = "/data"
KEYS_PATH = "/keys"
OUT_PATH = "/var/lib/dpnorm"
IMAGE_UID = 10001  # the Dockerfile's non-root user
DEFAULT_PORT = 7000
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def service_name(node: int) -> str:
    """The compose service (and DNS name on the compose network) of node `node`."""
    return f"node{node}"


@dataclass(frozen=True)
class LanPlan:
    """What to generate: the run, how nodes reach each other, and the daemon settings."""

    cfg: RunConfig
    hosts: Sequence[str] = ()  # node i is reached at hosts[i]; empty = compose service names
    port: int = DEFAULT_PORT
    image: str = "dpnorm:latest"
    options: DaemonOptions = field(default_factory=DaemonOptions)
    subnet: str = ""  # the compose network's IPv4 subnet; "" = the engine picks one
    monitoring: Monitoring | None = None  # Prometheus and Grafana services

    def __post_init__(self) -> None:
        if self.cfg.nodes < 2:
            raise ConfigError(f"a LAN federation needs at least 2 nodes, got {self.cfg.nodes}.")
        if self.subnet:
            try:
                ipaddress.ip_network(self.subnet)
            except ValueError:
                raise ConfigError(f"--subnet {self.subnet!r} is not a network such as "
                                  "10.203.0.0/24.") from None
        if self.monitoring is not None:
            self.monitoring.check()
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 1 and 65535, got {self.port}.")
        if self.hosts and len(self.hosts) != self.cfg.nodes:
            raise ConfigError(f"--hosts lists {len(self.hosts)} address(es) but there are "
                              f"{self.cfg.nodes} nodes; give one per node, in node order.")
        for host in self.hosts:
            if not _valid_host(host):
                raise ConfigError(f"{host!r} in --hosts is neither a hostname nor an IP address.")
        self.options.check_overrides("make_compose")
        for key in self.options.overrides:
            if "." not in key:
                raise ConfigError(f"--set {key} is a run setting; give it as an option "
                                  f"(--{key.replace('_', '-')}) instead.")

    @property
    def curve(self) -> bool:
        return self.options.curve

    def host(self, node: int) -> str:
        return self.hosts[node] if self.hosts else service_name(node)

    def endpoint(self, node: int) -> str:
        host = self.host(node)
        return f"tcp://[{host}]:{self.port}" if ":" in host else f"tcp://{host}:{self.port}"

    def place(self, node: int) -> dict[str, Any]:
        """Where node `node` runs inside its container."""
        return {"id": node, "listen": f"tcp://0.0.0.0:{self.port}", "out": OUT_PATH,
                "curve_keys": KEYS_PATH if self.curve else ""}


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host))


def lan_configs(plan: LanPlan) -> dict[int, tuple[NodeConfig, str]]:
    """Every node's validated config and TOML text, with container paths."""
    cfg = plan.cfg.replace(data_dir=DATA_PATH)
    if cfg.user_file:  # the file itself is mounted under DATA_PATH (compose_document)
        if not Path(cfg.dataset).is_file():  # Docker would mount an empty directory instead
            raise ConfigError(f"data file {cfg.dataset} does not exist.")
        if shares_file(cfg):  # named as the user gave it, before it becomes a container path
            shared_file_rules(cfg)
        cfg = cfg.replace(dataset=f"{DATA_PATH}/{Path(cfg.dataset).name}")
    source = "generated from the seed" if cfg.dataset == "synthetic" else f"read from {DATA_PATH}"
    result: dict[int, tuple[NodeConfig, str]] = {}
    for loaded in node_configs(cfg, plan.options, plan.place, plan.endpoint):
        i = loaded.node.id
        header = (f"# dpnorm node {i} of {cfg.nodes} on a LAN (topology {cfg.topology}), written "
                  "by scripts/make_compose.py.\n"
                  f"# Data: node {i}'s {cfg.partition} shard of {cfg.dataset} (seed {cfg.seed}), "
                  f"{source}.\n")
        result[i] = (loaded, config_text(loaded, header))
    return result


def key_files(node: int, neighbours: Sequence[int]) -> list[str]:
    """The key files node `node` needs, relative to the key directory: its own pair (the daemon
    checks the secret against the public key) and its neighbours' public keys. Nothing else."""
    return [f"{node}.secret", f"{node}.public", *(f"{j}.public" for j in sorted(neighbours))]


def _bind(source: str, target: str, read_only: bool) -> dict[str, Any]:
    return {"type": "bind", "source": source, "target": target, "read_only": read_only}


def _data_volumes(cfg: RunConfig) -> list[dict[str, Any]]:
    """The data a node reads from the host: a user's `dataset` file, or the data directory."""
    if cfg.user_file:
        name = Path(cfg.dataset).name
        return [_bind(str(Path(cfg.dataset).absolute()), f"{DATA_PATH}/{name}", True)]
    if cfg.dataset == "synthetic":
        return []
    return [_bind(str(Path(cfg.data_dir).absolute()), DATA_PATH, True)]


def compose_document(plan: LanPlan, configs: Mapping[int, tuple[NodeConfig, str]],
                     user: str, network: str = "dpnorm") -> dict[str, Any]:
    """The docker-compose file as plain data (see `to_yaml`)."""
    cfg = plan.cfg
    services: dict[str, Any] = {}
    for i, (node_cfg, _) in sorted(configs.items()):
        volumes = [_bind(f"./configs/{i}.toml", CONFIG_PATH, True),
                   _bind(f"./out/{i}", OUT_PATH, False)]
        if not node_cfg.node.data_file:
            volumes += _data_volumes(cfg)
        if plan.curve:
            volumes += [_bind(f"./keys/{name}", f"{KEYS_PATH}/{name}", True)
                        for name in key_files(i, list(node_cfg.neighbours))]
        services[service_name(i)] = {
            "image": plan.image,
            "hostname": service_name(i),
            "user": user,
            "command": ["--config", CONFIG_PATH],
            "environment": {"DPNORM_PORT": str(plan.port), "OMP_NUM_THREADS": str(cfg.threads)},
            "labels": {"org.dpnorm.node": str(i),
                       "org.dpnorm.shard": f"{cfg.partition} shard {i} of {cfg.nodes} of "
                                           f"{cfg.dataset}, seed {cfg.seed}"},
            "networks": [network],
            "volumes": volumes,
            # A crashed node restarts and resumes from its checkpoint; a finished one stays down.
            "restart": "on-failure:3",
            "stop_grace_period": "30s",
        }
    if plan.monitoring is not None:
        services.update(monitoring_services(plan.monitoring, network))
    net: dict[str, Any] = {"driver": "bridge"}
    if plan.subnet:
        net["ipam"] = {"config": [{"subnet": plan.subnet}]}
    # No top-level `name`: compose names the project after the directory, so two generated
    # federations in two directories do not collide.
    return {"services": services, "networks": {network: net}}


def write_lan(plan: LanPlan, out: str | Path, *, force: bool = False) -> Path:
    """Write DIR/docker-compose.yml, DIR/configs, DIR/out and (with curve) DIR/keys.

    Nothing is written when anything is invalid. Existing keys are only replaced with `force`.
    Returns the compose file's path.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory.")
    keys = out / "keys"
    if plan.curve and not force and keys.is_dir() and any(
            p.suffix in (".secret", ".public") for p in keys.iterdir()):
        raise ConfigError(f"{keys} already holds CURVE keys; pass --force to replace them (nodes "
                          "still holding the old ones will be refused) or choose another --out.")
    configs = lan_configs(plan)  # validates everything before the first file is written
    metrics_port = next(iter(configs.values()))[0].node.metrics_port
    if plan.monitoring is not None and not metrics_port:
        raise ConfigError("--prometheus needs the port the nodes serve metrics on; add "
                          "--metrics-port PORT (for example 9100).")
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # never run the containers as root: hand their files to the image's user
        uid = gid = IMAGE_UID
    document = compose_document(plan, configs, f"{uid}:{gid}")
    try:
        if (out / "configs").is_dir():
            shutil.rmtree(out / "configs")  # generated files only: no stale nodes left behind
        (out / "configs").mkdir(parents=True)
        for i, (_, text) in configs.items():
            (out / "configs" / f"{i}.toml").write_text(text, encoding="utf-8")
            node_out = out / "out" / str(i)
            node_out.mkdir(parents=True, exist_ok=True)  # else Docker creates it owned by root
            _chown(node_out, uid, gid)
        if plan.curve:
            generate_topology_keys(keys, range(plan.cfg.nodes), overwrite=True)
            for i in range(plan.cfg.nodes):
                _chown(keys / f"{i}.secret", uid, gid)
        if plan.monitoring is not None:
            _write_monitoring(plan, out, metrics_port)
        path = out / "docker-compose.yml"
        header = (f"# {plan.cfg.nodes} dpnorm nodes, topology {plan.cfg.topology}; written by "
                  "scripts/make_compose.py.\n# Build the image first (docker build -t "
                  f"{plan.image} .), then run in this directory: docker compose up\n")
        path.write_text(header + to_yaml(document), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write under {out}: {exc.strerror} ({exc.filename}).") from None
    return path


def _write_monitoring(plan: LanPlan, out: Path, metrics_port: int) -> None:
    assert plan.monitoring is not None
    hosts = [plan.host(i) for i in range(plan.cfg.nodes)]
    (out / "prometheus").mkdir(parents=True, exist_ok=True)
    (out / "prometheus" / "prometheus.yml").write_text(
        to_yaml(prometheus_config(metrics_targets(hosts, metrics_port))), encoding="utf-8")
    for name, doc in grafana_files("http://prometheus:9090").items():
        (out / "grafana" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "grafana" / name).write_text(to_yaml(doc), encoding="utf-8")
    (out / "grafana" / "dashboards").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plan.monitoring.dashboard, out / "grafana" / "dashboards" / "dpnorm.json")


def _chown(path: Path, uid: int, gid: int) -> None:
    if os.getuid() == 0:
        os.chown(path, uid, gid)


# ---- a small YAML writer (block style; every string JSON-quoted, which YAML reads as is) ----

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def to_yaml(value: Mapping[str, Any]) -> str:
    """YAML for nested dicts/lists of str, int, float, bool and None."""
    return "\n".join(_emit(value, 0)) + "\n"


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping | list | tuple) and not value:
        return "{}" if isinstance(value, Mapping) else "[]"
    raise TypeError(f"cannot write {value!r} as YAML")


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple) and bool(value)


def _emit(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = key if _PLAIN_KEY.fullmatch(str(key)) else json.dumps(str(key))
            if _is_block(item):
                lines.append(f"{pad}{name}:")
                lines += _emit(item, indent + 2)
            else:
                lines.append(f"{pad}{name}: {_scalar(item)}")
    elif isinstance(value, list | tuple):
        for item in value:
            if _is_block(item):
                sub = _emit(item, indent + 2)
                lines.append(f"{pad}- {sub[0][indent + 2:]}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return lines
