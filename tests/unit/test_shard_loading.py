"""A node reads only its shard: streaming the IDX files for one node's rows gives exactly the
tensors (and the first-round losses) of loading every image and then sharding, on synthetic IDX
files, the synthetic task and the real Fashion-MNIST; and it never holds the whole split.

Also: the resource fields a run reports (final.json's peak_rss_bytes, summary.json's
startup_seconds).
"""

from __future__ import annotations

import functools
import gzip
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import node.core.data.sources as data_module
from node.config import RunConfig
from node.core.assemble import build_graph, build_node
from node.core.data import (
    FASHION_MNIST_DIR,
    Dataset,
    load_data,
    shard,
    shard_size,
    shards,
    synthetic,
)
from node.core.data.idx import IdxFile, read_idx
from node.core.data.sources import partition
from node.core.runner import NodeRunner
from node.daemon.main import build_daemon_node
from node.errors import DataError
from node.outputs.records import peak_rss, summary
from node.tools.plan import DaemonOptions, node_configs

HAVE_FASHION = Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists()
MB = 2**20

Case = tuple[int, str, int, int | None, int | None]
# (nodes, partition, seed, examples_per_node, test_examples)
CASES: list[Case] = [
    (6, "iid", 0, None, 2000),
    (4, "dirichlet:0.5", 3, 100, None),
    (5, "classes:2", 1, None, 7),
    (64, "iid", 2, 30, 500),
]


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(root: Path, n_train: int, n_test: int, *, gz: bool) -> None:
    """Four Fashion-MNIST-named IDX files of random images; 3000 train rows span three of the
    reader's one-megabyte chunks, so rows are picked across chunk boundaries."""
    rng = np.random.default_rng(7)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for stem, array in ((f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28))),
                            (f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))):
            raw = idx_bytes(array)
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / stem).write_bytes(raw)


def old_normalise(images: np.ndarray) -> np.ndarray:
    """The conversion the loader has always made, written out again here on purpose."""
    x = images.reshape(-1, 1, 28, 28).astype(np.float32)
    x *= 1.0 / (255.0 * 0.3530)
    x -= 0.2860 / 0.3530
    return x


@functools.lru_cache(maxsize=2)
def full_splits(root: Path) -> tuple[np.ndarray, ...]:
    """Today's loading: every image of both splits as float32, and the labels."""
    def split(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = next(root.glob(f"{prefix}-images-idx3-ubyte*"))
        labels = next(root.glob(f"{prefix}-labels-idx1-ubyte*"))
        return old_normalise(read_idx(images)), read_idx(labels).astype(np.int64)

    return (*split("train"), *split("t10k"))


def full_shard(root: Path, cfg: RunConfig, node: int) -> tuple[torch.Tensor, ...]:
    """Today's reference: everything loaded, then the node's rows, then the caps."""
    x, y, xt, yt = full_splits(root)
    rows = partition(y, cfg.nodes, cfg.partition, cfg.seed)[node]
    cap, tcap = cfg.examples_per_node, cfg.test_examples
    return tuple(torch.from_numpy(a) for a in (x[rows][:cap], y[rows][:cap], xt[:tcap], yt[:tcap]))


def tensors(d: Dataset) -> tuple[torch.Tensor, ...]:
    return tuple(getattr(d, k) for k in ("x_train", "y_train", "x_test", "y_test"))


def assert_same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> None:
    for u, v in zip(a, b, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape and torch.equal(u, v)


def config(root: Path | str, case: Case, **extra: Any) -> RunConfig:
    nodes, spec, seed, cap, tcap = case
    return RunConfig(nodes=nodes, partition=spec, seed=seed, examples_per_node=cap,
                     test_examples=tcap, data_dir=str(root), model="logreg", **extra)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("case", CASES[:3])
def test_shard_only_loading_equals_full_loading_on_idx_files(tmp_path: Path, gz: bool,
                                                             case: Case) -> None:
    write_idx_set(tmp_path, 3000, 600, gz=gz)
    cfg = config(tmp_path, case)
    streamed, resident = load_data(cfg, resident=False), load_data(cfg)
    every = shards(cfg, resident)
    for node in range(cfg.nodes):
        expected = full_shard(tmp_path, cfg, node)
        assert_same(tensors(shard(cfg, streamed, node)), expected)
        assert_same(tensors(shard(cfg, resident, node)), expected)
        assert_same(tensors(every[node]), expected)
        assert shard_size(cfg, streamed, node) == len(expected[0])
    # The lazy dataset read whole (x_train) is the old loader's output, bit for bit.
    assert torch.equal(resident.x_train, torch.from_numpy(
        old_normalise(read_idx(next(tmp_path.glob("train-images-idx3-ubyte*"))))))


@pytest.mark.parametrize("case", CASES)
def test_shard_only_loading_equals_full_loading_on_the_synthetic_task(case: Case) -> None:
    cfg = config(FASHION_MNIST_DIR, case, dataset="synthetic")
    full = synthetic(6000, 1000, image=True, seed=cfg.seed)
    rows = partition(full.y_train.numpy(), cfg.nodes, cfg.partition, cfg.seed)
    lazy = load_data(cfg)
    for node in (0, cfg.nodes - 1):
        idx = torch.from_numpy(rows[node][: cfg.examples_per_node])
        tcap = cfg.test_examples
        assert_same(tensors(shard(cfg, lazy, node)),
                    (full.x_train[idx], full.y_train[idx], full.x_test[:tcap], full.y_test[:tcap]))


@pytest.mark.skipif(not HAVE_FASHION, reason=f"Fashion-MNIST not in {FASHION_MNIST_DIR}")
@pytest.mark.parametrize("case", CASES)
def test_shard_only_loading_equals_full_loading_on_fashion_mnist(case: Case) -> None:
    cfg = config(FASHION_MNIST_DIR, case)
    lazy = load_data(cfg, resident=False)
    for node in (0, cfg.nodes // 2, cfg.nodes - 1):
        assert_same(tensors(shard(cfg, lazy, node)), full_shard(Path(FASHION_MNIST_DIR), cfg, node))


def first_round(cfg: RunConfig, data: Dataset, node: int) -> tuple[float, list[torch.Tensor]]:
    graph = build_graph(cfg)
    runner = NodeRunner(cfg, build_node(cfg, graph, node, data, noise_seed=11))
    out = runner.step(set(runner.setup.neighbours))
    return out.loss, [out.duals[j] for j in sorted(out.duals)]


@pytest.mark.parametrize("clip_only", [False, True])  # plain gradients, then per-sample clipping
def test_first_round_losses_are_the_same(tmp_path: Path, clip_only: bool) -> None:
    root = Path(FASHION_MNIST_DIR) if HAVE_FASHION else tmp_path
    if not HAVE_FASHION:
        write_idx_set(tmp_path, 3000, 600, gz=True)
    cfg = config(root, (6, "dirichlet:0.5", 4, 500, 300), clip_only=clip_only, lr=0.3)
    for node in (0, 3):
        x, y, xt, yt = full_shard(root, cfg, node)
        reference = Dataset(x, y, xt, yt, 10, (1, 28, 28), "fashion-mnist")
        loss, duals = first_round(cfg, shard(cfg, load_data(cfg, resident=False), node), node)
        expected_loss, expected_duals = first_round(cfg, reference, node)
        assert loss == expected_loss
        assert all(torch.equal(a, b) for a, b in zip(duals, expected_duals, strict=True))


def test_a_daemon_converts_only_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_set(tmp_path, 3000, 600, gz=True)
    converted: list[int] = []
    original = data_module.normalise_fashion

    def counting(images: np.ndarray) -> np.ndarray:
        converted.append(len(images))
        return original(images)

    monkeypatch.setattr(data_module, "normalise_fashion", counting)
    whole = IdxFile.read

    def read(self: IdxFile) -> np.ndarray:
        if "images" in self.path.name:
            pytest.fail(f"read all of {self.path}")
        return whole(self)  # the labels are read whole, as they must be

    monkeypatch.setattr(IdxFile, "read", read)
    cfg = config(tmp_path, (6, "iid", 0, 200, 100))
    own = shard(cfg, load_data(cfg, resident=False), 2)
    assert sum(converted) == 200 + 100 == len(own.x_train) + len(own.x_test)
    # The daemon itself takes this path.
    converted.clear()
    place = {"listen": "tcp://127.0.0.1:0", "out": str(tmp_path / "out"),
             "endpoints_file": str(tmp_path / "endpoints.json")}
    daemon_cfg = node_configs(cfg, DaemonOptions(), lambda i: {"id": i, **place},
                              endpoint=lambda j: "")[2]
    setup = build_daemon_node(daemon_cfg)
    assert sum(converted) == 300 and torch.equal(setup.trainer.x, own.x_train)


@pytest.mark.skipif(not HAVE_FASHION, reason=f"Fashion-MNIST not in {FASHION_MNIST_DIR}")
def test_a_fashion_shard_never_holds_the_whole_split() -> None:
    cfg = RunConfig(nodes=6, model="logreg", test_examples=2000)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        own = shard(cfg, load_data(cfg, resident=False), 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = own.x_train.nbytes + own.x_test.nbytes  # 31.4 + 6.3 MB
    # Loading everything first peaks above 230 MB (188 MB of train floats alone).
    assert peak < kept + 8 * MB, (peak / MB, kept / MB)


def test_idx_rows_match_the_whole_file_and_damage_is_one_sentence(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3000, 28, 28))
    raw = idx_bytes(images)
    # Two gzip members: the trailer then holds only the second's size, so the size is counted.
    (tmp_path / "multi.gz").write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    (tmp_path / "plain").write_bytes(raw)
    rows = np.sort(rng.choice(3000, 400, replace=False))
    rows[0], rows[-1] = 0, 2999
    for name in ("multi.gz", "plain"):
        f = IdxFile(tmp_path / name)
        assert f.shape == (3000, 28, 28)
        assert np.array_equal(f.take(rows), images[rows]) and np.array_equal(f.read(), images)
    with pytest.raises(ValueError, match="ascending"):
        IdxFile(tmp_path / "plain").take(np.array([5, 3]))
    (tmp_path / "padded.gz").write_bytes(gzip.compress(raw + b"\0"))
    with pytest.raises(DataError, match=r"truncated or padded: header says \(3000, 28, 28\)"):
        IdxFile(tmp_path / "padded.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-5000])
    with pytest.raises(DataError, match=r"cannot read IDX file .*cut\.gz"):
        IdxFile(tmp_path / "cut.gz").read()


def test_peak_rss_is_the_kernels_high_water_mark_in_bytes() -> None:
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("no /proc on this system")
    hwm = next(int(ln.split()[1]) for ln in status.read_text().splitlines()
               if ln.startswith("VmHWM:"))
    assert abs(peak_rss() - hwm * 1024) <= 4 * MB  # bytes, not KiB


def test_summary_reports_startup_seconds() -> None:
    cfg = RunConfig(nodes=2, model="logreg")
    assert summary(cfg, {}, 1.0, [])["startup_seconds"] is None
    assert summary(cfg, {}, 9.0, [], startup_seconds=2.5)["startup_seconds"] == 2.5
    assert "startup_seconds" not in summary(cfg, {}, 9.0, [], startup_seconds=2.5)["config"]
