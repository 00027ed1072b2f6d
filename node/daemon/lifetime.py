"""Where a node's spend is kept, opened only once every check that can refuse the start passed.

Two ledgers: the run's (`<out>/privacy_ledger.json`, privacy.ledger) and the data's lifetime
ledger (privacy.lifetime), kept in the node's state directory — `node.state_dir`, by default
`$XDG_STATE_HOME/dpnorm` or `~/.local/state/dpnorm`, outside any run directory and any
installation; dpnorm never deletes anything there — under `lifetime/<fingerprint>.json`.

The fingerprint names the data the releases are about:
- `node.data_file`: a hash of the file's canonical rows (each row's float32 features and int64
  label, as the node loads them, hashed, and the sorted row hashes hashed again). Not of its
  bytes: reordering the rows or converting the file between CSV and NPZ leaves the people in
  it the same, and must not open a fresh budget. Any change of the rows (one added) is another
  dataset, and a new ledger (docs/PRIVACY.md says what that does not cover).
- a shard of a named dataset (or of one file given as `dataset`, hashed by its bytes): the
  dataset, the node count, partition, seed, cap and node id that define which rows it holds.

`open_spend` reads both ledgers and the checkpoint, checks them against each other and against
`node.lifetime_epsilon`, and only then creates or locks anything: a node refused at start
leaves every file as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from node.core.assemble import NodeSetup
from node.core.data import load_local
from node.daemon.settings import NodeConfig
from node.daemon.state import check_resumable, ledger_identity
from node.errors import ConfigError
from node.outputs.files import LEDGER
from privacy.accountant import Accountant, Release
from privacy.errors import PrivacyError
from privacy.ledger import Ledger, recorded
from privacy.lifetime import Lifetime, discrete_history, epsilon_after, lifetime_history

logger = logging.getLogger(__name__)


def state_dir(setting: str) -> Path:
    """The node's state directory: `setting`, else the XDG state directory's dpnorm."""
    if setting:
        return Path(setting).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dpnorm"


def fingerprint(cfg: NodeConfig) -> str:
    """A hex name for the data this node trains on (see the module docstring)."""
    if cfg.node.data_file:
        return "rows-" + rows_digest(cfg.node.data_file, cfg.node.data_label_column)
    run = cfg.run
    description = {"dataset": run.dataset, "nodes": run.nodes, "partition": run.partition,
                   "seed": run.seed, "examples_per_node": run.examples_per_node,
                   "validation_fraction": run.validation_fraction, "node": cfg.node.id}
    if run.dataset.lower().endswith((".csv", ".npz")):
        # A path says nothing of the rows behind it: the file's bytes do.
        description["file_sha256"] = _file_digest(Path(run.dataset))
        description["label_column"] = run.label_column
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return "shard-" + hashlib.sha256(canonical.encode()).hexdigest()


def rows_digest(path: str, label_column: str) -> str:
    """SHA-256 over the sorted per-row BLAKE2b hashes of a node's file: the same for any order
    of the rows and for CSV or NPZ, different for any other multiset of rows."""
    x, y = load_local(path, label_column=label_column)
    flat = np.ascontiguousarray(x.reshape(len(x), -1), dtype="<f4")
    labels = np.ascontiguousarray(y, dtype="<i8")
    rows = sorted(hashlib.blake2b(flat[i].tobytes() + labels[i].tobytes(),
                                  digest_size=16).digest() for i in range(len(labels)))
    digest = hashlib.sha256(f"dpnorm rows {flat.shape[1:]}".encode())
    for row in rows:
        digest.update(row)
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lifetime_path(cfg: NodeConfig, name: str) -> Path:
    return state_dir(cfg.node.state_dir) / "lifetime" / f"{name}.json"


def open_spend(cfg: NodeConfig, setup: NodeSetup) -> tuple[Ledger | None, Lifetime]:
    """The run ledger (None without a privacy claim) and the data's lifetime ledger, both
    locked for the run. Refuses (LedgerError, CheckpointError, PrivacyError) before creating
    or changing any file: a damaged or foreign ledger, a checkpoint the ledger does not cover,
    and a run whose planned releases would take the lifetime ε past `node.lifetime_epsilon`."""
    plan = setup.plan
    run_path = Path(cfg.node.out) / LEDGER
    identity = ledger_identity(cfg, plan)
    # A private node keeps a run ledger: a missing one records no rounds (None: keeps none).
    rounds = (recorded(run_path, identity) or {}) if plan.claims_privacy else None
    check_resumable(cfg, run_path, None if rounds is None else sorted(rounds))
    name = fingerprint(cfg)
    path = lifetime_path(cfg, name)
    history = lifetime_history(path, name)
    done = Accountant()
    for events in (rounds or {}).values():
        for z, q, count in events:
            done.spend(z, q, count)
    planned = plan.planned_releases(done.steps)
    # The discrete Gaussian's releases (`--secure-noise`) are kept and composed apart; a
    # release without a bound is the main file's either way.
    secure = [plan.discrete and e.noise_multiplier > 0 for e in planned]
    _check_cap(cfg, path, history, [e for e, d in zip(planned, secure, strict=True) if not d],
               discrete_history(path, name),
               [e for e, d in zip(planned, secure, strict=True) if d])
    try:
        lifetime = Lifetime.open(path, name)
    except OSError as exc:
        raise ConfigError(f"cannot keep the lifetime privacy ledger of node {cfg.node.id}'s data "
                          f"in {path.parent} ({exc.strerror}); set node.state_dir to a writable "
                          "directory on persistent storage.") from None
    try:
        ledger = Ledger.open(run_path, identity) if plan.claims_privacy else None
    except BaseException:
        lifetime.discard()
        raise
    logger.info("lifetime ledger of this node's data: %s", path)
    return ledger, lifetime


def _check_cap(cfg: NodeConfig, path: Path, history: list[Release], planned: list[Release],
               kept: list[Release], planned_discrete: list[Release]) -> None:
    """`kept`, `planned_discrete`: the data's discrete-Gaussian releases, recorded and planned."""
    cap = cfg.node.lifetime_epsilon
    if cap == float("inf") or not (planned or planned_discrete):
        return
    delta = cfg.run.delta
    after = epsilon_after(history, planned, delta, [*kept, *planned_discrete])
    if after > cap:
        before = epsilon_after(history, [], delta, kept)
        raise PrivacyError(
            f"this run could take the lifetime ε of node {cfg.node.id}'s data from "
            f"{_fmt(before)} to {_fmt(after)} (δ = {delta:g}), past node.lifetime_epsilon = "
            f"{cap:g}, so it is refused before releasing anything; the spend is kept in {path}.")


def _fmt(value: float) -> str:
    return "∞ (a release without a proven bound)" if value == float("inf") else f"{value:.4g}"
