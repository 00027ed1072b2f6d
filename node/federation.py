"""Assemble one node from a RunConfig: its data shard, model, gradient policy, privacy plan and
algorithm. The simulator and the daemon both build nodes here, so they run the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import networkx as nx
import numpy as np
import torch

from node.algorithm import (
    Algorithm,
    DualNoise,
    Gossip,
    NoNoise,
    PrimalDual,
    PrimalDualParams,
    default_eta,
)
from node.config import ConfigError, RunConfig
from node.data import DataError, Dataset, load_dataset, load_local, node_dataset
from node.models import FlatParams, build_model
from node.trainer import GradientPolicy, LocalTrainer
from privacy.accountant import calibrate_noise_multiplier, check_delta
from privacy.errors import PrivacyError
from privacy.mechanisms import gaussian_noise, make_generator
from privacy.modes import message_mode_noise_multiplier, message_mode_sigma
from topologies import build, metropolis_hastings, neighbours

if TYPE_CHECKING:
    from node.daemon_config import NodeConfig


@dataclass(frozen=True)
class PrivacyPlan:
    """What one node releases per round and how it is accounted (DESIGN.md §2).

    `noise_multiplier` is the per-release z the accountant charges at full degree; in message
    mode `sigma` is the per-edge std of the dual noise, chosen so that z is at least the target
    for every number of active neighbours from 1 to the full degree.
    """

    mode: Literal["none", "gradient", "message"]
    delta: float
    target_epsilon: float | None
    sample_rate: float
    noise_multiplier: float
    sigma: float
    steps_per_node: int
    formal: bool
    # message-mode inputs, kept to recompute z when the active degree changes
    lr: float = 0.0
    beta: float = 1.0
    eta: float = 0.0
    n: int = 0
    clip: float = 1.0

    def round_noise_multiplier(self, active_degree: int) -> float:
        """z actually achieved in a round whose messages went to `active_degree` neighbours."""
        if self.mode != "message":
            return self.noise_multiplier
        return message_mode_noise_multiplier(
            self.sigma, lr=self.lr, beta=self.beta, eta=self.eta, degree=active_degree,
            sample_rate=self.sample_rate, n=self.n, clip=self.clip,
        )

    def round_events(self, active_degree: int, local_steps: int) -> list[tuple[float, float, int]]:
        """The (z, q, count) releases one round adds to the accountant."""
        if self.mode == "none" or (active_degree == 0 and self.mode == "message"):
            return []
        if self.mode == "gradient":
            return [(self.noise_multiplier, self.sample_rate, local_steps)]
        return [(self.round_noise_multiplier(active_degree), self.sample_rate, 1)]


class GaussianDualNoise:
    """Independent N(0, σ²) per outgoing dual coordinate, from an explicit generator."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        self.std = std
        self.generator = generator

    def sample(self, numel: int) -> torch.Tensor:
        return gaussian_noise(numel, self.std, self.generator)


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


def primal_dual_params(cfg: RunConfig, graph: nx.Graph) -> PrimalDualParams:
    max_degree = max(d for _, d in graph.degree())
    eta = cfg.eta if cfg.eta is not None else default_eta(cfg.lr, cfg.local_steps, max_degree)
    gamma = cfg.effective_gamma
    alpha = cfg.alpha if gamma is None else gamma / eta
    try:
        return PrimalDualParams(lr=cfg.lr, eta=eta, theta=cfg.theta, alpha=alpha or 0.0,
                                weight_decay=cfg.weight_decay, local_steps=cfg.local_steps)
    except ValueError as exc:
        raise ConfigError(f"{exc}.") from None


def privacy_plan(cfg: RunConfig, graph: nx.Graph, node: int, n: int) -> PrivacyPlan:
    """Calibrate the noise for this node's shard size and degree (always on the safe side)."""
    q = min(cfg.batch_size, n) / n
    if not cfg.private:
        return PrivacyPlan("none", cfg.delta, None, q, 0.0, 0.0, 0, formal=True)
    try:
        check_delta(cfg.delta, n)
        mode = cfg.effective_privacy_mode
        if mode == "gradient":
            steps = cfg.rounds * cfg.local_steps
            z = calibrate_noise_multiplier(cfg.epsilon, cfg.delta, q, steps)
            return PrivacyPlan("gradient", cfg.delta, cfg.epsilon, q, z, 0.0, steps, formal=True)
        params = primal_dual_params(cfg, graph)
        z = calibrate_noise_multiplier(cfg.epsilon, cfg.delta, q, cfg.rounds)
        degree = graph.degree(node)
        # z(E) is not monotone in E; the largest σ over every degree the node can have keeps
        # each round's z at or above the calibrated one when neighbours go down.
        sigma = max(
            message_mode_sigma(z, lr=cfg.lr, beta=params.beta, eta=params.eta, degree=e,
                               sample_rate=q, n=n, clip=cfg.clip)
            for e in range(1, degree + 1)
        )
        return PrivacyPlan("message", cfg.delta, cfg.epsilon, q, z, sigma, cfg.rounds,
                           formal=cfg.local_steps == 1, lr=cfg.lr, beta=params.beta,
                           eta=params.eta, n=n, clip=cfg.clip)
    except PrivacyError as exc:
        raise ConfigError(str(exc)) from None


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
        algorithm = PrimalDual(node, nbrs, w0, primal_dual_params(cfg, graph))
    noise: DualNoise = (GaussianDualNoise(plan.sigma, noise_gen) if plan.mode == "message"
                        else NoNoise())
    return NodeSetup(node, nbrs, algorithm, trainer, noise, plan, layout)


def noise_seed_for(cfg: RunConfig, node: int) -> int | None:
    """A fixed per-node noise seed only when the user asked for one (experiments, tests)."""
    return None if cfg.noise_seed is None else cfg.noise_seed * 1_000_003 + node


def reported_epsilon(plan: PrivacyPlan, spent: float) -> float | None:
    """ε to print: None without DP or where no proof covers the configuration."""
    if plan.mode == "none" or not plan.formal or not math.isfinite(spent):
        return None
    return spent


def local_data(data_file: str, test_file: str, label_column: str, seed: int) -> Dataset:
    """A node's own files (NPZ x/y or CSV with a label column); without a test file, a fixed
    fifth of the local data is held out for evaluation."""
    x, y = load_local(data_file, label_column=label_column)
    if test_file:
        xt, yt = load_local(test_file, label_column=label_column)
    else:
        order = np.random.default_rng(seed).permutation(len(y))
        cut = max(1, len(y) // 5)
        x, y, xt, yt = x[order[cut:]], y[order[cut:]], x[order[:cut]], y[order[:cut]]
    if len(y) == 0:
        raise DataError(f"{data_file} leaves no training examples after holding out a test "
                        "split; add more rows or give a test file.")
    classes = int(max(y.max(), yt.max())) + 1
    t = torch.from_numpy
    return Dataset(t(np.ascontiguousarray(x)), t(np.ascontiguousarray(y)),
                   t(np.ascontiguousarray(xt)), t(np.ascontiguousarray(yt)),
                   max(classes, 2), tuple(x.shape[1:]), Path(data_file).name)


def build_node_for_daemon(cfg: NodeConfig) -> NodeSetup:
    """The daemon's node: the graph from the run's topology (checked against the configured
    neighbours), only this node's shard, and noise from OS entropy unless a seed was given."""
    graph = build_graph(cfg.run)
    me = cfg.node.id
    expected = set(neighbours(graph, me))
    if set(cfg.neighbours) != expected:
        raise ConfigError(f"node {me}'s neighbours {sorted(cfg.neighbours)} do not match "
                          f"topology {cfg.run.topology} with {cfg.run.nodes} nodes, which gives "
                          f"{sorted(expected)}.")
    if cfg.node.data_file:
        data = local_data(cfg.node.data_file, cfg.node.test_file, cfg.node.label_column,
                          cfg.run.seed)
        if cfg.run.examples_per_node is not None:
            data = Dataset(data.x_train[: cfg.run.examples_per_node],
                           data.y_train[: cfg.run.examples_per_node], data.x_test, data.y_test,
                           data.num_classes, data.in_shape, data.name)
    else:
        data = shard(cfg.run, load_data(cfg.run), me)
    return build_node(cfg.run, graph, me, data, noise_seed=noise_seed_for(cfg.run, me))
