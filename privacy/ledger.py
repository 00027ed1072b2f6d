"""A write-ahead, crash-safe record of the privacy spend of one node.

Protocol (the caller's side): before any message of round r leaves the node, call
``ledger.record(r, events)``; it returns only once the spend is on disk. Then send. So at any
crash point the file on disk accounts for at least everything that was sent (a crash between
record and send over-counts one round, which is the safe side). On restart ``released(r)`` tells
the node that round r's noise already went out (or may have): it must not draw fresh noise for
that round and send it again, or it would release the same data twice under two noises.

File format (JSON, one object): ``{"format", "version", "identity", "rounds": [[r, [[z, q,
count], ...]], ...], "sha256"}``; the checksum covers the canonical JSON of everything else, so a
truncated, edited or bit-flipped file is refused instead of being read as a smaller spend.
Writes go to a temp file in the same directory, which is fsynced, renamed over the ledger with
``os.replace`` (atomic on POSIX) and followed by an fsync of the directory so the rename itself
is durable. An exclusive ``flock`` on ``<path>.lock`` stops two processes from spending on the
same ledger (each would overwrite the other's records and under-count).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from privacy.accountant import Accountant, Release
from privacy.errors import LedgerError, PrivacyError

FORMAT = "dpnorm-privacy-ledger"
VERSION = 1


class Ledger:
    """The durable spend of one node; use ``Ledger.open`` and close it (or use ``with``)."""

    def __init__(self, path: Path, identity: dict[str, Any], rounds: dict[int, list[Release]],
                 lock_fd: int) -> None:
        self.path = path
        self.identity = identity
        self._rounds = rounds
        self._lock_fd: int | None = lock_fd
        self.created = False  # whether `open` made the file (so `discard` may remove it)
        self.accountant = Accountant(discrete=discrete_noise(identity))
        for events in rounds.values():
            for z, q, count in events:
                self.accountant.spend(z, q, count)

    @classmethod
    def open(cls, path: str | os.PathLike[str],
             identity: Mapping[str, Any] | None = None) -> Ledger:
        """Load the ledger at ``path`` or start an empty one there.

        ``identity`` (JSON-able: node id, dataset fingerprint, privacy settings...) is stored in a
        new ledger and must match an existing one exactly; a mismatch means the file belongs to
        another node or configuration and is refused rather than silently reset.
        """
        path = Path(path)
        ident = json.loads(json.dumps(dict(identity or {}), sort_keys=True))   # normalise
        lock_fd = _lock(path)
        try:
            rounds = _load(path, ident) if path.exists() else {}
            ledger = cls(path, ident, rounds, lock_fd)
            if not path.exists():
                ledger._write()
                ledger.created = True
            _remove_stale_temps(path)
        except BaseException:
            os.close(lock_fd)
            raise
        return ledger

    def record(self, round: int, events: Iterable[Release], *, again: bool = False) -> None:
        """Durably record the releases of ``round``; call it *before* sending anything.

        Raises PrivacyError if ``round`` was already recorded: its noise may have been sent, and
        a fresh draw for the same round would be a second, unaccounted release. ``again`` adds
        the events to a round already recorded instead: a second release of that round that
        happened all the same (a node restored from a backup learns of one only afterwards).
        """
        if self._lock_fd is None:
            raise LedgerError(f"The ledger {self.path} is closed; open it again before spending.")
        if round in self._rounds and not again:
            raise PrivacyError(f"Round {round} was already released according to the ledger; a "
                               "restarted node must skip it instead of sending new noise.")
        checked: list[Release] = []
        probe = Accountant()
        for z, q, count in events:
            probe.spend(z, q, count)   # validates before anything is written
            checked.append(Release(float(z), float(q), int(count)))
        before = self._rounds.get(round)
        self._rounds[round] = [*(before or []), *checked]
        try:
            self._write()
        except BaseException:
            if before is None:
                del self._rounds[round]
            else:
                self._rounds[round] = before
            raise
        for z, q, count in checked:
            self.accountant.spend(z, q, count)

    def released(self, round: int) -> bool:
        """Whether round ``round`` was recorded (and so may have been sent)."""
        return round in self._rounds

    def covers(self, round: int) -> bool:
        """Whether every round up to ``round`` that could have been released is accounted for:
        the ledger holds ``round`` or a later one (rounds are recorded in order)."""
        return bool(self._rounds) and max(self._rounds) >= round

    @property
    def rounds(self) -> list[int]:
        """The recorded rounds, ascending."""
        return sorted(self._rounds)

    def epsilon(self, delta: float) -> float:
        """ε (PLD) of everything recorded."""
        return self.accountant.epsilon(delta)

    def close(self) -> None:
        """Release the lock; the file stays."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def discard(self) -> None:
        """Undo `open` for a node refused right after it: remove the file if `open` created it
        and nothing was recorded since (a refused node leaves no file behind), then close."""
        if self.created and not self._rounds and self._lock_fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                Path(f"{self.path}.lock").unlink()
        self.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _write(self) -> None:
        body = {"format": FORMAT, "version": VERSION, "identity": self.identity,
                "rounds": [[r, [list(e) for e in self._rounds[r]]] for r in sorted(self._rounds)]}
        document = dict(body, sha256=_digest(body))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)


def _digest(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _load(path: Path, identity: dict[str, Any]) -> dict[int, list[Release]]:
    def corrupt(why: str) -> LedgerError:
        return LedgerError(f"The privacy ledger {path} is {why}; refusing to start because the "
                           "spend it records cannot be trusted (restore it or start a new run "
                           "with a new ledger path).")

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise corrupt("unreadable or not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise corrupt("not a dpnorm privacy ledger")
    if document.get("version") != VERSION:
        raise corrupt(f"of unsupported version {document.get('version')!r}")
    claimed = document.pop("sha256", None)
    if claimed != _digest(document):
        raise corrupt("damaged (checksum mismatch)")
    found = document.get("identity")
    if found != identity:
        raise LedgerError(f"The privacy ledger {path} belongs to another node or configuration "
                          f"({_difference(found, identity)}); refusing to start (a ledger "
                          "continues only under the settings its noise was calibrated for).")
    rounds: dict[int, list[Release]] = {}
    try:
        for r, events in document["rounds"]:
            if not isinstance(r, int) or r in rounds:
                raise ValueError(r)
            rounds[r] = [Release(float(z), float(q), int(c)) for z, q, c in events]
            for z, q, c in rounds[r]:
                Accountant().spend(z, q, c)   # raises PrivacyError on impossible values
    except (KeyError, TypeError, ValueError):   # PrivacyError is a ValueError
        raise corrupt("malformed") from None
    return rounds


def _difference(found: object, wanted: dict[str, Any]) -> str:
    """What differs between a ledger's identity and ours, key by key where both are maps: a
    schedule changed at a restart names the setting (e.g. `rounds 100 ≠ 200`)."""
    if not isinstance(found, dict):
        return f"{found} ≠ {wanted}"
    keys = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
    return ", ".join(f"{k} {found.get(k)!r} ≠ {wanted.get(k)!r}" for k in keys)


def _lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LedgerError(f"The privacy ledger {path} is in use by another process; two nodes "
                          "must never spend on the same ledger.") from None
    return fd


def _remove_stale_temps(path: Path) -> None:
    # Left behind by a crash mid-write; never read, since only os.replace publishes a write.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recorded(path: str | os.PathLike[str],
             identity: Mapping[str, Any]) -> dict[int, list[Release]] | None:
    """What the ledger at `path` records, read without creating, locking or changing anything:
    None if there is no file. A corrupt ledger, or one of another identity, raises the
    LedgerError `Ledger.open` would, so a node can refuse to start before it writes a byte."""
    path = Path(path)
    if not path.exists():
        return None
    return _load(path, json.loads(json.dumps(dict(identity), sort_keys=True)))


def read_spend(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Accountant] | None:
    """A ledger's identity and spend, read without taking its lock (for reports about a node
    that may have crashed); None if there is no usable ledger at ``path``."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        identity = document["identity"]
        rounds = _load(path, identity)
    except (OSError, ValueError, KeyError, TypeError, PrivacyError):
        return None
    accountant = Accountant(discrete=discrete_noise(identity))
    for events in rounds.values():
        for z, q, count in events:
            accountant.spend(z, q, count)
    return identity, accountant


def discrete_noise(identity: Mapping[str, Any]) -> bool:
    """Whether a ledger's releases are of the discrete Gaussian (`--secure-noise`): its identity
    says so, and its ε is then the discrete accountant's (privacy.discrete)."""
    return identity.get("noise") == "discrete"
