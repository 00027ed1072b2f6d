"""The write-ahead spend ledger: durability, crash safety, refusal of untrustworthy files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privacy.errors import LedgerError, PrivacyError
from privacy.ledger import Ledger

DELTA = 1e-5
IDENTITY = {"node": "n3", "n": 1000, "mode": "gradient"}
ROOT = Path(__file__).resolve().parents[2]


def test_record_then_reload_gives_the_same_spend(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    with Ledger.open(path, IDENTITY) as ledger:
        assert ledger.epsilon(DELTA) == 0.0 and path.exists()
        ledger.record(0, [(1.1, 0.02, 5)])
        ledger.record(1, [(1.1, 0.02, 5), (0.9, 0.02, 1)])
        spent = ledger.epsilon(DELTA)
        history = ledger.accountant.to_dict()
    with Ledger.open(path, IDENTITY) as again:
        assert again.rounds == [0, 1] and again.released(1) and not again.released(2)
        assert again.accountant.to_dict() == history and again.epsilon(DELTA) == spent
    assert spent > 0


def test_a_released_round_cannot_be_released_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    with Ledger.open(path, IDENTITY) as ledger:
        ledger.record(7, [(1.0, 0.01, 1)])
    with Ledger.open(path, IDENTITY) as restarted:
        with pytest.raises(PrivacyError, match="already released"):
            restarted.record(7, [(1.0, 0.01, 1)])
        restarted.record(8, [(1.0, 0.01, 1)])
        assert restarted.accountant.steps == 2


def test_a_repeat_that_happened_is_recorded_on_top_of_the_round(tmp_path: Path) -> None:
    """A node restored from a backup learns only afterwards that a round it released had gone
    out before: `again` adds the second release to that round, durably."""
    path = tmp_path / "ledger.json"
    with Ledger.open(path, IDENTITY) as ledger:
        ledger.record(7, [(1.0, 0.01, 1)])
        ledger.record(7, [(1.0, 0.01, 1)], again=True)
        ledger.record(9, [(1.0, 0.01, 1)], again=True)  # a round not held yet: recorded once
        with pytest.raises(PrivacyError):
            ledger.record(7, [(1.0, 1.5, 1)], again=True)  # still validated first
    with Ledger.open(path, IDENTITY) as reloaded:
        assert reloaded.rounds == [7, 9] and reloaded.accountant.steps == 3


def test_invalid_events_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    with Ledger.open(path, IDENTITY) as ledger:
        before = path.read_bytes()
        with pytest.raises(PrivacyError):
            ledger.record(0, [(1.0, 1.5, 1)])
        assert path.read_bytes() == before and not ledger.released(0)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # torn write
        lambda text: text.replace('"rounds":[[0', '"rounds":[[5'),  # edited
        lambda text: "",  # emptied
        lambda text: json.dumps({"format": "something else"}),
        lambda text: "\x00\xff garbage",
    ],
)
def test_a_corrupt_ledger_is_refused_not_reset(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ledger.json"
    with Ledger.open(path, IDENTITY) as ledger:
        ledger.record(0, [(1.0, 0.01, 3)])
    path.write_text(damage(path.read_text()), encoding="utf-8", errors="surrogateescape")
    with pytest.raises(LedgerError, match="refusing to start") as info:
        Ledger.open(path, IDENTITY)
    assert "\n" not in str(info.value)


def test_a_ledger_of_another_node_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    Ledger.open(path, IDENTITY).close()
    with pytest.raises(LedgerError, match="another node"):
        Ledger.open(path, {**IDENTITY, "node": "n4"})


def test_two_processes_cannot_spend_on_the_same_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    with Ledger.open(path, IDENTITY), pytest.raises(LedgerError, match="in use"):
        Ledger.open(path, IDENTITY)
    Ledger.open(path, IDENTITY).close()  # released on close


def test_garbage_temp_files_from_a_crash_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    with Ledger.open(path, IDENTITY) as ledger:
        ledger.record(0, [(1.0, 0.01, 2)])
        spent = ledger.epsilon(DELTA)
    stale = tmp_path / ".ledger.json.abc123.tmp"
    stale.write_bytes(b'{"format": "dpnorm-privacy-ledger", "rounds": [[0, [[9')
    with Ledger.open(path, IDENTITY) as again:
        assert again.epsilon(DELTA) == spent
    assert not stale.exists()
