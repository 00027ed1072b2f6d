"""The daemon's TOML file: the run settings (top-level keys, the same as the CLI options) plus
where this node listens, who its neighbours are, timing, wire and fault settings.

    rounds = 50                      # any RunConfig key, e.g. algorithm, epsilon, lr, ...
    [node]
    id = 0
    listen = "tcp://127.0.0.1:0"     # port 0: pick a free port; READY prints the real one
    out = "runs/demo/0"              # metrics.jsonl, node.log, checkpoint, privacy ledger
    state_dir = "/var/lib/dpnorm-state"  # the data's lifetime ledger (default: XDG state dir)
    lifetime_epsilon = 8.0           # refuse a run that would take the data's lifetime ε past 8
    round_timeout = 30.0
    metrics_port = 9100              # optional: Prometheus metrics at 127.0.0.1:9100/metrics
    [neighbours]
    1 = "tcp://10.0.0.2:7000"        # or "" and `endpoints_file` for local launches
    [faults]                         # optional chaos (gossip.faults.FaultConfig): drop,
    drop = 0.2                       # duplicate, corrupt, reorder, jitter_ms, seed, and
    cuts = "5:9:0-1,2-3"             # cuts: links cut from 5 s to 9 s (Cut.parse)

`--set key=value` overrides any of them: `lr=0.1`, `node.round_timeout=5`, `faults.drop=0.1`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gossip.faults import Cut, FaultConfig
from node.config import RunConfig, coerce, run_config_from_mapping
from node.errors import ConfigError

WIRE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class NodeSettings:
    """Where and how this node runs (not what it computes)."""

    id: int = -1
    listen: str = "tcp://127.0.0.1:0"
    out: str = "runs/node"
    endpoints_file: str = ""
    round_timeout: float = 30.0
    startup_timeout: float = 60.0
    heartbeat_interval: float = 1.0
    down_after: float = 10.0
    max_missed_deadlines: int = 3
    checkpoint_every: int = 5
    # Pace rounds to at most one per this many seconds (shared links, demos, fault drills).
    min_round_seconds: float = 0.0
    wire_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    curve_keys: str = ""
    # Dual/primal messages whose RMS per coordinate exceeds this are refused on receipt.
    max_message_rms: float = math.inf
    # This node's own rows (CSV or NPZ) instead of a shard of the run's `dataset`; a CSV's label
    # column is `data_label_column` (the run's `label_column` names the `dataset` file's).
    data_file: str = ""
    test_file: str = ""
    data_label_column: str = "label"
    # The test file holds public rows (a published benchmark, say), so the metrics endpoint may
    # serve the accuracy on it (node.daemon.prometheus.Releases); never true of private rows.
    test_file_public: bool = False
    log_level: str = "INFO"
    # Prometheus text format at http://<metrics_host>:<metrics_port>/metrics; 0 = off. The host
    # defaults to 127.0.0.1: plain HTTP is served beyond this machine only when the config says
    # so (docs/PRIVACY.md lists what the endpoint releases).
    metrics_port: int = 0
    metrics_host: str = ""
    # Where the lifetime ledgers of this node's data live, outside any run directory ("":
    # $XDG_STATE_HOME/dpnorm, else ~/.local/state/dpnorm); dpnorm never deletes anything there.
    state_dir: str = ""
    # Refuse a run whose planned releases would take the data's lifetime ε past this (inf: none).
    lifetime_epsilon: float = math.inf


@dataclass(frozen=True)
class NodeConfig:
    node: NodeSettings
    neighbours: Mapping[int, str]
    run: RunConfig
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        n = self.node
        if not 0 <= n.id < self.run.nodes:
            raise ConfigError(f"node.id must be between 0 and nodes - 1 = {self.run.nodes - 1}, "
                              f"got {n.id}.")
        if not self.neighbours:
            raise ConfigError("the config lists no neighbours; add a [neighbours] table.")
        if n.id in self.neighbours:
            raise ConfigError(f"node {n.id} lists itself as a neighbour.")
        for name in ("round_timeout", "startup_timeout", "heartbeat_interval", "down_after",
                     "max_message_rms"):
            if not getattr(n, name) > 0:
                raise ConfigError(f"node.{name} must be positive, got {getattr(n, name)}.")
        if not n.lifetime_epsilon > 0:
            raise ConfigError(f"node.lifetime_epsilon must be positive (inf: no cap), got "
                              f"{n.lifetime_epsilon}.")
        if n.heartbeat_interval * 2 > n.down_after:
            raise ConfigError("node.down_after must be at least twice node.heartbeat_interval.")
        if n.min_round_seconds < 0:
            raise ConfigError("node.min_round_seconds must be non-negative.")
        if n.checkpoint_every < 1 or n.max_missed_deadlines < 1:
            raise ConfigError("node.checkpoint_every and node.max_missed_deadlines must be at "
                              "least 1.")
        if n.wire_dtype not in WIRE_DTYPES:
            raise ConfigError(f"node.wire_dtype must be one of {', '.join(WIRE_DTYPES)}.")
        if not n.listen.startswith("tcp://"):
            raise ConfigError(f"node.listen must be a tcp:// endpoint, got {n.listen!r}.")
        if not 0 <= n.metrics_port <= 65535:
            raise ConfigError(f"node.metrics_port must be between 1 and 65535 (0: off), got "
                              f"{n.metrics_port}.")
        if n.metrics_port and n.listen.endswith(f":{n.metrics_port}"):
            raise ConfigError(f"node.metrics_port {n.metrics_port} is the gossip port of "
                              f"node.listen; give the metrics another port.")
        if n.test_file_public and not (n.data_file and n.test_file):
            raise ConfigError("node.test_file_public declares node.test_file public, and it "
                              "needs both node.data_file and node.test_file; remove it.")
        if self.run.private and self.run.noise_seed is not None:
            remote = [ep for ep in (n.listen, *self.neighbours.values()) if ep and
                      not _loopback(ep)]
            if remote:
                raise ConfigError(
                    f"noise_seed is set, so every peer (they all hold this config) could "
                    f"regenerate node {n.id}'s noise; it is for test runs on one machine only "
                    f"and {remote[0]} is not on 127.0.0.1 — remove noise_seed.")
        missing = [j for j, ep in self.neighbours.items() if not ep]
        if missing and not n.endpoints_file:
            raise ConfigError(f"neighbour {missing[0]} has no endpoint and no "
                              "node.endpoints_file is given.")
        if self.shared_file:
            shared_file_rules(self.run)

    @property
    def shared_file(self) -> bool:
        """Whether this daemon trains on its share of one user file given as `dataset` under a
        privacy claim, each row's side and site a keyed hash of the row (node.core.keyed_rows)."""
        return self.run.private and self.run.user_file and not self.node.data_file


def shared_file_rules(run: RunConfig) -> None:
    """What a federation of daemons sharing one user file under a privacy claim must declare or
    leave out, so that one added row of the file changes one training row of one node and no
    constant the noise is fixed from (docs/PRIVACY.md, "One file shared by the daemons")."""
    file = run.dataset
    if run.classes is None:
        raise ConfigError(f"the number of classes of {file} would be read from its labels, which "
                          "one added row can change; declare classes = K (--classes K).")
    if run.sample_rate is None and run.public_examples is None:
        raise ConfigError(f"each node's share of {file} has a private size; declare the Poisson "
                          "rate (sample_rate = q) or each node's public size (public_examples = "
                          "n) so that q is fixed before training.")
    if run.partition != "iid":
        raise ConfigError(f"partition {run.partition} cuts {file} into sites by a permutation of "
                          "its rows, which one added row reshuffles; use partition iid (each "
                          "row's site a keyed hash of the row) or give each node its own "
                          "node.data_file.")
    if run.examples_per_node is not None:
        raise ConfigError(f"examples_per_node cannot cap {file} in a private run, since a cap "
                          "swaps rows when one is added; remove it and trim the file instead.")
    if run.validation_fraction:
        raise ConfigError(f"validation_fraction holds out a seeded permutation of each node's "
                          f"rows of {file}, which one added row reshuffles; remove it.")
    if run.standardise == "public":
        raise ConfigError(f"standardise = public would scale by the mean and std of all of "
                          f"{file}, which one added row moves; pre-scale the file with published "
                          "constants and use standardise = none.")


def _loopback(endpoint: str) -> bool:
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_node_config(path: str | Path, overrides: Mapping[str, str] = {}) -> NodeConfig:
    """Read and validate a node's TOML file, then apply `--set` overrides."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}.") from None
    return node_config_from_mapping(raw, overrides)


# Earlier spellings of [node] settings, still read so that existing configs keep working.
# node.label_column became data_label_column: the top-level label_column is the run's
# `dataset` file's, and one name meant both.
RENAMED = {"max_message_norm": "max_message_rms", "label_column": "data_label_column"}


def node_config_from_mapping(raw: Mapping[str, Any],
                             overrides: Mapping[str, str] = {}) -> NodeConfig:
    tables: dict[str, dict[str, Any]] = {}
    for name in ("node", "neighbours", "faults"):
        table = raw.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{name}] must be a table, got {table!r}; write it as a "
                              f"[{name}] section.")
        tables[name] = dict(table)
    for old, new in RENAMED.items():
        if old in tables["node"]:
            tables["node"].setdefault(new, tables["node"].pop(old))
    flat = {k: v for k, v in raw.items() if k not in tables}
    for key, value in overrides.items():
        section, dot, rest = key.partition(".")
        if dot and section in tables:
            tables[section][RENAMED.get(rest, rest) if section == "node" else rest] = value
        else:
            flat[key] = value
    run = run_config_from_mapping(flat)
    node = _settings(NodeSettings, tables["node"], "node")
    neighbours: dict[int, str] = {}
    for key, endpoint in tables["neighbours"].items():
        try:
            peer = int(key)
        except ValueError:
            raise ConfigError(f"neighbour ids must be integers, got {key!r}.") from None
        if not isinstance(endpoint, str):
            raise ConfigError(f"neighbour {peer}'s endpoint must be a string.")
        neighbours[peer] = endpoint
    return NodeConfig(node, neighbours, run, fault_config(tables["faults"], run.nodes))


def fault_config(values: Mapping[str, Any], nodes: int) -> FaultConfig:
    """The `[faults]` table as the fault layer's own config (cuts written as `Cut.parse` reads
    them); a cut naming a node outside 0..nodes-1 is refused."""
    fields = {f.name for f in dataclasses.fields(FaultConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown setting faults.{unknown[0]}; valid [faults] settings are "
                          f"{', '.join(sorted(fields))}.")
    parsed: dict[str, Any] = {}
    try:
        for key, value in values.items():
            if key == "cuts":
                if not isinstance(value, str):
                    raise ConfigError(f"faults.cuts must be a string, got {value!r}.")
                parsed[key] = Cut.parse(value)
            else:
                parsed[key] = coerce(FaultConfig, key, value)
        config = FaultConfig(**parsed)
    except ValueError as exc:  # ConfigError is one too
        raise ConfigError(str(exc)) from None
    for cut in config.cuts:
        outside = sorted(k for k in cut.peers if not 0 <= k < nodes)
        if outside:
            raise ConfigError(f"a cut names node {outside[0]}, outside 0..{nodes - 1}.")
    return config


def _settings(cls: type[Any], values: Mapping[str, Any], section: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting {section}.{unknown[0]}; valid [{section}] settings "
                          f"are {', '.join(sorted(known))}.")
    return cls(**{k: coerce(cls, k, v) for k, v in values.items()})


def render_toml(run: RunConfig, node: NodeSettings, neighbours: Mapping[int, str],
                faults: FaultConfig | None = None) -> str:
    """Write a node config that `load_node_config` reads back to the same values."""
    lines = ["# dpnorm node configuration (see node/daemon/settings.py)"]
    for key, value in run.to_dict().items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    lines += ["", "[node]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(node).items()]
    lines += ["", "[neighbours]"]
    lines += [f'"{j}" = {_toml_value(ep)}' for j, ep in sorted(neighbours.items())]
    if faults is not None and faults.enabled:
        lines += ["", "[faults]"]
        for f in dataclasses.fields(faults):
            value = getattr(faults, f.name)
            if f.name == "cuts":
                value = ";".join(cut.spec() for cut in value)
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")
