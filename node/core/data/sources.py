"""Datasets and partitions: Fashion-MNIST from IDX files, synthetic tasks, and (through
node.core.data.tables) the named public tables and users' own CSV/NPZ files.

A `Dataset` holds a train split and the test split every node shares. `partition` is a pure
function of (labels, nodes, spec, seed, and for drift:FEATURE the features) returning disjoint
index arrays, one per node;
`node_dataset` keeps only one node's shard of the train split. A `LazyDataset` is a Dataset
whose inputs are converted to float32 only for the rows asked for (`select`): a daemon reads
the labels, partitions, and converts only its own rows, without ever holding the whole split
as floats. Nothing is cached on disk.

Errors: `DataError(ValueError)`, one user-facing sentence naming the file or spec at fault.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from node.core.data.dataset import Dataset, LazyDataset
from node.core.data.idx import IdxFile, read_idx
from node.core.data.tables import load_local, open_table
from node.errors import DataError

__all__ = [
    "FASHION_MNIST_DIR", "Dataset", "LazyDataset", "load_dataset", "load_fashion_mnist",
    "load_local", "node_dataset", "open_fashion_mnist", "partition", "partition_of", "read_idx",
    "shard_rows", "synthetic",
]  # fmt: skip

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Per-pixel mean and std of the Fashion-MNIST train images after scaling to [0, 1].
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
_MAX_REDRAWS = 1000
# drift:FEATURE: the std of the Gaussian jitter added to each row's rank quantile in [0, 1], so
# neighbouring sites' feature ranges overlap a little, as real sites' populations do.
DRIFT_JITTER = 0.05


def _idx_path(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"Fashion-MNIST file {directory / stem}(.gz) is missing; install the Debian package "
        "dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist) or point "
        "--data-dir at a directory holding the four IDX files"
    )


class FashionImages:
    """Fashion-MNIST images as stored (one byte per pixel), normalised per request.

    `resident`: the file is decompressed once, on first use, and its bytes kept (47 MB for the
    train split, against 188 MB as floats) — for the simulator, which asks for every node's
    rows. Otherwise each request streams the file (`IdxFile.take`): a daemon asks once.
    """

    def __init__(self, file: IdxFile, *, resident: bool) -> None:
        self.file = file
        self.resident = resident

    def __len__(self) -> int:
        return len(self.file)

    @functools.cached_property
    def _bytes(self) -> np.ndarray:
        return self.file.read()

    def take(self, rows: np.ndarray) -> torch.Tensor:
        if self.resident:
            return torch.from_numpy(normalise_fashion(self._bytes[rows]))
        # Piece by piece into the one float32 array: the shard is never held as bytes too.
        out = np.empty((len(rows), 1, 28, 28), np.float32)
        for at, block in self.file.blocks(rows):
            out[at : at + len(block)] = normalise_fashion(block)
        return torch.from_numpy(out)

    def head(self, count: int) -> torch.Tensor:
        if self.resident:
            return torch.from_numpy(normalise_fashion(self._bytes[:count]))
        return self.take(np.arange(min(count, len(self))))


def normalise_fashion(images: np.ndarray) -> np.ndarray:
    """N×28×28 bytes → N×1×28×28 float32, scaled to [0, 1] and standardised. Elementwise, so
    converting some rows gives exactly (bit for bit) those rows of converting them all."""
    x = images.reshape(-1, 1, 28, 28).astype(np.float32)
    x *= 1.0 / (255.0 * FASHION_STD)  # in place on the fresh copy: one float32 array in all
    x -= FASHION_MEAN / FASHION_STD
    return x


def open_fashion_mnist(directory: str | Path = FASHION_MNIST_DIR, *,
                       resident: bool = True) -> LazyDataset:
    """Fashion-MNIST (60k train, 10k test) with its labels read and every header checked; the
    images are normalised (N×1×28×28 float32) only for the rows selected. `resident`: see
    `FashionImages`."""
    root = Path(directory)
    split: dict[str, tuple[FashionImages, torch.Tensor]] = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images = IdxFile(_idx_path(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_path(root, f"{prefix}-labels-idx1-ubyte"))
        if len(images.shape) != 3 or images.row_shape != (28, 28) or images.dtype != np.uint8:
            raise DataError(f"{root}: {part} images must be N×28×28 bytes, got {images.shape}")
        if labels.shape != images.shape[:1] or labels.size == 0 or labels.max() > 9:
            raise DataError(f"{root}: {part} labels do not match the images or exceed 9")
        split[part] = (FashionImages(images, resident=resident),
                       torch.from_numpy(labels.astype(np.int64)))
    return LazyDataset(*split["train"], *split["test"], num_classes=10, in_shape=(1, 28, 28),
                       name="fashion-mnist")


def load_fashion_mnist(directory: str | Path = FASHION_MNIST_DIR) -> LazyDataset:
    """Fashion-MNIST as normalised float32 tensors of shape N×1×28×28 (converted on first use)."""
    return open_fashion_mnist(directory, resident=True)


def _dataset(
    x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, *, num_classes: int, name: str
) -> Dataset:
    t = torch.from_numpy  # zero-copy: the arrays were freshly made for this Dataset
    return Dataset(t(x), t(y), t(xt), t(yt), num_classes, tuple(x.shape[1:]), name)


def synthetic(
    n_train: int,
    n_test: int,
    *,
    num_classes: int = 10,
    dim: int = 32,
    image: bool = False,
    noise: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """A learnable task: one Gaussian mean per class plus isotropic noise.

    Class means are spread so neighbouring classes sit about 4 noise-stds apart whatever `dim`
    is, so a linear model gets well above chance within a few hundred steps but not 100%.
    Labels are balanced (every class present whenever n ≥ num_classes). With image=True the
    inputs have shape 1×28×28 (dim is then 784) so that cnn and resnet10 can train on them.
    """
    if n_train < 1 or n_test < 1 or num_classes < 2 or dim < 1 or noise <= 0:
        raise DataError("synthetic data needs n_train, n_test, dim ≥ 1, num_classes ≥ 2, noise > 0")
    shape = (1, 28, 28) if image else (dim,)
    d = math.prod(shape)
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 3.0 * noise / math.sqrt(d), (num_classes, d))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
        x = means[y] + rng.normal(0.0, noise, (n, d))
        return x.astype(np.float32).reshape(n, *shape), y

    return _dataset(*draw(n_train), *draw(n_test), num_classes=num_classes, name="synthetic")


def load_dataset(name: str, *, data_dir: str | Path = FASHION_MNIST_DIR, seed: int = 0,
                 resident: bool = True, label_column: str = "label",
                 sites: int = 1) -> LazyDataset:
    """The CLI's `--dataset`: "fashion-mnist" from IDX files, "synthetic" 28×28 images, a named
    public table, or one CSV/NPZ file (`node.core.data.tables.open_table`, with a held-out fifth and
    at least two rows per site). `resident` False: Fashion-MNIST is re-read for each `select`
    (a daemon selects once)."""
    if name == "fashion-mnist":
        return open_fashion_mnist(data_dir, resident=resident)
    if name == "synthetic":
        return LazyDataset.of(synthetic(6000, 1000, image=True, seed=seed))
    if name in ("breast-cancer", "kdd-attacks") or name.lower().endswith((".csv", ".npz")):
        return open_table(name, seed=seed, label_column=label_column, sites=sites)
    raise DataError(f"unknown dataset {name!r}; choose fashion-mnist, synthetic, breast-cancer, "
                    "kdd-attacks, or a .csv or .npz file")


def partition(
    labels: np.ndarray, nodes: int, spec: str, seed: int, *, source: str = "the data",
    features: np.ndarray | None = None, columns: Sequence[str] = (),
) -> list[np.ndarray]:
    """Split example indices among nodes; pure and deterministic in (labels, nodes, spec, seed)
    and, for drift:FEATURE only, the features (N × d) and their names `columns`.

    Specs:
        iid: a random permutation cut into near-equal parts.
        dirichlet:B: per class, shares drawn from Dirichlet(B); small B = strong label skew.
            Nodes that already hold their fair share get no more, and the whole draw is
            repeated (from the same stream) until every node has a minimum number of examples.
        classes:K: each node holds exactly K distinct classes, assigned round-robin over a
            shuffled class order so classes are used as evenly as possible; a class's examples
            are split among the nodes holding it. If nodes·K < num_classes, some classes are
            held by nobody and their examples are dropped (the only non-covering case).
        drift:FEATURE: feature drift, as between hospitals or networks whose populations differ:
            rows are ordered by the named column (a name in `columns` or a 0-based index; ties
            broken at random) with Gaussian jitter DRIFT_JITTER on the rank quantile, and cut
            into near-equal consecutive parts, so each node sees its own range of the feature.

    Returns:
        One sorted int64 index array per node; the arrays are disjoint.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    kind, _, arg = spec.partition(":")
    if nodes < 1 or n < nodes:
        raise DataError(f"partition {spec} cannot give {nodes} nodes an example each from {n}")
    rng = np.random.default_rng(seed)
    if kind == "iid" and not arg:
        parts = np.array_split(rng.permutation(n), nodes)
    elif kind == "dirichlet" and arg:
        beta = _param(spec, arg, float, "dirichlet:0.5")
        if not 0 < beta < math.inf:
            raise DataError(f"partition {spec} needs a concentration B > 0, as in dirichlet:0.5")
        parts = _dirichlet(labels, nodes, beta, rng, spec)
    elif kind == "classes" and arg:
        k, classes = int(_param(spec, arg, int, "classes:2")), np.unique(labels)
        if not 1 <= k <= len(classes):
            raise DataError(
                f"partition {spec} asks for {k} classes per node but {source} has "
                f"{len(classes)}; choose K between 1 and {len(classes)}"
            )
        parts = _shards(labels, nodes, k, classes, rng, spec)
    elif kind == "drift" and arg:
        values = _drift_column(spec, arg, features, columns, n, source)
        parts = _drift(values, nodes, rng)
    else:
        raise DataError(f"unknown partition {spec!r}; choose iid, dirichlet:B, classes:K or "
                        "drift:FEATURE")
    return [np.sort(p).astype(np.int64) for p in parts]


def _param(spec: str, text: str, kind: type[int] | type[float], example: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise DataError(
            f"cannot read {text!r} in partition {spec!r}; write it like {example}"
        ) from None


def _drift_column(spec: str, arg: str, features: np.ndarray | None, columns: Sequence[str],
                  n: int, source: str) -> np.ndarray:
    if features is None or features.ndim != 2 or len(features) != n:
        raise DataError(f"partition {spec} needs a table's features, and {source} is not a "
                        "table; use iid, dirichlet:B or classes:K")
    names = [_column_key(c) for c in columns]
    if _column_key(arg) in names:
        return features[:, names.index(_column_key(arg))]
    if arg.isdigit() and int(arg) < features.shape[1]:
        return features[:, int(arg)]
    first = ", ".join(columns[:3]) + (", …" if len(columns) > 3 else "")
    named = f"name one of its columns ({first}) or " if columns else ""
    raise DataError(f"partition {spec}: {source} has no feature {arg!r}; {named}give a column "
                    f"index below {features.shape[1]}")


def _column_key(name: str) -> str:
    """"mean texture", "mean_texture" and "Mean Texture" name the same column."""
    return name.strip().lower().replace("_", " ")


def _drift(values: np.ndarray, nodes: int, rng: np.random.Generator) -> list[np.ndarray]:
    n = len(values)
    shuffled = rng.permutation(n)  # a random order first, so that ties are broken at random
    ranks = np.empty(n)
    ranks[shuffled[np.argsort(values[shuffled], kind="stable")]] = np.arange(n)
    key = ranks / max(n - 1, 1) + rng.normal(0.0, DRIFT_JITTER, n)
    return np.array_split(np.argsort(key, kind="stable"), nodes)


def _dirichlet(
    labels: np.ndarray, nodes: int, beta: float, rng: np.random.Generator, spec: str
) -> list[np.ndarray]:
    n = labels.shape[0]
    min_size = max(1, min(10, n // (2 * nodes)))
    for _ in range(_MAX_REDRAWS):
        parts: list[list[int]] = [[] for _ in range(nodes)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(nodes, beta))
            # Capping at the fair share keeps one node from taking nearly everything.
            share *= np.array([len(p) < n / nodes for p in parts])
            if share.sum() <= 0:  # tiny B can underflow every open node's share to 0
                share = np.array([len(p) < n / nodes for p in parts], dtype=float)
            cuts = (np.cumsum(share / share.sum()) * len(idx)).astype(int)[:-1]
            for p, chunk in zip(parts, np.split(idx, cuts), strict=True):
                p.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.array(p, dtype=np.int64) for p in parts]
    raise DataError(
        f"partition {spec} left some of {nodes} nodes with under {min_size} examples "
        f"in {_MAX_REDRAWS} draws; raise B or use fewer nodes"
    )


def _shards(
    labels: np.ndarray, nodes: int, k: int, classes: np.ndarray, rng: np.random.Generator, spec: str
) -> list[np.ndarray]:
    order = rng.permutation(classes)
    # Node i holds slots i·K .. i·K+K-1 of the cyclic class order: K distinct classes since K ≤ C.
    held = [[order[(i * k + j) % len(order)] for j in range(k)] for i in range(nodes)]
    parts: list[list[np.ndarray]] = [[] for _ in range(nodes)]
    for c in classes:
        holders = [i for i in range(nodes) if c in held[i]]
        idx = rng.permutation(np.flatnonzero(labels == c))
        if not holders:
            continue  # nodes·K < number of classes: nobody holds c, its examples are dropped
        if len(idx) < len(holders):
            raise DataError(
                f"partition {spec}: class {c} has too few examples for {len(holders)} nodes"
            )
        for i, chunk in zip(holders, np.array_split(idx, len(holders)), strict=True):
            parts[i].append(chunk)
    return [np.concatenate(p) for p in parts]


def shard_rows(data: Dataset, *, node: int, nodes: int, spec: str, seed: int,
               cap: int | None = None) -> np.ndarray:
    """The train rows node `node` holds (ascending): its part of `partition`, the first `cap`."""
    if not 0 <= node < nodes:
        raise DataError(f"node id {node} is outside 0..{nodes - 1}")
    rows = partition_of(data, nodes, spec, seed)[node]
    return rows if cap is None else rows[:cap]


def partition_of(data: Dataset, nodes: int, spec: str, seed: int) -> list[np.ndarray]:
    """`partition` of a dataset's train split; a drift spec gets the features of a table (a 2-D
    split; named columns where the dataset carries its `Table`), every other kind labels only."""
    features: np.ndarray | None = None
    columns: Sequence[str] = ()
    if spec.startswith("drift:") and len(data.in_shape) == 1:
        features = data.x_train.numpy()
        table = data.table if isinstance(data, LazyDataset) else None
        columns = table.columns if table is not None else ()
    return partition(data.y_train.numpy(), nodes, spec, seed, source=data.name,
                     features=features, columns=columns)


def node_dataset(data: Dataset, *, node: int, nodes: int, spec: str, seed: int) -> Dataset:
    """Node `node`'s view: its own train shard plus the shared test split."""
    rows = shard_rows(data, node=node, nodes=nodes, spec=spec, seed=seed)
    return LazyDataset.of(data).select(rows, None)
