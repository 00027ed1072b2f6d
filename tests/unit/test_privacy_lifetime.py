"""The lifetime ledger (privacy/lifetime.py) and the data fingerprint that names it
(node/daemon/lifetime.py): every run on the same data composes, nothing is read as a fresh
budget, and the read-only checks create no file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from node.config import RunConfig
from node.daemon.lifetime import fingerprint, rows_digest, state_dir
from node.daemon.settings import NodeConfig, NodeSettings
from privacy.accountant import Accountant, Release
from privacy.budget import Budget
from privacy.errors import LedgerError
from privacy.ledger import Ledger, recorded
from privacy.lifetime import UNBOUNDED, Lifetime, epsilon_after, lifetime_history

DELTA = 1e-5
RUN_A = [Release(1.1, 0.1, 1)] * 3   # three rounds of one run
RUN_B = [Release(0.8, 0.05, 2)] * 2  # two rounds of another, gradient mode with K = 2


def _files(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


def _spend(releases: list[Release]) -> Accountant:
    accountant = Accountant()
    for z, q, count in releases:
        accountant.spend(z, q, count)
    return accountant


def _record(path: Path, name: str, rounds: list[Release]) -> None:
    lifetime = Lifetime.open(path, name)
    try:
        for release in rounds:
            lifetime.record([release])
    finally:
        lifetime.close()


def test_every_run_on_the_data_is_composed_by_the_accountant(tmp_path: Path) -> None:
    path = tmp_path / "state" / "lifetime" / "abc.json"
    _record(path, "abc", RUN_A)   # two runs, each opening the ledger afresh
    _record(path, "abc", RUN_B)
    assert lifetime_history(path, "abc") == [*RUN_A, *RUN_B]
    lifetime = Lifetime.open(path, "abc")
    try:
        spent = lifetime.epsilon(DELTA)
        # PLD of the heterogeneous history, computed here by the same accountant: equal.
        assert spent == pytest.approx(_spend([*RUN_A, *RUN_B]).epsilon(DELTA), rel=1e-12)
        assert spent > max(_spend(RUN_A).epsilon(DELTA), _spend(RUN_B).epsilon(DELTA))
        assert spent < _spend(RUN_A).epsilon(DELTA) + _spend(RUN_B).epsilon(DELTA)
        # The budget prints both: this run's spend and the data's.
        budget = Budget(delta=DELTA)
        budget.lifetime = lifetime
        budget.commit(round=0, releases=[Release(1.1, 0.1, 1)])
        assert budget.epsilon() == pytest.approx(_spend(RUN_A[:1]).epsilon(DELTA))
        assert budget.lifetime_epsilon() == pytest.approx(
            _spend([*RUN_A, *RUN_B, *RUN_A[:1]]).epsilon(DELTA), rel=1e-12)
    finally:
        lifetime.close()
    assert epsilon_after(RUN_A, RUN_B, DELTA) == pytest.approx(
        _spend([*RUN_A, *RUN_B]).epsilon(DELTA), rel=1e-12)


def test_a_release_without_a_proven_bound_makes_the_lifetime_infinite_once(
        tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    _record(path, "x", RUN_A)
    lifetime = Lifetime.open(path, "x")
    try:
        for _ in range(5):   # a run without privacy, round after round
            lifetime.record([UNBOUNDED])
        assert math.isinf(lifetime.epsilon(DELTA))
        assert lifetime.ledger.rounds == [0, 1, 2, 3]   # written once, not every round
    finally:
        lifetime.close()


def test_reading_a_ledger_creates_nothing_and_trusts_no_damage(tmp_path: Path) -> None:
    missing = tmp_path / "state" / "lifetime" / "none.json"
    assert recorded(missing, {"node": 0}) is None
    assert lifetime_history(missing, "none") == []
    assert _files(tmp_path) == []   # no directory, no lock file
    path = tmp_path / "l.json"
    _record(path, "x", RUN_A)
    before = _files(tmp_path)
    with pytest.raises(LedgerError, match="belongs to another"):
        recorded(path, {"node": 0})   # a run ledger's identity is not a lifetime's
    with pytest.raises(LedgerError, match="belongs to another"):
        lifetime_history(path, "y")   # another data set's
    path.write_text(path.read_text().replace("1.1", "2.2"))
    with pytest.raises(LedgerError, match="checksum"):
        lifetime_history(path, "x")
    assert _files(tmp_path) == before


def test_discard_removes_only_a_ledger_it_created(tmp_path: Path) -> None:
    fresh = Ledger.open(tmp_path / "new.json", {"node": 0})
    fresh.discard()
    assert _files(tmp_path) == []
    _record(tmp_path / "old.json", "x", RUN_A)
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    Lifetime.open(tmp_path / "old.json", "x").discard()
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before


def _write_rows(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    if path.suffix == ".npz":
        np.savez(path, x=x, y=y)
    else:
        header = ",".join([*(f"f{k}" for k in range(x.shape[1])), "label"])
        rows = [",".join([*map(repr, map(float, row)), str(int(label))])
                for row, label in zip(x, y, strict=True)]
        path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_a_data_files_fingerprint_is_its_rows_not_its_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    base = rows_digest(str(_write_rows(tmp_path / "a.npz", x, y)), "label")
    order = rng.permutation(40)
    assert rows_digest(str(_write_rows(tmp_path / "b.npz", x[order], y[order])), "label") == base
    assert rows_digest(str(_write_rows(tmp_path / "c.csv", x[order], y[order])), "label") == base
    one_more = _write_rows(tmp_path / "d.npz", np.vstack([x, x[:1] + 1]), np.append(y, y[0]))
    assert rows_digest(str(one_more), "label") != base
    relabelled = y.copy()
    relabelled[0] = (relabelled[0] + 1) % 3
    assert rows_digest(str(_write_rows(tmp_path / "e.npz", x, relabelled)), "label") != base


def test_a_shards_fingerprint_is_what_defines_the_shard(tmp_path: Path) -> None:
    run = RunConfig(topology="ring", nodes=3, dataset="synthetic", epsilon=2.0)

    def name(node: int = 0, out: str = "a", **changed: object) -> str:
        cfg = NodeConfig(NodeSettings(id=node, out=str(tmp_path / out)),
                         {(node + 1) % 3: "tcp://127.0.0.1:9", (node + 2) % 3: "tcp://127.0.0.1:10"},
                         run.replace(**changed))
        return fingerprint(cfg)

    base = name()
    # Where the run writes, its rounds and its budget do not make it other data.
    assert name(out="b", rounds=7, epsilon=8.0, lr=0.3) == base
    assert len({base, name(node=1), name(seed=1), name(partition="dirichlet:0.5"),
                name(examples_per_node=10)}) == 5


def test_the_state_directory_is_outside_any_run_and_follows_xdg(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir("") == tmp_path / "xdg" / "dpnorm"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir("") == tmp_path / "home" / ".local" / "state" / "dpnorm"
    assert state_dir(str(tmp_path / "mine")) == tmp_path / "mine"
