"""A node's durable state: crash-safe checkpoints (NPZ of plain numeric arrays, no pickle, plus
a JSON header), and resuming from them after the rounds the privacy ledger says were released.

A checkpoint holds the algorithm state (model and duals), the round it completed, the public
data-order RNG state and a checksum. It is written to a temp file in the same directory, fsynced,
renamed over the old one and the directory fsynced, so a crash at any instant leaves either the
old or the new checkpoint, never a torn one. The private noise generator is deliberately *not*
saved: a restarted node draws fresh OS entropy (docs/DESIGN.md §2), and the privacy ledger — not the
checkpoint — decides which rounds were already released.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from node.core.mechanism import Mechanism
from node.core.runner import NodeRunner
from node.core.seeds import restart_noise_seed
from node.daemon.settings import NodeConfig
from node.outputs.files import CHECKPOINT, FINAL, LEDGER, write_json_atomic
from privacy.ledger import Ledger

logger = logging.getLogger(__name__)

FORMAT = "dpnorm-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used; the message names the file and what to do."""


@dataclass
class Checkpoint:
    round: int  # last completed round
    state: dict[str, torch.Tensor]
    data_rng: torch.Tensor | None
    meta: dict[str, Any]


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"state.{k}": v.detach().cpu().numpy() for k, v in ckpt.state.items()}
    if ckpt.data_rng is not None:
        arrays["data_rng"] = ckpt.data_rng.numpy()
    header = {"format": FORMAT, "version": VERSION, "round": ckpt.round, "meta": ckpt.meta,
              "sha256": _digest(arrays)}
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, buffer.getbuffer())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | os.PathLike[str],
                    expected_meta: Mapping[str, Any] | None = None) -> Checkpoint | None:
    """The checkpoint at `path`, None if there is none; CheckpointError if it is unusable."""
    source = Path(path)
    if not source.exists():
        return None
    try:
        with np.load(source, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {source} is unreadable ({exc}); move it away to "
                              "start this node from scratch.") from None
    if header.get("format") != FORMAT or header.get("sha256") != _digest(arrays):
        raise CheckpointError(f"checkpoint {source} failed its integrity check; move it away "
                              "to start this node from scratch.")
    meta = header.get("meta", {})
    if expected_meta is not None:
        for key, value in expected_meta.items():
            if meta.get(key) != value:
                raise CheckpointError(
                    f"checkpoint {source} was written with {key}={meta.get(key)!r}, not "
                    f"{value!r}; restart with the same config or move the checkpoint away.")
    state = {k.removeprefix("state."): torch.from_numpy(v.copy())
             for k, v in arrays.items() if k.startswith("state.")}
    rng = arrays.get("data_rng")
    return Checkpoint(int(header["round"]), state,
                      None if rng is None else torch.from_numpy(rng.copy()), meta)


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def checkpoint_identity(cfg: NodeConfig) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: same node, same computation."""
    run = cfg.run.to_dict()
    for volatile in ("rounds", "threads", "eval_every", "test_examples", "noise_seed"):
        run.pop(volatile, None)
    return {"node": cfg.node.id, "run": run}


def ledger_identity(cfg: NodeConfig, plan: Mechanism) -> dict[str, Any]:
    """What must match for a privacy ledger to be continued: the node, its target and mechanism,
    and the schedule its noise multiplier z* was calibrated from (ε, δ, q and the releases,
    R·K or R). A restart with other rounds would re-calibrate z after outputs were seen:
    noise chosen adaptively from released outputs, which the accountant's composition of a
    fixed schedule does not cover."""
    return schedule_identity(cfg, plan.mode, plan.sample_rate, plan.discrete)


def schedule_identity(cfg: NodeConfig, mode: str, sample_rate: float,
                      discrete: bool) -> dict[str, Any]:
    """`ledger_identity` from the mechanism's mode and q alone: a launcher checks a resume
    against the ledgers with it before any node has calibrated its noise."""
    return {"node": cfg.node.id, "epsilon": cfg.run.epsilon, "delta": cfg.run.delta,
            "mode": mode, "rounds": cfg.run.rounds, "local_steps": cfg.run.local_steps,
            "sample_rate": sample_rate, **({"noise": "discrete"} if discrete else {})}


def save_state(runner: NodeRunner, cfg: NodeConfig, completed_round: int) -> None:
    setup = runner.setup
    save_checkpoint(Path(cfg.node.out) / CHECKPOINT, Checkpoint(
        completed_round, {**setup.algorithm.state_dict(), **setup.algorithm.robust_state()},
        setup.trainer.data_generator.get_state(),
        checkpoint_identity(cfg)))


def check_resumable(cfg: NodeConfig, ledger_path: Path,
                    recorded_rounds: Sequence[int] | None) -> Checkpoint | None:
    """The checkpoint to resume from, refused (CheckpointError) when it has trained through
    rounds the ledger at `ledger_path` does not record (`recorded_rounds`: None where the node
    keeps no ledger). Reads only: a node refused here has created and changed no file."""
    path = Path(cfg.node.out) / CHECKPOINT
    ckpt = load_checkpoint(path, checkpoint_identity(cfg))
    if ckpt is not None and recorded_rounds is not None and \
            (not recorded_rounds or max(recorded_rounds) < ckpt.round):
        # The model has seen rounds whose spend the ledger does not hold (it was deleted or
        # replaced): resuming would print an ε that leaves those releases out.
        last = f"up to round {max(recorded_rounds)}" if recorded_rounds else "no rounds"
        raise CheckpointError(
            f"checkpoint {path} has trained through round {ckpt.round} but the privacy ledger "
            f"{ledger_path} records {last}, so the spend of those rounds is unknown; restore "
            "the ledger (the data's lifetime ledger keeps what was spent either way, so "
            "moving both files away starts a new model, not a new budget).")
    return ckpt


def resume(runner: NodeRunner, cfg: NodeConfig, ledger: Ledger | None) -> None:
    """Continue from the checkpoint, after every round the ledger says was released, with the
    ledger's spend (the daemon's runner already commits to it: `NodeRunner(..., ledger)`)."""
    ckpt = check_resumable(cfg, Path(cfg.node.out) / LEDGER if ledger is None else ledger.path,
                           None if ledger is None else ledger.rounds)
    if ckpt is not None:
        runner.setup.algorithm.load_state_dict(ckpt.state)
        runner.setup.algorithm.load_robust_state(ckpt.state)
        if ckpt.data_rng is not None:
            runner.setup.trainer.data_generator.set_state(ckpt.data_rng)
        runner.round = ckpt.round + 1
    if ledger is not None:
        runner.budget = runner.budget.continued(ledger)
        if ledger.rounds:
            # Rounds after the checkpoint were released already; re-running them would send a
            # second, differently noised release of the same round.
            runner.round = max(runner.round, ledger.rounds[-1] + 1)
    # Every round before this one is in the ledger or was never released by this node — as
    # far as the ledger knows: a restored one does not (NodeRunner.charge_earlier_run).
    runner.accounted_before = runner.round
    if ckpt is not None or (ledger is not None and ledger.rounds):
        logger.info("resuming at round %d", runner.round)
        seed = cfg.run.noise_seed
        if seed is not None:
            runner.setup.trainer.noise_generator_reseed(
                restart_noise_seed(seed, cfg.node.id, runner.round))


def carry_results(runner: NodeRunner, previous: list[dict[str, Any]]) -> None:
    """A restarted node reports what it last measured until it measures again: its loss and
    its last evaluation, from its metrics (the checkpoint's model is the one they were computed
    on, or a later one). Without this a node restarted with nothing left to do, or stopped
    before its first new round, would report accuracy null over its finished result."""
    if previous and previous[-1].get("loss") is not None:
        runner.last_loss = float(previous[-1]["loss"])
    scored = [r for r in previous if r.get("accuracy") is not None]
    if scored:
        last = scored[-1]
        runner.last_accuracy = last["accuracy"]
        runner.last_auroc, runner.last_balanced_accuracy = last["auroc"], last["balanced_accuracy"]


def write_final(cfg: NodeConfig, data: dict[str, Any]) -> None:
    write_json_atomic(Path(cfg.node.out) / FINAL, data)
