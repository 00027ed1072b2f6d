"""Data: IDX loader, synthetic task, partitions, users' own CSV/NPZ files (the readers'
every bad-input sentence, the named tables and the drift partition: tests/unit/test_tables.py)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.data import (
    FASHION_MNIST_DIR,
    load_dataset,
    load_fashion_mnist,
    load_local,
    synthetic,
)
from node.core.data.idx import read_idx
from node.core.data.sources import node_dataset, partition
from node.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format: magic 0,0,0x08,ndim then big-endian dims."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(root: Path, n_train: int = 20, n_test: int = 10, *, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        files = {
            f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28)),
            f"{prefix}-labels-idx1-ubyte": np.arange(n) % 10,
        }
        for stem, array in files.items():
            data = idx_bytes(array)
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (root / stem).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_on_small_files(tmp_path: Path, gz: bool) -> None:
    write_fashion(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.y_train.tolist() == [i % 10 for i in range(20)]
    assert data.in_shape == (1, 28, 28) and data.num_classes == 10
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    expected = (raw.astype(np.float32) / 255 - 0.2860) / 0.3530
    np.testing.assert_allclose(data.x_train.numpy()[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_idx_rejects_bad_magic_and_size(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="is not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.zeros((4, 3)))[:-1])
    with pytest.raises(DataError, match=r"truncated or padded: header says \(4, 3\)"):
        read_idx(short)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(broken)


def test_missing_dataset_names_path_and_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_fashion_mnist(tmp_path / "nowhere")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg and "dataset-fashion-mnist" in msg
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "\n" not in msg


@pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists(),
    reason=f"Fashion-MNIST not in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist() -> None:
    data = load_fashion_mnist()
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(data.y_train.numpy()).tolist() == [6000] * 10
    # Normalised with the train set's own statistics: mean 0 and std 1 up to rounding.
    assert abs(data.x_train.mean().item()) < 1e-3 and abs(data.x_train.std().item() - 1) < 1e-3


def test_synthetic_is_learnable_and_deterministic() -> None:
    a, b = synthetic(2000, 500, seed=3), synthetic(2000, 500, seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (2000, 32) and np.bincount(a.y_train.numpy()).tolist() == [200] * 10
    # Nearest class mean estimated on train beats chance (10%) by far on the test split.
    means = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(10)])
    pred = torch.cdist(a.x_test, means).argmin(1)
    assert (pred == a.y_test).float().mean() > 0.6
    img = synthetic(30, 10, image=True, seed=0)
    assert img.x_train.shape == (30, 1, 28, 28) and img.in_shape == (1, 28, 28)
    assert load_dataset("synthetic").in_shape == (1, 28, 28)
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


LABELS = np.repeat(np.arange(10), 60)  # 600 examples, 60 per class


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["iid", "dirichlet:0.1", "dirichlet:1", "dirichlet:100", "classes:1",
                     "classes:3", "classes:10"]),
    st.integers(1, 12),
    st.integers(0, 10_000),
)  # fmt: skip
def test_partitions_are_disjoint_covering_deterministic(spec: str, nodes: int, seed: int) -> None:
    parts = partition(LABELS, nodes, spec, seed)
    assert len(parts) == nodes and all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined), "shards overlap"
    if spec.startswith("classes:") and nodes * int(spec[8:]) < 10:
        assert len(joined) == 60 * nodes * int(spec[8:])  # only the held classes
    else:
        assert sorted(joined.tolist()) == list(range(len(LABELS)))
    again = partition(LABELS, nodes, spec, seed)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))
    if spec.startswith("classes:"):
        assert all(len(np.unique(LABELS[p])) == int(spec[8:]) for p in parts)


def test_dirichlet_skew_grows_as_beta_shrinks() -> None:
    def mean_classes(spec: str) -> float:
        parts = partition(LABELS, 10, spec, seed=0)
        # classes holding ≥ 5% of a node's data: the classes that node really "has"
        return float(np.mean([(np.bincount(LABELS[p], minlength=10) >= 0.05 * len(p)).sum()
                              for p in parts]))  # fmt: skip

    assert mean_classes("dirichlet:0.05") < 3 < 8 < mean_classes("dirichlet:1000")
    assert min(len(p) for p in partition(LABELS, 10, "dirichlet:0.05", seed=0)) >= 10


def test_seed_changes_partition() -> None:
    a, b = partition(LABELS, 4, "iid", 0), partition(LABELS, 4, "iid", 1)
    assert not np.array_equal(a[0], b[0])


@pytest.mark.parametrize(
    ("spec", "nodes", "match"),
    [
        ("classes:12", 4, r"asks for 12 classes per node but fashion-mnist has 10"),
        ("classes:0", 4, r"choose K between 1 and 10"),
        ("classes:two", 4, r"cannot read 'two' in partition 'classes:two'"),
        ("dirichlet:-1", 4, r"needs a concentration B > 0"),
        ("dirichlet", 4,
         r"unknown partition 'dirichlet'; choose iid, dirichlet:B, classes:K or drift:FEATURE"),
        ("shards", 4, r"unknown partition 'shards'"),
        ("drift:0", 4, r"partition drift:0 needs a table's features, and fashion-mnist is not"),
        ("iid", 601, r"cannot give 601 nodes an example each from 600"),
    ],
)
def test_bad_partition_specs(spec: str, nodes: int, match: str) -> None:
    with pytest.raises(DataError, match=match):
        partition(LABELS, nodes, spec, 0, source="fashion-mnist")


def test_node_dataset_keeps_only_its_shard() -> None:
    data = synthetic(100, 20, seed=0)
    shards = [node_dataset(data, node=i, nodes=4, spec="iid", seed=5) for i in range(4)]
    assert sum(len(s.y_train) for s in shards) == 100
    assert all(s.x_test is data.x_test for s in shards)
    first = partition(data.y_train.numpy(), 4, "iid", 5)[0]
    assert torch.equal(shards[0].x_train, data.x_train[first])
    with pytest.raises(DataError, match=r"node id 4 is outside 0\.\.3"):
        node_dataset(data, node=4, nodes=4, spec="iid", seed=5)


def test_load_local_npz_and_csv(tmp_path: Path) -> None:
    x, y = np.arange(12, dtype=np.float64).reshape(4, 3), np.array([0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    xs, ys = load_local(tmp_path / "d.npz")
    assert xs.dtype == np.float32 and ys.dtype == np.int64
    np.testing.assert_array_equal(xs, x) and np.testing.assert_array_equal(ys, y)
    (tmp_path / "d.csv").write_text("a,label,b\n1.5,0,2\n3,1,4e1\n")
    xs, ys = load_local(tmp_path / "d.csv")
    np.testing.assert_array_equal(xs, [[1.5, 2], [3, 40]]) and np.testing.assert_array_equal(
        ys, [0, 1]
    )
    (tmp_path / "e.csv").write_text("f1,malicious\n0.1,1\n")
    assert load_local(tmp_path / "e.csv", label_column="malicious")[1].tolist() == [1]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", "f1,f2\n1,2\n", r"has no 'label' column \(its columns are 'f1', 'f2'\); name "
                                  r"it with node.data_label_column"),
        ("a.csv", "f1,label\n1,x\n", r"a.csv: column 'label' holds 'x' in data row 1, not a"),
        ("a.csv", "f1,label\n1,0\n2\n", r"column 'label' has a missing, NaN or infinite value "
                                          r"in data row 2"),
        ("a.csv", "f1,label\n1,0.5\n", r"labels must be non-negative integers"),
        ("a.csv", "f1,label\nnan,1\n", r"column 'f1' has a missing, NaN or infinite value"),
        ("a.csv", "f1,label\n", r"a.csv has 0 rows, fewer than 1; add rows"),
        ("a.csv", "", r"a.csv is empty"),
        ("a.csv", "f1;label\n1;0\n", r"a.csv separates its columns with ';' \(semicolons\)"),
        ("a.npz", {"x": np.zeros((3, 2))}, r"has no array 'y'"),
        (
            "a.npz",
            {"x": np.zeros((3, 2)), "y": np.zeros(2)},
            r"x has 3 rows but y has shape \(2,\)",
        ),
        ("a.npz", {"x": np.array(["a", "b"]), "y": np.zeros(2)}, r"must be numeric"),
        ("a.npz", {"x": np.array([{}, {}], dtype=object), "y": np.zeros(2)}, r"without pickles"),
        ("a.npz", b"garbage", r"cannot read .*a.npz as NPZ"),
    ],
)
def test_load_local_errors(tmp_path: Path, name: str, content: object, match: str) -> None:
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content))
    with pytest.raises(DataError, match=match):
        load_local(path)


def test_load_local_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file .*nope.csv does not exist"):
        load_local(tmp_path / "nope.csv")
