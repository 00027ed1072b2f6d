"""A run directory is never lost: what `--out DIR` may do to a directory that already holds a run.

A run's files are records: its metrics, its final results and above all its privacy ledgers,
which prove what the data has paid. So a command given a DIR that holds one refuses (one
sentence, exit 2, nothing touched) unless told what to do with it:

- `--resume` continues it (node.tools.resume checks, reading only, that every node can);
- `--force` moves it aside, never deletes it: every entry a run writes goes into
  `DIR/previous-<UTC time>/`, itself a complete run directory (it can be read, plotted or
  resumed with `--out DIR/previous-<UTC time>`).

Inside DIR, not beside it: a rename within one directory stays on one file system, so it is
atomic and never a copy (nothing half-copied, nothing deleted after copying), and it works where
DIR is a mount point, the current directory or under a directory the user cannot write. Files a
user keeps in DIR (a dataset, notes) and its CURVE keys (`keys/`, reused by every run) stay.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from node.errors import ConfigError
from node.outputs.files import ENDPOINTS, SUMMARY

#: Files a launch, a simulation or the demo writes at the top of DIR (the demo's plots too).
RUN_FILES = (SUMMARY, ENDPOINTS, "forkserver.log", "accuracy.png", "auroc.png",
             "balanced_accuracy.png", "dual_norm.png", "loss.png")
#: What a launcher writes into a node's directory before any process starts: it is rebuilt
#: from the options every time, so a directory holding only this holds no run.
CONFIG_ONLY = frozenset({"node.toml"})
ASIDE = "previous-"


def run_entries(out: Path) -> Iterator[Path]:
    """The entries of DIR that belong to a run: node directories (`0/`, `1/`, …) and RUN_FILES."""
    if not out.is_dir():
        return
    for child in sorted(out.iterdir()):
        if (child.is_dir() and child.name.isdigit()) or child.name in RUN_FILES:
            yield child


def holds_run(out: Path) -> bool:
    """Whether DIR holds what a run wrote: a summary, endpoints, or a node directory with any
    file other than the launcher's own node.toml (a log counts: it says why a node stopped)."""
    for entry in run_entries(out):
        if not entry.is_dir():
            return True
        if any(p.is_file() and p.name not in CONFIG_ONLY for p in entry.rglob("*")):
            return True
    return False


def check_out(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse (ConfigError) a DIR that holds a run when neither `--resume` nor `--force` says
    what to do with it, or a DIR that is not a directory; reads only."""
    if resume and force:
        raise ConfigError("--resume continues the run in DIR and --force moves it aside; "
                          "give one of them.")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; choose another --out.")
    if not (resume or force) and holds_run(out):
        raise ConfigError(f"{out} already holds a run (its metrics, results and privacy "
                          "ledgers); nothing was changed: pass --resume to continue it, "
                          f"--force to move it aside into {out}/{ASIDE}<time>/, or choose "
                          "another --out.")


def move_aside(out: Path, now: float | None = None) -> Path | None:
    """Move every run entry of DIR into a new `DIR/previous-<UTC time>/` (renames only: nothing
    is copied or deleted); returns that directory, or None when DIR holds no run entry."""
    entries = list(run_entries(out))
    if not entries:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = out / f"{ASIDE}{stamp}"
    suffix = 1
    while True:
        try:
            target.mkdir()  # exclusive: two runs moved aside in one second get their own
            break
        except FileExistsError:
            suffix += 1
            target = out / f"{ASIDE}{stamp}-{suffix}"
    for entry in entries:
        os.rename(entry, target / entry.name)
    return target


def finished(out: Path, rounds: int, nodes: int) -> bool:
    """Whether every node of the run in DIR finished: its final.json says it ran all `rounds`
    (or stopped at its privacy budget, which a resume under the same ε cannot pass)."""
    from node.outputs.files import FINAL, read_json
    from node.outputs.records import ExitReason

    for i in range(nodes):
        final = read_json(out / str(i) / FINAL)
        if final is None:
            return False
        exit_reason = final.get("exit")
        done = final.get("rounds_completed")
        if exit_reason == ExitReason.BUDGET:
            continue
        if exit_reason != ExitReason.FINISHED or not isinstance(done, int) or done < rounds:
            return False
    return True


def keep_files(paths: Iterable[Path]) -> dict[Path, bytes | None]:
    """The bytes of each file (None: absent), for `restore_files` to put back exactly."""
    return {p: p.read_bytes() if p.is_file() else None for p in paths}


def restore_files(kept: Mapping[Path, bytes | None]) -> None:
    """Put every file back as `keep_files` found it: its bytes, or absent."""
    for path, data in kept.items():
        if data is None:
            path.unlink(missing_ok=True)
        else:
            write_bytes_atomic(path, data)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
