"""Assemble one node from a RunConfig: its data shard, model, gradient policy, privacy plan and
algorithm. The simulator and the daemon both build nodes here, so they run the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from node.config import RunConfig
from node.core.algorithm import Algorithm, DualNoise, Gossip, NoNoise, PrimalDual, PrimalDualParams
from node.core.data import Dataset, load_dataset, load_local, node_dataset
from node.core.models import FlatParams, build_model
from node.core.privacy_plan import GaussianDualNoise, PrivacyPlan, privacy_plan
from node.core.trainer import GradientPolicy, LocalTrainer
from node.errors import DataError
from privacy.mechanisms import make_generator
from topologies import build, metropolis_hastings, neighbours


@dataclass
class NodeSetup:
    """Everything one node needs to run rounds."""

    node: int
    neighbours: list[int]
    algorithm: Algorithm
    trainer: LocalTrainer
    noise: DualNoise
    plan: PrivacyPlan
    layout: FlatParams


def build_graph(cfg: RunConfig) -> nx.Graph:
    return build(cfg.topology, cfg.nodes, seed=cfg.seed)


def max_degree(graph: nx.Graph) -> int:
    return int(max(d for _, d in graph.degree()))


def load_data(cfg: RunConfig) -> Dataset:
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed)


def shard(cfg: RunConfig, data: Dataset, node: int) -> Dataset:
    """The node's own training shard (optionally capped) and the shared test split (capped)."""
    own = node_dataset(data, node=node, nodes=cfg.nodes, spec=cfg.partition, seed=cfg.seed)
    x, y = own.x_train, own.y_train
    if cfg.examples_per_node is not None:
        x, y = x[: cfg.examples_per_node], y[: cfg.examples_per_node]
    xt, yt = own.x_test, own.y_test
    if cfg.test_examples is not None:
        xt, yt = xt[: cfg.test_examples], yt[: cfg.test_examples]
    return Dataset(x, y, xt, yt, own.num_classes, own.in_shape, own.name)


def build_node(
    cfg: RunConfig,
    graph: nx.Graph,
    node: int,
    data: Dataset,
    *,
    noise_seed: int | None = None,
) -> NodeSetup:
    """One node's state machine and trainer. `data` must already be this node's shard."""
    model = build_model(cfg.model, in_shape=data.in_shape, num_classes=data.num_classes,
                        width=cfg.width, seed=cfg.seed)
    layout = FlatParams.of(model)
    w0 = layout.flatten(model)
    nbrs = neighbours(graph, node)
    plan = privacy_plan(cfg, graph, node, len(data.x_train))
    if plan.mode == "none":
        policy = GradientPolicy("clipped", cfg.clip) if cfg.clip_only else GradientPolicy("plain")
    elif plan.mode == "gradient":
        policy = GradientPolicy("noisy", cfg.clip, plan.noise_multiplier)
    else:
        policy = GradientPolicy("clipped", cfg.clip)
    # Data order is a public, reproducible choice; the noise is not (OS entropy by default).
    data_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + node)
    noise_gen = make_generator(noise_seed)
    trainer = LocalTrainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                           batch_size=cfg.batch_size, policy=policy, data_generator=data_gen,
                           noise_generator=noise_gen)
    algorithm: Algorithm
    if cfg.algorithm == "dpsgd":
        algorithm = Gossip(node, metropolis_hastings(graph)[node], w0, lr=cfg.lr,
                           local_steps=cfg.local_steps, weight_decay=cfg.weight_decay)
    else:
        algorithm = PrimalDual(node, nbrs, w0, PrimalDualParams.from_config(cfg, max_degree(graph)))
    noise: DualNoise = (GaussianDualNoise(plan.sigma, noise_gen) if plan.mode == "message"
                        else NoNoise())
    return NodeSetup(node, nbrs, algorithm, trainer, noise, plan, layout)


def local_data(data_file: str, test_file: str, label_column: str, seed: int, *,
               cap: int | None = None) -> Dataset:
    """A node's own files (NPZ x/y or CSV with a label column); without a test file, a fixed
    fifth of the local data is held out for evaluation. `cap` keeps at most that many training
    examples."""
    x, y = load_local(data_file, label_column=label_column)
    if test_file:
        xt, yt = load_local(test_file, label_column=label_column)
    else:
        order = np.random.default_rng(seed).permutation(len(y))
        cut = max(1, len(y) // 5)
        x, y, xt, yt = x[order[cut:]], y[order[cut:]], x[order[:cut]], y[order[:cut]]
    if cap is not None:
        x, y = x[:cap], y[:cap]
    if len(y) == 0:
        raise DataError(f"{data_file} leaves no training examples after holding out a test "
                        "split; add more rows or give a test file.")
    classes = int(max(y.max(), yt.max())) + 1
    t = torch.from_numpy
    return Dataset(t(np.ascontiguousarray(x)), t(np.ascontiguousarray(y)),
                   t(np.ascontiguousarray(xt)), t(np.ascontiguousarray(yt)),
                   max(classes, 2), tuple(x.shape[1:]), Path(data_file).name)
