"""A node restored from a backup of its ledger and checkpoint still prints a bound (real daemons
on 127.0.0.1, a 3-ring at ε = 2 with ledgers).

The victim's checkpoint and ledger are copied after its round 6; it runs on past round 16, is
SIGKILLed, both files are put back and it is restarted. On its own it would resume after the
backup's last round and never know of the rounds it released since; its neighbours heard them
and tell it (gossip/PROTOCOL.md, "Restored from a backup"). The ε it prints at the end must be
at least the accountant's ε, computed here, for the distinct rounds it was seen to release
(recorded in its metrics.jsonl, which the restore leaves alone, in both runs), and it must not
release a round twice. The same case on the simulated network: tests/sim/test_rejoin_simnet.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.outputs.files import CHECKPOINT, FINAL, LEDGER
from node.tools.chaos.harness import NODE, START_TIMEOUT, base_run, launched, records, wait_for
from node.tools.plan import DaemonOptions
from privacy.accountant import Accountant

pytestmark = pytest.mark.slow

VICTIM, BACKUP_AFTER, KILL_AFTER, ROUNDS = 1, 6, 16, 120


def last_round(out: Path) -> int:
    mine = records(out, VICTIM)
    return mine[-1]["round"] if mine else -1


def test_a_node_restored_from_a_backup_prints_at_least_what_it_released(tmp_path: Path) -> None:
    """Bound ~90 s: start-up, 120 rounds at 0.1 s (enough for the neighbours to still run when
    the victim is back), a restart."""
    cfg = base_run(0, ROUNDS, nodes=3, epsilon=2.0, delta=1e-5, batch_size=60)
    node = {**NODE, "checkpoint_every": 1}
    vdir = tmp_path / str(VICTIM)
    with launched(cfg, tmp_path, DaemonOptions(node=node)) as launch:
        wait_for(lambda: last_round(tmp_path) >= BACKUP_AFTER, 90, "the backup's round")
        # The checkpoint first: the ledger, copied after it, covers at least its rounds.
        checkpoint = (vdir / CHECKPOINT).read_bytes()
        ledger = (vdir / LEDGER).read_bytes()
        backed_up = json.loads(ledger)["rounds"][-1][0]
        wait_for(lambda: last_round(tmp_path) >= KILL_AFTER, 90, "the victim's round 16")
        launch.kill(VICTIM)
        before = {r["round"] for r in records(tmp_path, VICTIM)}
        (vdir / CHECKPOINT).write_bytes(checkpoint)
        (vdir / LEDGER).write_bytes(ledger)
        launch.restart(VICTIM, timeout=START_TIMEOUT)
        assert launch.wait(120), "the federation did not finish"
    ran = [r["round"] for r in records(tmp_path, VICTIM)]
    assert max(before) >= backed_up + 5  # the backup really is behind what was released
    assert ran == sorted(set(ran)), "the restored node released a round a second time"
    final = json.loads((vdir / FINAL).read_text())
    privacy = final["privacy"]
    distinct = len(set(ran))  # both runs' rounds, as their metrics recorded them
    reference = Accountant()
    reference.spend(privacy["noise_multiplier"], privacy["sample_rate"], distinct)
    assert final["epsilon"] is not None
    assert final["epsilon"] >= reference.epsilon(privacy["delta"])
    assert "charged rounds" in (vdir / "node.log").read_text()
