"""What a local launch will run: every node's validated config, before any process starts.

Per-node configs are rendered to TOML and read back through the daemon's own loader, so a
config that validates here validates in the daemon; `preflight` also loads the data and checks
δ against every shard. Every failure is a `ConfigError` (or the data/privacy/topology error the
daemon would raise), one sentence.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import ConfigError, RunConfig
from node.daemon_config import (
    FaultSettings,
    NodeConfig,
    NodeSettings,
    node_config_from_mapping,
    render_toml,
)

LOCAL_LISTEN = "tcp://127.0.0.1:0"
# The launcher owns these per-node settings; letting --set change them would break the wiring.
RESERVED = ("node.id", "node.out", "node.listen", "node.endpoints_file")


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemons run, on top of the RunConfig that says what they compute."""

    node: Mapping[str, Any] = field(default_factory=dict)  # NodeSettings fields for every node
    faults: FaultSettings = field(default_factory=FaultSettings)
    overrides: Mapping[str, str] = field(default_factory=dict)  # --set, passed to every node
    curve: bool = False


def default_threads(nodes: int) -> int:
    """Torch threads per node so that N processes share the machine's cores without fighting."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // nodes)


def check_faults(faults: FaultSettings, nodes: int) -> None:
    """Reject fault settings the daemon would refuse, before anything starts."""
    from node.faults_config import fault_config

    config = fault_config(faults)  # the daemon's own parser: same errors, same sentences
    for cut in config.cuts if config else ():
        named = set(cut.nodes).union(*cut.edges)
        if any(not 0 <= i < nodes for i in named):
            raise ConfigError(f"a --cut names node {max(named)}, outside 0..{nodes - 1}.")


def node_configs(cfg: RunConfig, out: Path, options: DaemonOptions) -> list[tuple[NodeConfig, str]]:
    """Every node's validated config and its TOML text (neighbour endpoints left empty)."""
    from node.federation import build_graph
    from topologies import neighbours

    for key in options.overrides:
        if key in RESERVED:
            raise ConfigError(f"the launcher sets {key} itself; remove --set {key}.")
    check_faults(options.faults, cfg.nodes)
    graph = build_graph(cfg)
    result = []
    for i in range(cfg.nodes):
        fields = {**options.node, "id": i, "listen": LOCAL_LISTEN, "out": str(out / str(i)),
                  "endpoints_file": str(out / "endpoints.json")}
        if options.curve:
            fields["curve_keys"] = str(out / "keys")
        try:
            settings = NodeSettings(**fields)
        except TypeError:
            raise ConfigError(f"unknown node setting among {', '.join(sorted(fields))}.") from None
        text = render_toml(cfg, settings, {j: "" for j in neighbours(graph, i)}, options.faults)
        # Read the text back through the daemon's own loader: what validates here validates there.
        result.append((node_config_from_mapping(tomllib.loads(text), options.overrides), text))
    return result


def preflight(cfg: RunConfig) -> None:
    """Load the data and check δ against every shard, as each daemon will at start-up, so that
    such mistakes stop the launch before any process starts. (Noise calibration is left to the
    daemons: it takes seconds per node.)"""
    from node.federation import load_data, shard
    from privacy.accountant import check_delta

    data = load_data(cfg)
    if cfg.private:
        for i in range(cfg.nodes):
            check_delta(cfg.delta, len(shard(cfg, data, i).x_train))


def privacy_plans(cfg: RunConfig, nodes: Sequence[int]) -> dict[int, Any]:
    """The noise calibration of these nodes, recomputed as the daemon computes it."""
    from node.federation import build_graph, load_data, privacy_plan, shard

    graph, data = build_graph(cfg), load_data(cfg)
    return {i: privacy_plan(cfg, graph, i, len(shard(cfg, data, i).x_train)) for i in nodes}
