"""Assemble one node from a RunConfig: its data shard, model, privacy mechanism and algorithm.
The simulator and the daemon both build nodes here, so they run the same thing.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from torch import nn

from node.config import RunConfig
from node.core.algorithm import Algorithm, DualNoise, Gossip, PrimalDual, PrimalDualParams
from node.core.batchnorm import batchnorm_use
from node.core.compressed import with_compression
from node.core.compression import make_compressor
from node.core.data import Dataset, LazyDataset, load_dataset, load_local, partition_of, shard_rows
from node.core.device import resolve_device
from node.core.keyed_rows import HELD_OUT, row_keys
from node.core.mechanism import Mechanism
from node.core.metrics import auroc_kind
from node.core.models import FlatParams, build_model
from node.core.privacy_plan import privacy_plan
from node.core.robust import RobustRule
from node.core.seeds import data_order_seed
from node.core.tables import fit_scale, note_as_given, standardise
from node.core.trainer import LocalTrainer
from node.errors import DataError
from privacy.mechanisms import make_generator
from topologies import build, max_degree, metropolis_hastings, neighbours


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


def load_data(cfg: RunConfig, *, resident: bool = True) -> LazyDataset:
    """The run's dataset with its labels read and its inputs left as stored until `shard`
    selects a node's rows. `resident` False: each shard re-reads the files, so that a daemon,
    which needs one shard, never holds the whole split (see node.core.data.FashionImages).
    A CSV/NPZ file is split into a train part and a held-out test split (node.core.tables)."""
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed, resident=resident,
                        label_column=cfg.label_column, sites=cfg.nodes)
    if (cfg.private and cfg.standardise == "auto" and data.table is not None
            and data.table.public_scale is None):
        note_as_given(cfg.dataset)
    return data


def shard_size(cfg: RunConfig, data: Dataset, node: int) -> int:
    """How many training examples `shard` gives the node, from the partition alone."""
    return len(_rows(cfg, data, node))


def shard(cfg: RunConfig, data: Dataset, node: int, *, standardised: bool = True) -> Dataset:
    """The node's own training shard (optionally capped) and the shared test split (capped);
    only those rows of a LazyDataset are converted to float32. A table's shard is standardised
    by the node alone (node.core.tables.standardise) unless `standardised` is False."""
    lazy = LazyDataset.of(data)
    if cfg.validation_fraction:
        part = _with_validation(cfg, lazy, _capped_parts(cfg, data), node)
    else:
        part = lazy.select(_rows(cfg, data, node), cfg.test_examples)
    if not standardised:
        return part
    return standardise(part, lazy.table, private=cfg.private, mode=cfg.standardise)


def shards(cfg: RunConfig, data: Dataset) -> list[Dataset]:
    """Every node's `shard`, in id order, from one partition (the simulator's N nodes)."""
    lazy = LazyDataset.of(data)
    parts = _capped_parts(cfg, data)
    selected = ([_with_validation(cfg, lazy, parts, i) for i in range(len(parts))]
                if cfg.validation_fraction else
                [lazy.select(rows, cfg.test_examples) for rows in parts])
    return [standardise(part, lazy.table, private=cfg.private, mode=cfg.standardise)
            for part in selected]


def _rows(cfg: RunConfig, data: Dataset, node: int) -> np.ndarray:
    rows = shard_rows(data, node=node, nodes=cfg.nodes, spec=cfg.partition, seed=cfg.seed,
                      cap=cfg.examples_per_node)
    return split_validation(cfg, rows, node)[0]


def _capped_parts(cfg: RunConfig, data: Dataset) -> list[np.ndarray]:
    cap = cfg.examples_per_node
    return [rows if cap is None else rows[:cap]
            for rows in partition_of(data, cfg.nodes, cfg.partition, cfg.seed)]


_VALIDATION_STREAM = 0x7A11DA7E  # keeps the hold-out's draws apart from every other seeded use


def split_validation(cfg: RunConfig, rows: np.ndarray, node: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) rows of a node's shard (both ascending): `validation_fraction`
    of them held out by a draw from the run's seed, so tuning is repeatable and a run's
    training rows never include the rows its choice was scored on."""
    if not cfg.validation_fraction:
        return rows, rows[:0]
    rng = np.random.default_rng((cfg.seed, node, _VALIDATION_STREAM))
    held = np.zeros(len(rows), dtype=bool)
    held[rng.permutation(len(rows))[:round(cfg.validation_fraction * len(rows))]] = True
    return rows[~held], rows[held]


# One validation split per (dataset, settings), shared by every node like the test split.
_VALIDATION: weakref.WeakKeyDictionary[LazyDataset, dict[tuple[object, ...], tuple[
    torch.Tensor, torch.Tensor]]] = weakref.WeakKeyDictionary()


def _with_validation(cfg: RunConfig, lazy: LazyDataset, parts: list[np.ndarray],
                     node: int) -> Dataset:
    """Node `node`'s training rows, evaluated on every node's held-out rows (capped at
    `test_examples` by a seeded draw) in place of the test split, which is never read: a
    choice made on this score has not seen the test set."""
    key = (cfg.nodes, cfg.partition, cfg.seed, cfg.examples_per_node, cfg.validation_fraction,
           cfg.test_examples)
    cache = _VALIDATION.setdefault(lazy, {})
    if key not in cache:
        held = np.concatenate([split_validation(cfg, rows, i)[1] for i, rows in enumerate(parts)])
        if cfg.test_examples is not None and len(held) > cfg.test_examples:
            rng = np.random.default_rng((cfg.seed, _VALIDATION_STREAM))
            held = rng.choice(held, cfg.test_examples, replace=False)
        held = np.sort(held)
        if len(held) == 0:
            raise DataError(f"validation_fraction {cfg.validation_fraction} holds out no row "
                            "of any shard; raise it or give the nodes more examples.")
        cache[key] = (lazy.train.take(held), lazy.y_train[torch.from_numpy(held)])
    x_val, y_val = cache[key]
    rows = split_validation(cfg, parts[node], node)[0]
    return Dataset(lazy.train.take(rows), lazy.y_train[torch.from_numpy(rows)], x_val, y_val,
                   lazy.num_classes, lazy.in_shape, lazy.name)


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


def local_data(data_file: str, test_file: str, label_column: str, seed: int, *,
               cap: int | None = None, private: bool = True,
               classes: int | None = None, standardise: str = "auto") -> Dataset:
    """A node's own files (NPZ x/y or CSV with a label column); without a test file, about a
    fifth of the local data is held out for evaluation. `cap` keeps at most that many training
    examples, and only in a run without a privacy claim (`private=False`).

    The unit of privacy is one row of `data_file`, so adding or removing one row must change
    the training set by exactly that row or not at all. Each row therefore decides its own fate
    from its contents alone: a keyed hash of the row (features and label as loaded) gives it a
    number u, and rows with u below a fifth are the held-out ones. A permutation of the row
    indices would not do: inserting one row shifts every index after it, which moves other rows
    between the two splits. Identical rows get the same u and land on the same side, so adding
    a duplicate still adds exactly one training row (or one test row).

    A cap to k rows cannot be made stable at all: with exactly k rows kept, adding a row that
    is kept has to push another out, a replacement (≈ 2ε). Under a privacy claim it is refused;
    trim the file itself instead, which fixes the dataset the guarantee is about. Without one,
    the cap keeps the k training rows of smallest u, whatever their order in the file.

    The number of classes sizes the model, and so every message: counted from the labels, one
    row with a new largest label would change the size of everything sent (ε = ∞). A private
    run therefore declares `classes`, and a label outside it is refused.

    A table (2-D features) is standardised per feature with the mean and std of the node's own
    training rows, after the split and the cap, when the run makes no privacy claim; a private
    run uses the features as given, since fitted statistics would move every row's features
    when one row is added (node.core.tables).
    """
    x, y = load_local(data_file, label_column=label_column)
    if cap is not None and private:
        raise DataError(f"examples_per_node cannot cap the node's own file {data_file} in a "
                        "private run, since a cap swaps rows when one is added; remove the "
                        "setting and trim the file itself.")
    u = row_keys(x, y, seed)
    if test_file:
        xt, yt = load_local(test_file, label_column=label_column)
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{test_file} has inputs of shape {xt.shape[1:]} but {data_file} has "
                            f"{x.shape[1:]}; give both files the same features.")
    else:
        held = u < HELD_OUT
        if not held.any():
            raise DataError(f"{data_file} has too few rows ({len(y)}) to hold out a test split; "
                            "add more rows or give a test file.")
        x, y, xt, yt, u = x[~held], y[~held], x[held], y[held], u[~held]
    if cap is not None and len(y) > cap:
        # Sorting the kept indices back keeps the rows in file order, as without a cap.
        keep = np.sort(np.argsort(u, kind="stable")[:cap])
        x, y = x[keep], y[keep]
    if len(y) == 0:
        raise DataError(f"{data_file} leaves no training examples after holding out a test "
                        "split; add more rows or give a test file.")
    seen = int(max(y.max(), yt.max())) + 1
    if classes is None and private:
        raise DataError(f"the number of classes of {data_file} would be read from its labels, "
                        "which one added row can change; declare classes = K in the config.")
    if classes is not None and seen > classes:
        raise DataError(f"{data_file} has a label {seen - 1}, outside the declared classes "
                        f"0..{classes - 1}.")
    if standardise == "public":
        raise DataError(f"standardise = public needs published constants, which a node's own "
                        f"file {data_file} does not have; pre-scale it and use none.")
    if standardise == "site" and private:
        raise DataError("standardise = site fits statistics on the node's private rows, which "
                        "epsilon does not cover; use auto or none in a private run.")
    if x.ndim == 2 and private and standardise == "auto":
        note_as_given(data_file)
    elif x.ndim == 2 and standardise != "none" and not private:
        mean, std = fit_scale(x)
        x, xt = (x - mean) / std, (xt - mean) / std
    t = torch.from_numpy
    return Dataset(t(np.ascontiguousarray(x)), t(np.ascontiguousarray(y)),
                   t(np.ascontiguousarray(xt)), t(np.ascontiguousarray(yt)),
                   max(classes or seen, 2), tuple(x.shape[1:]), Path(data_file).name)
