"""Privacy in the simulator: the budget stop, ε in every output, and bad privacy input.

- a node whose next round would push ε past its target stops (exit reason `budget`) with
  ε ≤ target, and sends nothing afterwards;
- `epsilon` is in every metrics record and summary.json's `config` carries what is needed to
  recompute ε (noise_multiplier, sample_rate, steps_per_node, delta);
- `scripts/simulate.py` turns ε ≤ 0, δ ≥ 1/n, C ≤ 0 and a budget too small for one round into
  one sentence and exit status 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from node import simulation
from node.config import RunConfig
from node.metrics import read_metrics
from node.runner import NodeRunner
from privacy.accountant import epsilon as pld_epsilon

ROOT = Path(__file__).resolve().parents[2]
ROUNDS, EARLIER = 8, 3
SMALL = dict(topology="ring", nodes=3, rounds=ROUNDS, dataset="synthetic", model="logreg",
             lr=0.5, batch_size=16, examples_per_node=200, test_examples=100, primal_every=2,
             epsilon=3.0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny models: extra threads only contend on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("algorithm", "mode"), [("dpnorm", "message"), ("dpsgd", "gradient")])
def test_a_node_out_of_budget_stops_with_exit_budget(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path, algorithm: str,
                                                     mode: str) -> None:
    cfg = RunConfig(**SMALL, algorithm=algorithm, privacy_mode=mode)  # type: ignore[arg-type]
    spender = 1
    real_build = simulation.build_runners

    def build_with_history(c: RunConfig) -> list[NodeRunner]:
        # Node 1 already spent EARLIER rounds (as a daemon restored from its ledger would):
        # its plan is calibrated for ROUNDS rounds in all, so it must stop after ROUNDS−EARLIER.
        runners = real_build(c)
        r = runners[spender]
        for _ in range(EARLIER):
            for z, q, count in r.next_events(set(r.setup.neighbours)):
                r.accountant.spend(z, q, count)
        return runners

    monkeypatch.setattr(simulation, "build_runners", build_with_history)
    out = tmp_path / "run"
    summary = simulation.simulate(cfg, out)

    target = cfg.epsilon
    for node, info in summary["nodes"].items():
        assert info["epsilon"] is not None and 0 < info["epsilon"] <= target
        records = read_metrics(out / node / "metrics.jsonl")
        assert records and all("epsilon" in r and r["epsilon"] is not None for r in records)
        eps = [r["epsilon"] for r in records]
        assert eps == sorted(eps) and eps[-1] <= target
        if int(node) == spender:
            assert info["exit"] == "budget"
            assert info["rounds_completed"] == ROUNDS - EARLIER
            assert len(records) == ROUNDS - EARLIER   # no round (no message) after the stop
        else:
            assert info["exit"] == "finished" and info["rounds_completed"] == ROUNDS
    assert summary["max_epsilon"] <= target

    config = json.loads((out / "summary.json").read_text())["config"]
    for key in ("noise_multiplier", "sample_rate", "steps_per_node", "delta"):
        assert config[key] is not None, key
    # Anyone can recompute a full-budget node's ε from summary.json alone.
    z, q = config["noise_multiplier"]["0"], config["sample_rate"]["0"]
    recomputed = pld_epsilon(z, q, config["steps_per_node"], config["delta"])
    assert recomputed == pytest.approx(summary["nodes"]["0"]["epsilon"], rel=1e-9)
    assert recomputed <= target


BAD = [
    (["--epsilon", "0"], "epsilon"),
    (["--epsilon", "-1"], "epsilon"),
    (["--clip", "0"], "clip"),
    (["--clip", "-0.5"], "clip"),
    (["--delta", "0.02"], "δ"),                                    # n = 100, so 1/n = 0.01
    (["--epsilon", "1e-6", "--batch-size", "80"], "too small"),    # q = 0.8: no z is enough
]


def test_bad_privacy_input_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    base = ["--nodes", "3", "--rounds", "3", "--dataset", "synthetic", "--model", "logreg",
            "--examples-per-node", "100", "--epsilon", "2", "--quiet"]
    # Started together: each needs a few seconds of imports, and they are independent.
    procs = [subprocess.Popen([sys.executable, str(ROOT / "scripts" / "simulate.py"), *base,
                               *args, "--out", str(tmp_path / str(k))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
             for k, (args, _) in enumerate(BAD)]
    for proc, (args, fragment) in zip(procs, BAD, strict=True):
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in stderr, (args, stderr)
        assert lines[0].startswith("error: ") and fragment in lines[0], (args, lines[0])
