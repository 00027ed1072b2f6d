"""Assemble one node from a RunConfig: its data shard, model, privacy mechanism and algorithm.
The simulator and the daemon both build nodes here, so they run the same thing. The shard
itself is cut in the data sub-room (node.core.data.run_data); `load_data`, `shard`, `shards`,
`shard_size` and `local_data` are also offered here, next to `build_node` that takes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import torch
from torch import nn

from node.config import RunConfig
from node.core.algorithm import (
    Algorithm,
    DualNoise,
    Gossip,
    PrimalDual,
    PrimalDualParams,
    RobustRule,
    make_compressor,
    with_compression,
)
from node.core.data import Dataset, load_data, local_data, shard, shard_size, shards
from node.core.mechanism import Mechanism
from node.core.model import (
    FlatParams,
    LocalTrainer,
    auroc_kind,
    batchnorm_use,
    build_model,
    resolve_device,
)
from node.core.privacy_plan import privacy_plan
from node.core.seeds import data_order_seed
from privacy.mechanisms import make_generator
from topologies import build, max_degree, metropolis_hastings, neighbours

__all__ = [
    "Federation", "NodeSetup", "build_graph", "build_node", "load_data", "local_data", "shard",
    "shard_size", "shards",
]  # fmt: skip


@dataclass
class NodeSetup:
    """Everything one node needs to run rounds."""

    node: int
    neighbours: list[int]
    algorithm: Algorithm
    trainer: LocalTrainer
    noise: DualNoise
    plan: Mechanism  # the node's privacy mechanism, calibrated
    layout: FlatParams


@dataclass(frozen=True)
class Federation:
    """What every node of one federation computes identically from the config, the graph and
    the dataset: the graph's maximum degree (η), the Metropolis–Hastings weights (D-PSGD) and
    the initial model (one seed, so every node's w⁰). `build_node` computes it itself unless
    given one; a caller that assembles many nodes in one process (the simulator) builds it
    once, so that N nodes do not cost N passes over the whole graph. The model is shared: a
    trainer only calls it functionally (`functional_call` with the node's own parameters)."""

    max_degree: int
    model: nn.Module
    in_shape: tuple[int, ...]
    num_classes: int
    mixing: Mapping[int, Mapping[int, float]] | None = None

    @classmethod
    def of(cls, cfg: RunConfig, graph: nx.Graph, data: Dataset) -> Federation:
        model = build_model(cfg.model, in_shape=data.in_shape, num_classes=data.num_classes,
                            width=cfg.width, seed=cfg.seed, batchnorm=batchnorm_use(cfg))
        mixing = metropolis_hastings(graph) if cfg.algorithm == "dpsgd" else None
        return cls(max_degree(graph), model, data.in_shape, data.num_classes, mixing)


def build_graph(cfg: RunConfig) -> nx.Graph:
    return build(cfg.topology, cfg.nodes, seed=cfg.seed)



def build_node(
    cfg: RunConfig,
    graph: nx.Graph,
    node: int,
    data: Dataset,
    *,
    noise_seed: int | None = None,
    size_is_public: bool = True,
    released: bool = False,
    federation: Federation | None = None,
) -> NodeSetup:
    """One node's state machine and trainer. `data` must already be this node's shard;
    `size_is_public` says whether its size may fix the sampling rate (a shard of a public
    dataset) or not (the node's own file: then the run must declare q or n̂); `released` that
    its messages really leave the process (the daemon; see `formal_guarantee`); `federation`
    the federation-wide values when already computed (`Federation.of(cfg, graph, data)`)."""
    if federation is None:
        federation = Federation.of(cfg, graph, data)
    elif (federation.in_shape, federation.num_classes) != (data.in_shape, data.num_classes):
        raise ValueError(f"node {node}: its data ({data.in_shape}, {data.num_classes} classes) "
                         f"does not fit the federation's model ({federation.in_shape}, "
                         f"{federation.num_classes} classes)")
    model = federation.model
    layout = FlatParams.of(model)
    w0 = layout.flatten(model)
    nbrs = neighbours(graph, node)
    size = len(data.x_train)
    # One derivation of the primal-dual parameters (D-PSGD has none), for the algorithm and
    # for a mechanism that sizes its dual noise from them.
    params = None if cfg.algorithm == "dpsgd" else \
        PrimalDualParams.from_config(cfg, federation.max_degree)
    plan = privacy_plan(cfg, graph, node, size if size_is_public or not cfg.private else None,
                        released=released, max_degree=federation.max_degree, params=params,
                        rows=size)
    # Data order is a public, reproducible choice; the noise is not (OS entropy by default).
    data_gen = torch.Generator().manual_seed(data_order_seed(cfg.seed, node))
    device = resolve_device(cfg.device)
    noise_gen = make_generator(noise_seed, device)
    trainer = LocalTrainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                           batch_size=cfg.batch_size, policy=plan.gradient_policy(),
                           data_generator=data_gen,
                           noise_generator=noise_gen,
                           auroc=auroc_kind(cfg.metric, federation.num_classes), device=device)
    algorithm: Algorithm
    if params is None:
        assert federation.mixing is not None  # Federation.of computes it for dpsgd
        algorithm = Gossip(node, federation.mixing[node], w0, lr=cfg.lr,
                           local_steps=cfg.local_steps, weight_decay=cfg.weight_decay)
    else:
        algorithm = PrimalDual(node, nbrs, w0, params)
    algorithm = with_compression(algorithm, make_compressor(cfg.compress), seed=cfg.seed)
    algorithm.robust = RobustRule.from_config(cfg)
    return NodeSetup(node, nbrs, algorithm, trainer, plan.dual_noise(noise_gen), plan, layout)
