"""Datasets and partitions: Fashion-MNIST from IDX files, synthetic tasks, users' own CSV/NPZ.

A `Dataset` holds a train split and the test split every node shares. `partition` is a pure
function of (labels, nodes, spec, seed) returning disjoint index arrays, one per node;
`node_dataset` keeps only one node's shard of the train split. A `LazyDataset` is a Dataset
whose inputs are converted to float32 only for the rows asked for (`select`): a daemon reads
the labels, partitions, and converts only its own rows, without ever holding the whole split
as floats. Nothing is cached on disk.

Errors: `DataError(ValueError)`, one user-facing sentence naming the file or spec at fault.
"""

from __future__ import annotations

import csv
import functools
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from node.core.dataset import Dataset, LazyDataset
from node.core.idx import IdxFile, read_idx
from node.errors import DataError

__all__ = [
    "FASHION_MNIST_DIR", "Dataset", "LazyDataset", "load_dataset", "load_fashion_mnist",
    "load_local", "node_dataset", "open_fashion_mnist", "partition", "read_idx", "shard_rows",
    "synthetic",
]  # fmt: skip

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Per-pixel mean and std of the Fashion-MNIST train images after scaling to [0, 1].
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
_MAX_REDRAWS = 1000


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
                 resident: bool = True) -> LazyDataset:
    """The CLI's `--dataset`: "fashion-mnist" from IDX files, or "synthetic" 28×28 images.
    `resident` False: Fashion-MNIST is re-read for each `select` (a daemon selects once)."""
    if name == "fashion-mnist":
        return open_fashion_mnist(data_dir, resident=resident)
    if name == "synthetic":
        return LazyDataset.of(synthetic(6000, 1000, image=True, seed=seed))
    raise DataError(f"unknown dataset {name!r}; choose fashion-mnist or synthetic")


def partition(
    labels: np.ndarray, nodes: int, spec: str, seed: int, *, source: str = "the data"
) -> list[np.ndarray]:
    """Split example indices among nodes; pure and deterministic in (labels, nodes, spec, seed).

    Specs:
        iid: a random permutation cut into near-equal parts.
        dirichlet:B: per class, shares drawn from Dirichlet(B); small B = strong label skew.
            Nodes that already hold their fair share get no more, and the whole draw is
            repeated (from the same stream) until every node has a minimum number of examples.
        classes:K: each node holds exactly K distinct classes, assigned round-robin over a
            shuffled class order so classes are used as evenly as possible; a class's examples
            are split among the nodes holding it. If nodes·K < num_classes, some classes are
            held by nobody and their examples are dropped (the only non-covering case).

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
    else:
        raise DataError(f"unknown partition {spec!r}; choose iid, dirichlet:B or classes:K")
    return [np.sort(p).astype(np.int64) for p in parts]


def _param(spec: str, text: str, kind: type[int] | type[float], example: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise DataError(
            f"cannot read {text!r} in partition {spec!r}; write it like {example}"
        ) from None


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
    rows = partition(data.y_train.numpy(), nodes, spec, seed, source=data.name)[node]
    return rows if cap is None else rows[:cap]


def node_dataset(data: Dataset, *, node: int, nodes: int, spec: str, seed: int) -> Dataset:
    """Node `node`'s view: its own train shard plus the shared test split."""
    rows = shard_rows(data, node=node, nodes=nodes, spec=spec, seed=seed)
    return LazyDataset.of(data).select(rows, None)


def load_local(path: str | Path, *, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """A user's own data: NPZ with arrays `x` and `y`, or CSV with a header and a label column.

    Returns x as float32 (N, ...) and y as int64 (N,); labels must be non-negative integers.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    if p.suffix == ".npz":
        try:
            # allow_pickle=False: an NPZ from elsewhere must never run code when loaded.
            with np.load(p, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read {p} as NPZ without pickles: {exc}") from exc
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise DataError(f"{p} has no array {missing[0]!r}; save with np.savez(path, x=x, y=y)")
        x_raw, y_raw = arrays["x"], arrays["y"]
        if x_raw.dtype.kind not in "biuf" or y_raw.dtype.kind not in "biuf":
            raise DataError(f"{p}: arrays x and y must be numeric")
        x, y = x_raw.astype(np.float32), y_raw
    else:
        x, y = _read_csv(p, label_column)
    if len(x) != len(y) or y.ndim != 1 or len(y) == 0:
        raise DataError(f"{p}: x has {len(x)} rows but y has shape {y.shape}; they must match")
    if not np.isfinite(x).all():
        raise DataError(f"{p}: x contains NaN or infinite values")
    if not (np.isfinite(y).all() and (y == np.round(y)).all() and (y >= 0).all()):
        raise DataError(f"{p}: labels must be non-negative integers")
    return x, y.astype(np.int64)


def _read_csv(p: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or label_column not in header:
            raise DataError(
                f"{p} has no {label_column!r} column in its header; name the label column"
            )
        col, rows = header.index(label_column), []
        for lineno, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise DataError(
                    f"{p}:{lineno}: {len(row)} fields where the header has {len(header)}"
                )
            try:
                rows.append([float(v) for v in row])
            except ValueError:
                raise DataError(f"{p}:{lineno}: non-numeric value in {row!r}") from None
    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    return np.delete(table, col, axis=1).astype(np.float32), table[:, col]
