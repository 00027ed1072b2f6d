"""What a launch will run: every node's validated config, before any process starts.

Both ways of placing daemons — a local launch on 127.0.0.1 and N containers on a LAN — describe
the nodes with the same `DaemonOptions` and get their configs from the same `node_configs`:
each config is rendered to TOML and read back through the daemon's own loader (overrides
included), so a config that validates here validates in the daemon, and what is in the file is
what the daemon runs. `preflight` also reads the data's labels and checks δ against every
shard. Every failure is a `ConfigError` (or the data/privacy/topology error the daemon would
raise), one sentence.
"""

from __future__ import annotations

import math
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gossip.faults import FaultConfig
from node.config import RunConfig
from node.core.assemble import build_graph
from node.core.data import Dataset, load_data, local_data, shard_size, shared_shards
from node.core.mechanism import Mechanism
from node.core.model import (
    absolute_spec,
    batchnorm_use,
    build_model,
    is_user_model,
    load_user_model,
    resolve_device,
)
from node.core.privacy_plan import privacy_plan, sample_rate
from node.daemon.settings import (
    NodeConfig,
    NodeSettings,
    node_config_from_mapping,
    render_toml,
    shared_file_rules,
)
from node.errors import ConfigError
from privacy.accountant import check_delta
from topologies import neighbours

LOCAL_LISTEN = "tcp://127.0.0.1:0"
# The plan decides these per node; a --set for them would break the wiring.
RESERVED = ("node.id", "node.listen", "node.out", "node.curve_keys", "node.endpoints_file")

Placement = Callable[[int], Mapping[str, Any]]
"""Node id -> the NodeSettings fields that say where it runs (id, listen, out, keys...)."""


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemons run, on top of the RunConfig that says what they compute."""

    node: Mapping[str, Any] = field(default_factory=dict)  # NodeSettings fields for every node
    faults: FaultConfig = field(default_factory=FaultConfig)
    overrides: Mapping[str, str] = field(default_factory=dict)  # --set, for every node
    curve: bool = False
    metrics_port: int = 0  # node i serves Prometheus metrics on this port + i (0: off)

    def check_overrides(self, who: str) -> None:
        for key in self.overrides:
            if key in RESERVED:
                raise ConfigError(f"{who} sets {key} itself; remove --set {key}.")


def default_threads(nodes: int) -> int:
    """Torch threads per node so that N processes share the machine's cores without fighting."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // nodes)


def node_configs(cfg: RunConfig, options: DaemonOptions, place: Placement,
                 endpoint: Callable[[int], str]) -> list[NodeConfig]:
    """Every node's config as the daemon will read it: `place(i)` says where node i runs,
    `endpoint(j)` how its neighbours reach node j ("" = from the launcher's endpoints file)."""
    graph = build_graph(cfg)
    # A daemon may run in another directory: a model file is named by its absolute path.
    cfg = cfg.replace(model=absolute_spec(cfg.model))
    result = []
    for i in range(cfg.nodes):
        ports = {"metrics_port": options.metrics_port + i} if options.metrics_port else {}
        fields = {**options.node, **ports, **place(i)}
        try:
            settings = NodeSettings(**fields)
        except TypeError:
            known = {f for f in NodeSettings.__dataclass_fields__}
            unknown = sorted(set(fields) - known)
            raise ConfigError(f"unknown node setting {unknown[0] if unknown else fields!r}; "
                              f"valid node settings are {', '.join(sorted(known))}.") from None
        text = render_toml(cfg, settings, {j: endpoint(j) for j in neighbours(graph, i)},
                           options.faults)
        result.append(node_config_from_mapping(tomllib.loads(text), options.overrides))
    return result


def config_text(config: NodeConfig, header: str = "") -> str:
    """The TOML file of a loaded config (overrides applied), optionally under a comment."""
    return header + render_toml(config.run, config.node, config.neighbours, config.faults)


def preflight(cfg: RunConfig, *, own_data: bool = False) -> None:
    """Read the data's headers and labels, check a user's model and δ against every shard's
    size, as each daemon will at start-up, so that such mistakes stop the launch before any
    process starts. One user file shared under a privacy claim is cut as the daemons cut it
    (`shared_shards`: declared classes and q or n̂, each row's site a keyed hash of the row).
    (Noise calibration is left to the daemons: it takes seconds per node.) The device comes
    first: `--device cuda` without CUDA is refused here, not by every daemon after start-up.
    `own_data`: the nodes read their own files (`check_nodes` reads them), so only a user's
    model is imported here."""
    resolve_device(cfg.device)
    if own_data:
        check_model(cfg, None)
        return
    if shares_file(cfg):
        shared_file_rules(cfg)
        sites = shared_shards(cfg, range(cfg.nodes))
        check_model(cfg, sites[0])
        for i in range(cfg.nodes):
            check_delta(cfg.delta, math.ceil(sample_rate(cfg, None, i)[1]))
        return
    data = load_data(cfg, resident=False)  # the labels and headers; no image is converted
    check_model(cfg, data)
    if cfg.private:
        for i in range(cfg.nodes):
            _, n = sample_rate(cfg, shard_size(cfg, data, i), i)
            check_delta(cfg.delta, math.ceil(n))


def check_nodes(configs: Sequence[NodeConfig]) -> None:
    """What a local launch can check of the nodes' own settings before any starts: that their
    metrics ports differ and are free, and each node's own file (`node.data_file`) with the
    daemon's own reader and rules (classes declared, labels inside them, the split), and a
    user's model against it."""
    ports: dict[tuple[str, int], int] = {}
    for config in configs:
        port = config.node.metrics_port
        if not port:
            continue
        host = config.node.metrics_host or "127.0.0.1"
        if (host, port) in ports:
            raise ConfigError(f"nodes {ports[host, port]} and {config.node.id} would both serve "
                              f"metrics on port {port}; give --metrics-port BASE (node i gets "
                              "BASE + i) instead of one node.metrics_port for every node.")
        ports[host, port] = config.node.id
    for (host, port), owner in ports.items():  # only once no two nodes share one
        _check_free(host, port, owner)
    checked: set[tuple[str, str, str]] = set()
    for config in configs:
        own = config.node
        key = (own.data_file, own.test_file, own.data_label_column)
        if own.data_file and key not in checked:
            checked.add(key)
            run = config.run  # loaded as node.daemon.main.daemon_data loads it
            check_model(run, local_data(own.data_file, own.test_file, own.data_label_column,
                                        run.seed, cap=run.examples_per_node, private=run.private,
                                        classes=run.classes, standardise=run.standardise))


def _check_free(host: str, port: int, node: int) -> None:
    # Bound and released at once: a port taken here is refused before any node starts (the
    # daemon binds it again, and says so itself if it was taken in between).
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        raise ConfigError(f"node {node}'s metrics port {port} cannot be used on {host}: "
                          f"{exc.strerror or exc}; free it or choose another --metrics-port."
                          ) from None


def shares_file(cfg: RunConfig) -> bool:
    """Whether the daemons of this run (none with a node.data_file) share one user file under a
    privacy claim (`NodeConfig.shared_file`)."""
    return cfg.private and cfg.user_file


def check_model(cfg: RunConfig, data: Dataset | None) -> None:
    """A user's model is built and checked as every daemon will build it (node.core.model.models);
    without the data (nodes with their own files) it is at least imported."""
    if not is_user_model(cfg.model):
        return
    if data is None:
        load_user_model(cfg.model)
    else:
        build_model(cfg.model, in_shape=data.in_shape, num_classes=data.num_classes,
                    width=cfg.width, seed=cfg.seed, batchnorm=batchnorm_use(cfg))


def privacy_plans(cfg: RunConfig, nodes: Sequence[int]) -> dict[int, Mechanism]:
    """The noise calibration of these nodes, recomputed as the daemon computes it."""
    graph = build_graph(cfg)
    if shares_file(cfg):  # the daemons' q is declared, never their share's size
        return {i: privacy_plan(cfg, graph, i, None) for i in nodes}
    data = load_data(cfg, resident=False)
    return {i: privacy_plan(cfg, graph, i, shard_size(cfg, data, i)) for i in nodes}
