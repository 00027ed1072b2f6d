"""What summary.json says about a node that wrote no final.json (issue 26, item 4): never a
spend below what its files prove, null with the reason where they prove no bound, and a
finished node that did nothing in a later launch keeps its results."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.outputs.files import LEDGER, MetricsWriter
from node.outputs.records import kept_result, node_result
from privacy.accountant import epsilon as pld_epsilon
from privacy.ledger import Ledger

Z, Q, DELTA = 1.1, 0.1, 1e-5


def _node(tmp_path: Path, *, metrics: int, ledger: int | None) -> Path:
    """A node directory whose metrics record `metrics` rounds and whose ledger `ledger`."""
    node_dir = tmp_path / "0"
    if ledger is not None:
        with Ledger.open(node_dir / LEDGER, {"node": 0, "delta": DELTA}) as kept:
            for r in range(ledger):
                kept.record(r, [(Z, Q, 1)])
    with MetricsWriter(node_dir) as writer:
        for r in range(metrics):
            writer.write({"round": r, "epsilon": pld_epsilon(Z, Q, r + 1, DELTA),
                          "accuracy": 0.5, "loss": 1.0, "bytes_sent": 10})
    return node_dir


def test_a_missing_ledger_is_an_unknown_spend_not_zero(tmp_path: Path) -> None:
    notes: dict[str, str] = {}
    entry = node_result(_node(tmp_path, metrics=5, ledger=None), notes=notes)
    assert entry["exit"] == "crashed" and entry["epsilon"] is None
    assert "missing" in notes["0"] and f"{pld_epsilon(Z, Q, 5, DELTA):.4g}" in notes["0"]


def test_an_empty_or_older_ledger_does_not_lower_the_spend(tmp_path: Path) -> None:
    # A fresh, empty ledger (what a refused node used to create) printed ε = 0.0.
    notes: dict[str, str] = {}
    assert node_result(_node(tmp_path / "a", metrics=5, ledger=0), notes=notes)["epsilon"] \
        is None and "less than" in notes["0"]
    # A ledger restored from an older copy proves 3 rounds; the metrics show 5 were spent.
    assert node_result(_node(tmp_path / "b", metrics=5, ledger=3))["epsilon"] is None
    # The usual crash: the ledger is one round ahead of the metrics; its ε is the bound.
    notes.clear()
    entry = node_result(_node(tmp_path / "c", metrics=4, ledger=5), notes=notes)
    assert entry["epsilon"] == pytest.approx(pld_epsilon(Z, Q, 5, DELTA)) and not notes


def test_a_finished_node_that_did_nothing_keeps_its_result(tmp_path: Path) -> None:
    node_dir = _node(tmp_path, metrics=5, ledger=5)
    entry = node_result(node_dir)
    previous = {**entry, "exit": "finished", "accuracy": 0.75, "lifetime_epsilon": 3.0}
    assert kept_result(previous, entry) == previous
    assert kept_result({**previous, "exit": "stopped"}, entry) is None
    # It spent or ran more since: the old entry no longer describes it.
    assert kept_result({**previous, "epsilon": 0.1}, entry) is None
    assert kept_result({**previous, "rounds_completed": 4}, entry) is None
    assert kept_result(None, entry) is None
