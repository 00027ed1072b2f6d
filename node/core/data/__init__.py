"""The data sub-room of core: datasets and where their rows come from — Fashion-MNIST from IDX
files and synthetic tasks (`sources`, `idx`), the named public tables and users' CSV/NPZ files
(`tables`), the keyed row split of a node's own file (`keyed_rows`), the lazily converted
`Dataset` itself (`dataset`), and each node's shard of a run's data (`run_data`).

Rule 1: this `__init__` is the sub-room's door; every other room, the rest of core included,
imports what it needs from `node.core.data`, never from a module inside it.
Rule 2: like all of core, synchronous and without sockets or clocks; it reads files, and
imports only `node.config`, `node.errors`, `privacy` and `topologies`.
"""

from __future__ import annotations

from node.core.data.dataset import Dataset, LazyDataset
from node.core.data.keyed_rows import shared_shard, shared_shards
from node.core.data.run_data import load_data, local_data, shard, shard_size, shards
from node.core.data.sources import (
    FASHION_MNIST_DIR,
    load_dataset,
    load_fashion_mnist,
    partition_of,
    synthetic,
)
from node.core.data.tables import fit_scale, load_local, standardise

__all__ = [
    "FASHION_MNIST_DIR",
    "Dataset",
    "LazyDataset",
    "fit_scale",
    "load_data",
    "load_dataset",
    "load_fashion_mnist",
    "load_local",
    "local_data",
    "partition_of",
    "shard",
    "shard_size",
    "shards",
    "shared_shard",
    "shared_shards",
    "standardise",
    "synthetic",
]
