"""`python -m node --config FILE.toml [--set key=value ...]`: run one dpnorm node daemon.

Exit status: 0 when the node finished its rounds, hit its privacy budget or was asked to stop;
2 for a bad config, data or key file (one sentence on stderr); 1 for an internal failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import setproctitle

from gossip.errors import SetupError
from gossip.keys import load_curve_keys
from node.cli import fail, guarded, parse_set_overrides
from node.daemon.lifeline import from_env
from node.daemon.settings import NodeConfig, load_node_config
from node.errors import USER_ERRORS, ConfigError

if TYPE_CHECKING:
    from node.core.assemble import NodeSetup
    from node.core.data import Dataset
    from node.daemon.prometheus import Exporter

# torch, uvloop and the data are imported only after the config has been read: a bad config is
# refused in a fraction of a second, before anything heavy is loaded.


def _setup_logging(out: Path, level: str, node: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter(f"%(asctime)s node{node} %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(out / "node.log", encoding="utf-8")
    file_handler.setFormatter(fmt)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [file_handler, console]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


def read_config(argv: list[str] | None) -> NodeConfig:
    parser = argparse.ArgumentParser(prog="dpnorm-node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the node's TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. lr=0.1 or node.round_timeout=5")
    args = parser.parse_args(argv)
    refused: tuple[type[Exception], ...] = (*USER_ERRORS, SetupError)
    try:
        cfg = load_node_config(args.config, parse_set_overrides(args.set))
        if cfg.node.curve_keys:
            # Key files first: a missing key should be refused before any data is touched or
            # any output (ledger, metrics) is created.
            load_curve_keys(Path(cfg.node.curve_keys), cfg.node.id, cfg.neighbours)
    except refused as exc:
        fail(str(exc))
    return cfg


def daemon_data(cfg: NodeConfig) -> tuple[Dataset, bool]:
    """What this daemon trains and evaluates on, and whether its size is public (may fix q):
    its own file (`node.data_file`); its share of one user file given as `dataset` under a
    privacy claim, each row's side and site a keyed hash of the row (node.core.data.keyed_rows);
    else its shard of the dataset, as the simulator cuts it."""
    from node.core.data import load_data, local_data, shard, shared_shard

    if cfg.node.data_file:
        return local_data(cfg.node.data_file, cfg.node.test_file, cfg.node.data_label_column,
                          cfg.run.seed, cap=cfg.run.examples_per_node, private=cfg.run.private,
                          classes=cfg.run.classes, standardise=cfg.run.standardise), False
    if cfg.shared_file:
        return shared_shard(cfg.run, cfg.node.id), False
    # Not resident: only this node's rows (and its test rows) are ever read and converted.
    return shard(cfg.run, load_data(cfg.run, resident=False), cfg.node.id), True


def build_daemon_node(cfg: NodeConfig) -> NodeSetup:
    """The daemon's node: the graph from the run's topology (checked against the configured
    neighbours), only this node's data (`daemon_data`), and noise from OS entropy unless a
    seed was given."""
    from node.core.assemble import build_graph, build_node
    from node.core.seeds import noise_seed
    from topologies import neighbours

    graph = build_graph(cfg.run)
    me = cfg.node.id
    expected = set(neighbours(graph, me))
    if set(cfg.neighbours) != expected:
        raise ConfigError(f"node {me}'s neighbours {sorted(cfg.neighbours)} do not match "
                          f"topology {cfg.run.topology} with {cfg.run.nodes} nodes, which gives "
                          f"{sorted(expected)}.")
    data, size_is_public = daemon_data(cfg)
    return build_node(cfg.run, graph, me, data, noise_seed=noise_seed(cfg.run.noise_seed, me),
                      size_is_public=size_is_public, released=True)


def _name_process(cfg: NodeConfig, argv: list[str]) -> None:
    # `ps` shows which node this is and how to start it again; a forked node would otherwise
    # show the template's command line, the same for every node.
    setproctitle.setproctitle(" ".join(["dpnorm-node", str(cfg.node.id), *argv]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # A launcher that spawned this node ties its lifetime to its own (node.daemon.lifeline).
    from_env()
    cfg = read_config(argv)
    _name_process(cfg, argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.run.threads))
    _setup_logging(Path(cfg.node.out), cfg.node.log_level, cfg.node.id)
    # Bound before anything heavy and before joining: a port in use is refused at once.
    exporter = guarded(lambda: _exporter(cfg)) if cfg.node.metrics_port else None

    import torch
    import uvloop

    from node.core.runner import NodeRunner
    from node.daemon.lifetime import open_spend
    from node.daemon.loop import Daemon
    from node.daemon.state import CheckpointError, resume, write_final

    torch.set_num_threads(cfg.run.threads)
    # torch's global generator starts from one fixed seed in every process (and a fork server's
    # children share the template's): no DP draw uses it, but none ever shares a stream.
    torch.manual_seed(secrets.randbits(64))
    expected: tuple[type[Exception], ...] = (SetupError, CheckpointError, *USER_ERRORS)
    log = logging.getLogger("node")
    ledger = lifetime = None
    try:
        setup = build_daemon_node(cfg)
        # Every check that can refuse the start reads only; then both ledgers are opened.
        ledger, lifetime = open_spend(cfg, setup)
        # Each round's spend goes to the ledgers before anything of it is sent (NodeRunner.step).
        runner = NodeRunner(cfg.run, setup, ledger, lifetime)
        resume(runner, cfg, ledger)
        if exporter is not None:
            exporter.resume(runner.round, runner.epsilon(), runner.last_accuracy)
        daemon = Daemon(cfg, runner, announce=lambda line: print(line, flush=True),
                        exporter=exporter)
        uvloop.run(daemon.run())
    except expected as exc:
        log.info("refused to start: %s", exc)  # stderr gets the one sentence from fail()
        fail(str(exc))
    except Exception:
        log.exception("node %d failed", cfg.node.id)
        sys.stderr.write(f"error: node {cfg.node.id} failed unexpectedly; see "
                         f"{Path(cfg.node.out) / 'node.log'}.\n")
        return 1
    finally:
        for kept in (ledger, lifetime):
            if kept is not None:
                kept.close()
        if exporter is not None:
            exporter.close()
    final = daemon.final()
    write_final(cfg, final)
    log.info("exit: %s after %d rounds", daemon.exit_reason, runner.round)
    if setup.plan.claims_privacy:
        sys.stderr.write(spend_line(cfg.node.id, final["epsilon"], final["lifetime_epsilon"],
                                    cfg.run.delta))
    return 0


def spend_line(node: int, run: float | None, lifetime: float | None, delta: float) -> str:
    """The sentence a private node ends with: this run's ε and its data's lifetime ε."""
    def shown(value: float | None) -> str:
        return "null (no formal guarantee)" if value is None else f"{value:.4g}"

    return (f"node {node}: ε = {shown(run)} this run, {shown(lifetime)} over the lifetime of "
            f"its data (δ = {delta:g}).\n")


def _exporter(cfg: NodeConfig) -> Exporter:
    from node.daemon.prometheus import serve  # prometheus_client only when the port is set

    return serve(cfg)


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: collecting torch's object graph at exit takes
    seconds on a loaded machine, and a SIGTERM'd node must be gone within 5 s. Everything
    durable (metrics, checkpoint, ledger, final.json) is already written and closed."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
