"""A restarted daemon rejoins its neighbours (real processes on 127.0.0.1, ε = 8 with ledgers).

SIGKILL one node of a 4-ring at round 12, restart it from its own config when the others are
2, 10 or 50 rounds past the round it resumes at, or with its checkpoint replaced by one 8
rounds older (`node.tools.chaos.rejoin`). Each case: the node skips to its neighbours' round,
runs no round twice, hears a neighbour in ≥ 90 % of the rounds it runs afterwards; the others'
median round period stays within 2x the one before the kill; every ledger verifies and covers
every round its node ran. The same cases on the simulated network: tests/sim/test_rejoin_simnet.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.tools import chaos

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("gap, older", [(2, False), (10, False), (50, False), (2, True)],
                         ids=["2-ahead", "10-ahead", "50-ahead", "older-checkpoint"])
def test_a_restarted_node_rejoins_its_neighbours(tmp_path: Path, gap: int, older: bool) -> None:
    """Bound 90 s each (start-up, the gap at 0.1 s a round, 120 rounds after the gap)."""
    out = chaos.rejoin(tmp_path, gap=gap, older_checkpoint=older)
    assert out.passed, out.explain()
    assert out.seconds <= 90, f"took {out.seconds:.0f} s"
    m = out.measured
    assert m["others_ahead_at_restart"] >= gap  # type: ignore[operator]
    assert m["rounds_skipped"] >= gap  # type: ignore[operator]
