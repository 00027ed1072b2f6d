"""A node's own file: adding or removing one row changes the training set by that row alone.

Audit defect 6: the held-out fifth came from a permutation of row indices, so inserting one
row moved ~20 others between the training and test splits; and the cap kept the first k rows,
so an insertion became a replacement. DP's unit is one row of the file, so both broke the claim.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from node.core.data import Dataset, local_data
from node.errors import DataError

ROWS, FEATURES = 200, 6
Row = tuple[bytes, int]


def _table(seed: int = 0, n: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, FEATURES)).astype(np.float32), rng.integers(0, 3, n)


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    if path.suffix == ".npz":
        np.savez(path, x=x, y=y)
    else:
        header = ",".join([*(f"f{k}" for k in range(FEATURES)), "label"])
        # repr of the float64 value of each float32 reads back to the same float32.
        lines = [",".join([*(repr(float(v)) for v in row), str(int(label))])
                 for row, label in zip(x, y, strict=True)]
        path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return str(path)


def _rows(x: object, y: object) -> Counter[Row]:
    xs, ys = np.asarray(x), np.asarray(y)
    return Counter((xs[i].tobytes(), int(ys[i])) for i in range(len(ys)))


def _split(path: str, seed: int = 7, test_file: str = "") -> tuple[Counter[Row], Counter[Row]]:
    data = local_data(path, test_file, "label", seed, classes=3)
    return _rows(data.x_train, data.y_train), _rows(data.x_test, data.y_test)


def _one_row_apart(small: tuple[Counter[Row], Counter[Row]],
                   big: tuple[Counter[Row], Counter[Row]], row: Row) -> str:
    """Which side `row` went to, asserting that nothing else differs between the two splits."""
    (train_s, test_s), (train_b, test_b) = small, big
    train_diff, test_diff = train_b - train_s, test_b - test_s
    left = (train_s - train_b).total() + (test_s - test_b).total()
    assert left == 0, f"{left} rows left a split"
    assert train_diff + test_diff == Counter({row: 1}), \
        f"{train_diff.total()} training and {test_diff.total()} test rows came in, not one"
    return "train" if train_diff else "test"


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_inserting_or_removing_one_row_changes_exactly_that_row(tmp_path: Path,
                                                                suffix: str) -> None:
    x, y = _table()
    base = _split(_write(tmp_path / f"base{suffix}", x, y))
    assert sum(base[0].values()) > 100 and sum(base[1].values()) > 10
    extra_x, extra_y = _table(seed=1, n=30)
    sides = []
    for k in range(30):   # a fresh row inserted in the middle of the file
        xi = np.insert(x, ROWS // 2, extra_x[k], axis=0)
        yi = np.insert(y, ROWS // 2, extra_y[k])
        bigger = _split(_write(tmp_path / f"in{k}{suffix}", xi, yi))
        sides.append(_one_row_apart(base, bigger, (extra_x[k].tobytes(), int(extra_y[k]))))
    assert set(sides) == {"train", "test"}   # both outcomes were exercised
    for k in (0, 57, ROWS - 1):   # and one row removed
        smaller = _split(_write(tmp_path / f"out{k}{suffix}", np.delete(x, k, axis=0),
                                np.delete(y, k)))
        _one_row_apart(smaller, base, (x[k].tobytes(), int(y[k])))


def test_a_duplicate_row_lands_beside_its_twin(tmp_path: Path) -> None:
    x, y = _table()
    base = _split(_write(tmp_path / "base.npz", x, y))
    for k in (3, 120):
        twin = (x[k].tobytes(), int(y[k]))
        side = "train" if base[0][twin] else "test"
        bigger = _split(_write(tmp_path / f"dup{k}.npz", np.insert(x, 10, x[k], axis=0),
                               np.insert(y, 10, y[k])))
        assert _one_row_apart(base, bigger, twin) == side


def test_the_split_depends_on_the_rows_not_their_order_or_format(tmp_path: Path) -> None:
    x, y = _table()
    order = np.random.default_rng(5).permutation(ROWS)
    npz = _split(_write(tmp_path / "a.npz", x, y))
    assert _split(_write(tmp_path / "b.npz", x[order], y[order])) == npz
    assert _split(_write(tmp_path / "a.csv", x, y)) == npz


def test_the_split_is_fixed_by_the_seed(tmp_path: Path) -> None:
    x, y = _table()
    path = _write(tmp_path / "d.npz", x, y)
    first, again = (local_data(path, "", "label", 7, classes=3) for _ in range(2))
    for a, b in ((first.x_train, again.x_train), (first.y_train, again.y_train),
                 (first.x_test, again.x_test), (first.y_test, again.y_test)):
        assert np.array_equal(a.numpy(), b.numpy())
    assert _split(path, seed=8)[1] != _split(path, seed=7)[1]


def test_with_a_test_file_every_row_trains(tmp_path: Path) -> None:
    x, y = _table()
    test_file = _write(tmp_path / "t.npz", *_table(seed=2, n=20))
    train, test = _split(_write(tmp_path / "d.npz", x, y), test_file=test_file)
    assert train == _rows(x, y) and sum(test.values()) == 20


def test_a_cap_is_refused_on_an_own_file_in_a_private_run(tmp_path: Path) -> None:
    x, y = _table()
    path = _write(tmp_path / "d.npz", x, y)
    with pytest.raises(DataError, match="examples_per_node") as exc:
        local_data(path, "", "label", 7, cap=50)
    assert "\n" not in str(exc.value)


def test_without_a_privacy_claim_a_cap_keeps_rows_chosen_by_content(tmp_path: Path) -> None:
    x, y = _table()
    order = np.random.default_rng(6).permutation(ROWS)
    full = _split(_write(tmp_path / "d.npz", x, y))[0]

    def capped(name: str, xs: np.ndarray, ys: np.ndarray) -> Dataset:
        # Rows as 2×3 arrays: the same bytes and split, but not a table, so a run without a
        # privacy claim does not standardise them and rows still compare by content.
        grid = xs.reshape(len(xs), 2, FEATURES // 2)
        return local_data(_write(tmp_path / name, grid, ys), "", "label", 7, cap=50,
                          private=False)

    a, b = capped("a.npz", x, y), capped("b.npz", x[order], y[order])
    kept = _rows(a.x_train, a.y_train)
    assert sum(kept.values()) == 50 and not kept - full
    assert _rows(b.x_train, b.y_train) == kept   # not "the first 50 rows of the file"


@pytest.mark.parametrize("rows", [1, 2])
def test_a_file_too_small_to_split_is_a_clear_data_error(tmp_path: Path, rows: int) -> None:
    # With one row, one side is always empty; with two, whichever rows the hash picks, the
    # result is a Dataset with both splits non-empty or one sentence saying what to do.
    path = _write(tmp_path / "tiny.csv", *_table(n=rows))
    try:
        data = local_data(path, "", "label", 7, classes=3)
    except DataError as exc:
        assert "tiny.csv" in str(exc) and "test file" in str(exc) and "\n" not in str(exc)
    else:
        assert rows > 1 and len(data.y_train) > 0 and len(data.y_test) > 0


def test_a_private_run_declares_its_classes_and_a_label_outside_them_is_refused(
        tmp_path: Path) -> None:
    """Counted from the labels, one added row with a new largest label would resize the model
    and so every message the node sends."""
    x, y = _table(0, 40)
    path = _write(tmp_path / "d.npz", x, y)
    with pytest.raises(DataError, match="declare classes"):
        local_data(path, "", "label", 7)
    assert local_data(path, "", "label", 7, classes=5).num_classes == 5
    wider = _write(tmp_path / "e.npz", np.concatenate([x, x[:1]]), np.concatenate([y, [4]]))
    with pytest.raises(DataError, match=r"label 4, outside the declared classes 0\.\.2"):
        local_data(wider, "", "label", 7, classes=3)
