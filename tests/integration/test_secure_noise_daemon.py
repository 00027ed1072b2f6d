"""`--secure-noise` in real daemons: two nodes train with the discrete Gaussian, each prints the
discrete accountant's ε (≤ the target), its ledger says so and proves the same ε, the summary
keeps it, and the data's lifetime ledger keeps these releases apart and composes them with the
same bound — not with the PLD, which would not cover them (docs/PRIVACY.md, "Secure noise")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.config import RunConfig
from node.outputs.files import LEDGER, read_metrics
from node.tools.local import DaemonOptions, LocalLaunch, read_final
from privacy import discrete
from privacy.accountant import Release
from privacy.ledger import read_spend

pytest.importorskip("opendp")


@pytest.mark.slow   # two real daemons: ~15 s on a shared 2-core machine
def test_two_daemons_train_with_secure_noise_and_print_the_discrete_epsilon(
        tmp_path: Path, own_state_dir: Path) -> None:
    run = RunConfig(topology="line", nodes=2, rounds=4, dataset="breast-cancer", model="logreg",
                    algorithm="dpsgd", lr=1.0, batch_size=16, epsilon=2.0, threads=1,
                    primal_every=0, secure_noise=True)
    node = {"round_timeout": 5.0, "heartbeat_interval": 0.5, "down_after": 5.0,
            "startup_timeout": 60.0}
    launch = LocalLaunch(run, tmp_path / "run", DaemonOptions(node=node))
    try:
        launch.start(timeout=90)
        assert launch.wait(timeout=150), "the daemons did not finish"
        summary = launch.summary(0.0)
    finally:
        launch.stop_all(grace=5.0)
    for n in launch.nodes:
        final = read_final(n.out)
        assert final is not None and final["exit"] == "finished", final
        privacy = final["privacy"]
        assert privacy["mode"] == "gradient-secure" and privacy["noise"] == "discrete"
        z, q, steps = privacy["noise_multiplier"], privacy["sample_rate"], run.rounds
        assert z == discrete.calibrate(2.0, run.delta, q, steps)
        expected = discrete.epsilon([Release(z, q, steps)], run.delta)
        assert final["epsilon"] == pytest.approx(expected, rel=1e-12) and expected <= 2.0
        spend = read_spend(n.out / LEDGER)
        assert spend is not None and spend[0]["noise"] == "discrete"
        assert spend[1].epsilon(run.delta) == pytest.approx(expected, rel=1e-12)
        records = read_metrics(n.out / "metrics.jsonl")
        assert len(records) == run.rounds and all(r["epsilon"] is not None for r in records)
        # The first run on this data: its lifetime is this run's releases, by the same bound.
        assert final["lifetime_epsilon"] == pytest.approx(expected, rel=1e-12)
    assert summary["max_epsilon"] == pytest.approx(expected, rel=1e-12)
    assert json.loads(json.dumps(summary))["config"]["privacy_mode_used"] == "gradient-secure"
