"""`--secure-noise` in the simulator: the same federation with the default and the secure
sampler in one process trains to similar accuracy, prints an ε within the target from the
discrete accountant, and the runs it cannot cover are refused with one sentence, exit 2
(docs/PRIVACY.md, "Secure noise")."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import torch

from node.config import RunConfig
from node.core import privacy_plan as plan_module
from node.core.mechanism import SecureGradientDP
from node.errors import ConfigError
from node.sim import simulate as simulation
from privacy import discrete
from privacy.accountant import Release, calibrate_noise_multiplier
from privacy.errors import PrivacyError

pytest.importorskip("opendp")

ROOT = Path(__file__).resolve().parents[2]
# breast-cancer: 62 parameters, so OpenDP's exact sampler (≈ 10–30 µs a draw) costs nothing here.
RUN = dict(topology="ring", nodes=3, rounds=10, model="logreg", dataset="breast-cancer",
           epsilon=2.0, algorithm="dpsgd", batch_size=16, lr=1.0, local_steps=2, seed=0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_secure_and_default_train_alike_and_the_secure_epsilon_is_the_discrete_bound(
        tmp_path: Path) -> None:
    default = simulation.simulate(RunConfig(**RUN, noise_seed=1), tmp_path / "default")
    secure = simulation.simulate(RunConfig(**RUN, secure_noise=True), tmp_path / "secure")
    # 113 test rows: one row is 0.9 points; the secure noise is 1–2 % larger (rounding) and
    # its z larger (Rényi accounting), and its draws are not seeded.
    assert default["mean_accuracy"] > 0.85 and secure["mean_accuracy"] > 0.85
    assert abs(default["mean_accuracy"] - secure["mean_accuracy"]) < 0.08
    config = secure["config"]
    assert config["privacy_mode_used"] == "gradient-secure" and config["formal_guarantee"]
    z, q = config["noise_multiplier"]["0"], config["sample_rate"]["0"]
    steps = RUN["rounds"] * RUN["local_steps"]
    assert z == discrete.calibrate(2.0, 1e-5, q, steps)
    assert z > calibrate_noise_multiplier(2.0, 1e-5, q, steps)
    assert secure["max_epsilon"] == discrete.epsilon([Release(z, q, steps)], 1e-5) <= 2.0
    records = [json.loads(line)
               for line in (tmp_path / "secure" / "0" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["epsilon"] is not None for r in records)


def test_the_plan_is_the_secure_mechanism_with_its_own_budget() -> None:
    cfg = RunConfig(**{**RUN, "secure_noise": True})
    mech = plan_module.privacy_plan(cfg, nx.cycle_graph(3), 0, 400)
    assert isinstance(mech, SecureGradientDP) and mech.gradient_policy().kind == "secure"
    assert mech.record()["noise"] == "discrete"
    budget = mech.budget()
    budget.commit(round=0, releases=mech.releases(RUN["local_steps"]))
    assert budget.epsilon() == discrete.epsilon(mech.releases(RUN["local_steps"]), cfg.delta)


@pytest.mark.parametrize(("change", "fragment"), [
    ({"epsilon": float("inf")}, "give a finite epsilon"),
    ({"algorithm": "dpnorm", "local_steps": 1}, "covers gradient mode only"),
    ({"algorithm": "dpnorm", "privacy_mode": "message", "local_steps": 1},
     "covers gradient mode only"),
])
def test_what_secure_noise_cannot_cover_is_refused(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        RunConfig(**{**RUN, "secure_noise": True, **change})


def test_without_opendp_the_plan_is_refused_with_one_sentence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_module, "discrete_available", lambda: False)
    cfg = RunConfig(**{**RUN, "secure_noise": True})
    with pytest.raises(ConfigError, match="pip install opendp"):
        plan_module.privacy_plan(cfg, nx.cycle_graph(3), 0, 400)


def test_the_command_line_refuses_secure_noise_in_message_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("simulate_cli", ROOT / "scripts" / "simulate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--nodes", "3", "--rounds", "2", "--dataset", "breast-cancer", "--model",
                     "logreg", "--epsilon", "2", "--privacy-mode", "message", "--secure-noise",
                     "--quiet", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "covers gradient mode only" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_the_lifetime_of_the_data_composes_a_secure_run_with_a_default_one(
        tmp_path: Path) -> None:
    # A node's start and rounds as the daemon makes them (tests/sim/test_lifetime_start.py):
    # a default-sampler run, then a secure one on the same data, then a capped third.
    from dataclasses import replace

    from node.daemon.lifetime import open_spend
    from node.daemon.main import build_daemon_node
    from tests.sim.test_lifetime_start import _cfg, _run, _snapshot

    def gradient(out: str, secure: bool, **node: object) -> Any:
        cfg = _cfg(tmp_path, out=out, **node)
        return replace(cfg, run=cfg.run.replace(algorithm="dpsgd", secure_noise=secure))

    first = _run(gradient("0", False), 3)
    second = _run(gradient("again", True), 3)
    delta = second.cfg.delta
    combined = discrete.combined_epsilon(first.accountant.history,
                                         second.accountant.history, delta)
    assert second.lifetime_epsilon() == combined
    assert combined > max(first.epsilon() or 0, second.epsilon() or 0)
    # A cap below what a further secure run would take the data to refuses it, writing nothing.
    capped = gradient("third", True, lifetime_epsilon=combined * 1.01)
    before = _snapshot(tmp_path)
    with pytest.raises(PrivacyError, match=r"past node\.lifetime_epsilon = "):
        open_spend(capped, build_daemon_node(capped))
    assert _snapshot(tmp_path) == before
