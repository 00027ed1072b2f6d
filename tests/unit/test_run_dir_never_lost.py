"""Issue 29 item 1: a run directory is never lost (node/tools/rundir.py, node/tools/resume.py).

An earlier launch's directory is built here as its daemons leave it (each node's privacy ledger
under the identity its daemon computes, a checkpoint, final.json, metrics, logs, summary.json),
and scripts/launch_local.py's main() is run on it in this process. Every command refused here
is refused before any process starts, so no daemon runs; each test hashes every file of the
directory before and after.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from node.cli import run_config_from_args
from node.config import RunConfig
from node.daemon.settings import NodeConfig
from node.daemon.state import Checkpoint, checkpoint_identity, ledger_identity, save_checkpoint
from node.outputs.files import CHECKPOINT, LEDGER, write_json_atomic
from node.tools.local import LocalLaunch
from node.tools.plan import LOCAL_LISTEN, DaemonOptions, node_configs, privacy_plans
from node.tools.resume import NothingToResume, check_resume, reuse_run_dir
from node.tools.rundir import check_out, holds_run, move_aside
from privacy.accountant import Release
from privacy.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--topology", "ring", "--nodes", "3", "--rounds", "3", "--dataset", "synthetic",
        "--model", "logreg", "--lr", "0.5", "--batch-size", "16", "--examples-per-node", "200",
        "--test-examples", "100", "--epsilon", "2", "--threads", "1", "--quiet"]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("launch_local", ROOT / "scripts" /
                                                  "launch_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(args: list[str]) -> RunConfig:
    return run_config_from_args(_script().build_parser().parse_args([*args, "--out", "x"]))


def _configs(cfg: RunConfig, out: Path) -> list[NodeConfig]:
    def place(i: int) -> dict[str, Any]:
        return {"id": i, "listen": LOCAL_LISTEN, "out": str(out / str(i)),
                "endpoints_file": str(out / "endpoints.json")}

    return node_configs(cfg, DaemonOptions(), place, endpoint=lambda j: "")


def earlier_run(out: Path, *, finished: bool, args: list[str] = ARGS) -> None:
    """What a launch of `args` leaves in `out`: 3 rounds (or 2 of 3, stopped) per node."""
    cfg = _config(args)
    done = 3 if finished else 2
    plans = privacy_plans(cfg, range(cfg.nodes))
    for config in _configs(cfg, out):
        i, node_dir = config.node.id, Path(config.node.out)
        node_dir.mkdir(parents=True)
        with Ledger.open(node_dir / LEDGER, ledger_identity(config, plans[i])) as ledger:
            for r in range(done):
                ledger.record(r, [Release(plans[i].noise_multiplier, plans[i].sample_rate, 1)])
        save_checkpoint(node_dir / CHECKPOINT, Checkpoint(done - 1, {"w": torch.ones(4) * i},
                                                          None, checkpoint_identity(config)))
        (node_dir / "metrics.jsonl").write_text(
            "".join(json.dumps({"round": r, "node": i, "loss": 0.5}) + "\n" for r in range(done)))
        write_json_atomic(node_dir / "final.json", {
            "accuracy": 0.8 + i / 100, "epsilon": 1.5, "rounds_completed": done,
            "exit": "finished" if finished else "stopped"})
        (node_dir / "stderr.log").write_text(f"node {i}: ε = 1.5 this run\n")
    write_json_atomic(out / "summary.json", {"rounds": 3, "mean_accuracy": 0.81})
    (out / "notes.txt").write_text("the user's own file\n")


def hashes(root: Path) -> dict[str, str]:
    """Every entry under `root`: a file's SHA-256, a directory's name."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def refused(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _script().main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_every_refused_command_leaves_every_file_of_the_earlier_run_byte_identical(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    earlier_run(out, finished=False)
    before = hashes(out)
    out_args = [*ARGS, "--out", str(out)]
    # The same --out again without a flag: it used to wipe the run, ledgers included.
    assert "already holds a run" in refused(capsys, out_args)
    assert hashes(out) == before
    # A bad resume (another ε): it used to delete every final.json and rewrite the summary.
    err = refused(capsys, [*out_args, "--epsilon", "3", "--resume"])
    assert "cannot resume node 0" in err and "epsilon" in err
    assert hashes(out) == before
    # A bad option, with and without --resume, and both flags at once.
    for extra in (["--lr", "0"], ["--lr", "0", "--resume"], ["--metrics-port", "70000"],
                  ["--resume", "--force"]):
        refused(capsys, [*out_args, *extra])
        assert hashes(out) == before, extra


def test_a_resume_the_checkpoint_refuses_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    earlier_run(out, finished=False)
    before = hashes(out)
    # The ledger's identity holds no lr; the checkpoint's does (another computation).
    err = refused(capsys, [*ARGS, "--lr", "0.4", "--out", str(out), "--resume"])
    assert "cannot resume node 0" in err and "lr" in err
    assert hashes(out) == before


def test_a_resume_the_daemons_accept_passes_the_launchers_check(tmp_path: Path) -> None:
    # The launcher computes each ledger's identity without calibrating noise: it must be the
    # daemon's, or a good resume would be refused.
    out = tmp_path / "run"
    earlier_run(out, finished=False)
    check_resume(_configs(_config(ARGS), out))
    with pytest.raises(Exception, match="epsilon"):
        check_resume(_configs(_config([*ARGS, "--epsilon", "3"]), out))


def test_resuming_a_finished_run_says_so_at_once_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    earlier_run(out, finished=True)
    before = hashes(out)
    assert _script().main([*ARGS, "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert "nothing to resume: every node finished" in captured.err
    assert hashes(out) == before
    with pytest.raises(NothingToResume):
        reuse_run_dir(out, _configs(_config(ARGS), out), fresh=False)


def test_force_moves_the_run_aside_and_deletes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    earlier_run(out, finished=True)
    before = hashes(out)
    LocalLaunch(_config(ARGS), out)   # what --force does, up to starting the nodes
    aside = sorted(out.glob("previous-*"))
    assert len(aside) == 1
    # Every file of the earlier run, ledgers and checkpoints included, byte for byte.
    moved = {k: v for k, v in before.items() if k != "notes.txt"}
    assert hashes(aside[0]) == moved
    assert (out / "notes.txt").read_text() == "the user's own file\n"   # the user's stays
    assert not (out / "summary.json").exists()
    for i in range(3):
        assert sorted(p.name for p in (out / str(i)).iterdir()) == ["node.toml"]
    # A second --force gets a directory of its own, even within the same second.
    earlier_run(tmp_path / "again", finished=True)
    first = move_aside(tmp_path / "again", now=0.0)
    (tmp_path / "again" / "summary.json").write_text("{}")
    second = move_aside(tmp_path / "again", now=0.0)
    assert first is not None and second is not None and first != second
    assert (first / "0" / LEDGER).is_file() and (second / "summary.json").is_file()


def test_what_counts_as_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert not holds_run(out)
    (out / "0").mkdir(parents=True)
    (out / "0" / "node.toml").write_text("")   # written by the launcher, rebuilt every time
    (out / "data.csv").write_text("")          # the user's
    assert not holds_run(out)
    check_out(out, resume=False, force=False)
    (out / "1").mkdir()
    (out / "1" / "stderr.log").write_text("error: ...\n")   # why a node stopped: a record
    assert holds_run(out)
    with pytest.raises(Exception, match="already holds a run"):
        check_out(out, resume=False, force=False)
