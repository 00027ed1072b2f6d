"""Each row's fate from a keyed hash of that row alone: the rule that makes one added row of a
user's file change the training data by exactly that row, or not at all (docs/PRIVACY.md).

`row_keys` gives every row a 64-bit number u, a keyed BLAKE2b of its bytes. A node's own file
(`node.core.assemble.local_data`) holds out the rows with u below HELD_OUT. One user file given
as `dataset` to a federation of daemons under a privacy claim (`shared_shard`) holds out the
same rows and gives every other row to site u mod nodes. A permutation of the row indices, or
a partition of the labels, would not do: one inserted row shifts every index after it and moves
other rows between the splits and the sites (measured on a 600-row file, 3 daemons: 209, 212
and 208 of each daemon's 160 training rows changed). With the row's own key, adding a row puts
it on one side, and on the training side at exactly one site; identical rows share a key, so a
duplicate is one more row in the same place.

The other constants of such a run are declared, never read from the file (the daemon's config
refuses a run without them, node.daemon.settings): the class count, which sizes every message,
and the Poisson rate q or the public size n̂. Its features are used as given: the whole file's
mean and std would move every row's features when one row is added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from node.config import RunConfig
from node.core.dataset import Dataset
from node.core.tables import note_as_given, read_file
from node.errors import DataError

__all__ = ["HELD_OUT", "row_keys", "shared_shard", "shared_shards", "shared_sites"]

# A row is held out for testing when its 64-bit key is below this: a fifth of all keys.
HELD_OUT = np.uint64(2**64 // 5)


def row_keys(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """A uint64 per row: keyed BLAKE2b of the row's float32 features and int64 label.

    Fixed little-endian bytes, so that the split of a file does not depend on the machine; the
    key comes from the run's seed, so another seed gives another split. The key need not be
    secret: what matters is that a row's key depends on that row alone."""
    key = hashlib.blake2b(f"dpnorm local split {seed}".encode(), digest_size=32).digest()
    flat = np.ascontiguousarray(x.reshape(len(x), -1), dtype="<f4")
    labels = np.ascontiguousarray(y, dtype="<i8")
    keys = np.empty(len(y), dtype=np.uint64)
    for i in range(len(y)):
        digest = hashlib.blake2b(flat[i].tobytes() + labels[i].tobytes(), digest_size=8,
                                 key=key).digest()
        keys[i] = int.from_bytes(digest, "little")
    return keys


def shared_sites(keys: np.ndarray, nodes: int) -> np.ndarray:
    """Each row's site (int64), or -1 for a held-out test row, from its key alone. A site is
    u mod nodes, which is uniform among the rows that are not held out (u ≥ HELD_OUT) to
    within nodes / 2⁶², so the sites get near-equal shares as a permutation would give them."""
    sites = (keys % np.uint64(nodes)).astype(np.int64)
    sites[keys < HELD_OUT] = -1
    return sites


def shared_shard(cfg: RunConfig, node: int) -> Dataset:
    """Node `node`'s training rows of the user file `cfg.dataset` (file order) and the held-out
    rows every node evaluates on (the first `test_examples` of them, file order), with the
    declared class count: what a daemon trains on when the federation shares one file under a
    privacy claim. Refused with one sentence: no declared `classes`, a label outside them, no
    held-out row, no training row for this node."""
    return shared_shards(cfg, [node])[0]


def shared_shards(cfg: RunConfig, nodes: Sequence[int]) -> list[Dataset]:
    """`shared_shard` of each of these nodes, from one reading of the file (a launch's check)."""
    x, y, _ = read_file(cfg.dataset, label_column=cfg.label_column, hint="--label-column")
    if cfg.classes is None:
        raise DataError(f"the number of classes of {cfg.dataset} would be read from its labels, "
                        "which one added row can change; declare classes = K (--classes K).")
    if int(y.max()) >= cfg.classes:
        raise DataError(f"{cfg.dataset} has a label {int(y.max())}, outside the declared classes "
                        f"0..{cfg.classes - 1}.")
    sites = shared_sites(row_keys(x, y, cfg.seed), cfg.nodes)
    test = np.flatnonzero(sites < 0)
    if len(test) == 0:
        raise DataError(f"{cfg.dataset} has too few rows ({len(y)}) to hold out a test split; "
                        "add more rows.")
    if cfg.test_examples is not None:
        test = test[:cfg.test_examples]
    if x.ndim == 2 and cfg.standardise == "auto":
        note_as_given(cfg.dataset)
    t = torch.from_numpy
    x_test, y_test = t(np.ascontiguousarray(x[test])), t(y[test])
    out = []
    for node in nodes:
        train = np.flatnonzero(sites == node)
        if len(train) == 0:
            raise DataError(f"{cfg.dataset} gives node {node} no training row (each row's site "
                            f"is a keyed hash of the row); add rows or use fewer than "
                            f"{cfg.nodes} nodes.")
        out.append(Dataset(t(np.ascontiguousarray(x[train])), t(y[train]), x_test, y_test,
                           cfg.classes, tuple(x.shape[1:]), Path(cfg.dataset).name))
    return out
