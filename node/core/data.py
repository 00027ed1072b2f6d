"""Datasets and partitions: Fashion-MNIST from IDX files, synthetic tasks, users' own CSV/NPZ.

A `Dataset` holds a train split and the test split every node shares. `partition` is a pure
function of (labels, nodes, spec, seed) returning disjoint index arrays, one per node;
`node_dataset` keeps only one node's shard of the train split. Nothing is cached on disk.

Errors: `DataError(ValueError)`, one user-facing sentence naming the file or spec at fault.
"""

from __future__ import annotations

import csv
import gzip
import math
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from node.errors import DataError

__all__ = [
    "FASHION_MNIST_DIR", "Dataset", "load_dataset", "load_fashion_mnist",
    "load_local", "node_dataset", "partition", "read_idx", "synthetic",
]  # fmt: skip

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Per-pixel mean and std of the Fashion-MNIST train images after scaling to [0, 1].
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
# IDX type byte → big-endian numpy dtype (the IDX format stores every number big-endian).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_REDRAWS = 1000


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no truth value to compare with
class Dataset:
    """A classification task: float32 inputs (N, *in_shape) and int64 labels in 0..num_classes-1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    in_shape: tuple[int, ...]
    name: str


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz), checking the header against its size."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(dims) * dtype.itemsize:
        raise DataError(f"{path} is truncated or padded: header says {dims}, size is {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _idx_path(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"Fashion-MNIST file {directory / stem}(.gz) is missing; install the Debian package "
        "dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist) or point "
        "--data-dir at a directory holding the four IDX files"
    )


def load_fashion_mnist(directory: str | Path = FASHION_MNIST_DIR) -> Dataset:
    """Load Fashion-MNIST (60k train, 10k test) as normalised float32 tensors of shape N×1×28×28."""
    root = Path(directory)
    split: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_path(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_path(root, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(f"{root}: {part} images must be N×28×28 bytes, got {images.shape}")
        if labels.shape != images.shape[:1] or labels.size == 0 or labels.max() > 9:
            raise DataError(f"{root}: {part} labels do not match the images or exceed 9")
        # Scale to [0, 1] then standardise in one pass, in place on a float32 copy.
        x = images.reshape(-1, 1, 28, 28).astype(np.float32)
        x *= 1.0 / (255.0 * FASHION_STD)
        x -= FASHION_MEAN / FASHION_STD
        split[part] = (x, labels.astype(np.int64))
    return _dataset(*split["train"], *split["test"], num_classes=10, name="fashion-mnist")


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


def load_dataset(name: str, *, data_dir: str | Path = FASHION_MNIST_DIR, seed: int = 0) -> Dataset:
    """The CLI's `--dataset`: "fashion-mnist" from IDX files, or "synthetic" 28×28 images."""
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if name == "synthetic":
        return synthetic(6000, 1000, image=True, seed=seed)
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


def node_dataset(data: Dataset, *, node: int, nodes: int, spec: str, seed: int) -> Dataset:
    """Node `node`'s view: its own train shard plus the shared test split."""
    if not 0 <= node < nodes:
        raise DataError(f"node id {node} is outside 0..{nodes - 1}")
    parts = partition(data.y_train.numpy(), nodes, spec, seed, source=data.name)
    idx = torch.from_numpy(parts[node])
    return replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx])


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
