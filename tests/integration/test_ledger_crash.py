"""The write-ahead ledger survives a writer killed at random points (real processes, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from privacy.accountant import Accountant
from privacy.ledger import Ledger

DELTA = 1e-5
ROOT = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent("""
    import sys
    from privacy.ledger import Ledger
    ledger = Ledger.open(sys.argv[1], {"node": "n3", "n": 1000, "mode": "gradient"})
    round_ = max(ledger.rounds, default=-1) + 1
    while True:
        ledger.record(round_, [(1.0 + 0.1 * (round_ % 3), 0.02, 2)])   # write-ahead ...
        print(round_, flush=True)                                        # ... then "send"
        round_ += 1
""")



def test_killing_the_writer_at_random_points_never_loses_a_sent_round(tmp_path: Path) -> None:
    # Kill a writing process with SIGKILL after a varying number of sends, several times. After
    # every crash the ledger must load, cover every round the child reported as sent, and its ε
    # must never go down.
    path = tmp_path / "ledger.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sent: set[int] = set()
    previous = 0.0
    for attempt, kill_after in enumerate((3, 17, 1, 40, 9)):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        for _ in range(kill_after):
            sent.add(int(child.stdout.readline()))
        # Let it run on a little, so the kill lands at an arbitrary point of a write.
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        sent.update(int(line) for line in child.stdout.read().split())
        with Ledger.open(path, {"node": "n3", "n": 1000, "mode": "gradient"}) as ledger:
            assert sent <= set(ledger.rounds), attempt
            reference = Accountant()
            for r in sorted(sent):
                reference.spend(1.0 + 0.1 * (r % 3), 0.02, 2)
            spent = ledger.epsilon(DELTA)
            assert spent >= reference.epsilon(DELTA) and spent >= previous
            previous = spent
