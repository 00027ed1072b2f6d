"""A daemon node's start, in process (no sockets): `open_spend` reads the run ledger, the
checkpoint and the data's lifetime ledger, refuses before it creates or changes any file, and
the runner then commits every round to both ledgers (issue 26, items 3 and 4)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from node.config import RunConfig
from node.core.runner import NodeRunner
from node.daemon.lifetime import fingerprint, lifetime_path, open_spend
from node.daemon.main import build_daemon_node
from node.daemon.settings import NodeConfig, NodeSettings
from node.daemon.state import CheckpointError, resume, save_state
from node.outputs.files import LEDGER
from privacy.accountant import Accountant
from privacy.errors import PrivacyError
from privacy.lifetime import epsilon_after, lifetime_history

SMALL = dict(topology="ring", nodes=3, rounds=6, dataset="synthetic", model="logreg", lr=0.5,
             batch_size=16, examples_per_node=100, test_examples=50, epsilon=2.0)


def _cfg(tmp_path: Path, out: str = "0", **node: object) -> NodeConfig:
    settings = NodeSettings(id=0, out=str(tmp_path / out), state_dir=str(tmp_path / "state"))
    return NodeConfig(replace(settings, **node), {1: "tcp://127.0.0.1:9", 2: "tcp://127.0.0.1:10"},
                      RunConfig(**SMALL))  # type: ignore[arg-type]


def _snapshot(*roots: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for root in roots if root.exists()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run(cfg: NodeConfig, rounds: int) -> NodeRunner:
    """What node/daemon/main.py does, then `rounds` rounds; both ledgers closed after."""
    setup = build_daemon_node(cfg)
    ledger, lifetime = open_spend(cfg, setup)
    try:
        runner = NodeRunner(cfg.run, setup, ledger, lifetime)
        resume(runner, cfg, ledger)
        for _ in range(rounds):
            runner.step({1, 2})
        save_state(runner, cfg, runner.round - 1)
        return runner
    finally:
        for kept in (ledger, lifetime):
            if kept is not None:
                kept.close()


def test_a_rerun_on_the_same_data_adds_to_its_lifetime(tmp_path: Path) -> None:
    first = _run(_cfg(tmp_path), 4)
    assert first.lifetime_epsilon() == first.epsilon()
    # A fresh run directory (what --force or a new --out gives): a new run, the same data.
    second = _run(_cfg(tmp_path, out="again"), 3)
    assert second.epsilon() < first.epsilon()
    both = Accountant()
    for z, q, count in [*first.accountant.history, *second.accountant.history]:
        both.spend(z, q, count)
    delta = second.cfg.delta
    assert second.lifetime_epsilon() == pytest.approx(both.epsilon(delta), rel=1e-12)
    assert second.lifetime_epsilon() > first.epsilon() > second.epsilon()  # type: ignore[operator]


def test_a_checkpoint_without_its_ledger_is_refused_before_any_file_changes(
        tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    _run(cfg, 4)
    out = Path(cfg.node.out)
    (out / LEDGER).unlink()
    (out / f"{LEDGER}.lock").unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="records no rounds"):
        open_spend(cfg, build_daemon_node(cfg))
    # Before the fix an empty ledger (and its lock) was created first.
    assert _snapshot(tmp_path) == before


def test_the_lifetime_cap_refuses_a_run_before_it_writes_anything(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    first = _run(cfg, 6)
    spent = first.lifetime_epsilon()
    assert spent is not None
    # What a second full run would take the data to: the planned releases after the history.
    name = fingerprint(cfg)
    planned = first.setup.plan.planned_releases(0)
    after = epsilon_after(lifetime_history(lifetime_path(cfg, name), name), planned,
                          cfg.run.delta)
    assert after > spent
    capped = _cfg(tmp_path, out="second", lifetime_epsilon=(spent + after) / 2)
    before = _snapshot(tmp_path)
    with pytest.raises(PrivacyError, match=r"past node\.lifetime_epsilon = "):
        open_spend(capped, build_daemon_node(capped))
    assert _snapshot(tmp_path) == before and not (tmp_path / "second").exists()
    # A cap the whole planned run fits under is no obstacle.
    _run(_cfg(tmp_path, out="third", lifetime_epsilon=after * 1.001), 1)


def test_a_run_without_a_proof_leaves_the_data_without_a_lifetime_epsilon(
        tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    open_run = replace(cfg, run=cfg.run.replace(epsilon=math.inf))
    _run(open_run, 2)
    name = fingerprint(cfg)
    assert [z for z, _, _ in lifetime_history(lifetime_path(cfg, name), name)] == [0.0]
    private = _run(_cfg(tmp_path, out="private"), 2)
    assert private.epsilon() is not None and private.lifetime_epsilon() is None
    capped = _cfg(tmp_path, out="capped", lifetime_epsilon=100.0)
    with pytest.raises(PrivacyError, match="∞"):
        open_spend(capped, build_daemon_node(capped))
