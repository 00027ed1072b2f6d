"""privacy.budget.Budget: one spend, committed to the ledger first and then to memory; the stop
rule against the target; a restarted node's budget from its ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy.accountant import Release
from privacy.budget import Budget
from privacy.errors import PrivacyError
from privacy.ledger import Ledger

DELTA = 1e-5
ROUND = [Release(1.0, 0.1, 1)]


def test_commit_writes_the_ledger_before_the_memory(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.json", {"node": 0}) as ledger:
        budget = Budget.from_ledger(ledger, delta=DELTA)
        budget.commit(round=0, releases=ROUND)
        assert ledger.rounds == [0] and budget.accountant.steps == 1
        assert budget.epsilon() == ledger.epsilon(DELTA) > 0
        # The ledger refuses a round it holds: nothing reaches memory either.
        with pytest.raises(PrivacyError, match="already released"):
            budget.commit(round=0, releases=ROUND)
        assert budget.accountant.steps == 1
        with pytest.raises(TypeError):
            budget.commit(1, ROUND)  # type: ignore[misc]  # spends are keyword-only


def test_a_restarted_budget_is_the_ledgers_spend(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    with Ledger.open(path, {"node": 0}) as ledger:
        first = Budget.from_ledger(ledger, delta=DELTA)
        for r in range(3):
            first.commit(round=r, releases=ROUND)
    with Ledger.open(path, {"node": 0}) as ledger:
        again = Budget.from_ledger(ledger, delta=DELTA)
        assert again.accountant == first.accountant and again.epsilon() == first.epsilon()
        again.commit(round=3, releases=ROUND)
        assert ledger.rounds == [0, 1, 2, 3]
        # A caller that records to the ledger itself: the spend in memory only.
        memory = Budget(delta=DELTA).continued(ledger)
        assert memory.ledger is None and memory.accountant.steps == 4
        memory.commit(round=4, releases=ROUND)
        assert ledger.rounds == [0, 1, 2, 3]
        assert again.continued(ledger).ledger is ledger
    with Ledger.open(tmp_path / "other.json", {"node": 1}) as other, \
            pytest.raises(ValueError, match="commits to"):
        again.continued(other)


def test_the_stop_rule_trusts_the_calibrated_schedule_then_the_accountant() -> None:
    # A target no release could meet: only the schedule's proof lets the first three through.
    budget = Budget(delta=DELTA, target=1e-9, schedule=Release(1.0, 0.1, 3))
    for r in range(3):
        assert not budget.would_exceed(ROUND)
        budget.commit(round=r, releases=ROUND)
    assert budget.would_exceed(ROUND)
    assert not budget.would_exceed([])  # a round that releases nothing costs nothing
    # Off the schedule (less noise than planned), the accountant decides.
    assert Budget(delta=DELTA, target=1e-9, schedule=Release(1.0, 0.1, 3)).would_exceed(
        [Release(0.9, 0.1, 1)])
    assert not Budget(delta=DELTA, target=100.0).would_exceed([Release(0.9, 0.1, 1)])
    assert not Budget(delta=DELTA).would_exceed([Release(0.1, 0.5, 100)])  # no target
