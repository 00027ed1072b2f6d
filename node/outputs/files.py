"""Where a run's files are, and how they are written: metrics.jsonl one JSON object per line,
flushed per record so a crash loses at most the line being written; final.json and summary.json
written atomically.

    DIR/summary.json            the run (launcher or simulator)
    DIR/endpoints.json          a local launch's READY endpoints, for the nodes to read
    DIR/<id>/metrics.jsonl      one record per round (docs/CONTRACTS.md)
    DIR/<id>/final.json         what a daemon reports when it exits
    DIR/<id>/privacy_ledger.json   its privacy spend, written before each round is sent
    DIR/<id>/checkpoint.npz     its last checkpoint (node.daemon.state)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

METRICS = "metrics.jsonl"
FINAL = "final.json"
SUMMARY = "summary.json"
ENDPOINTS = "endpoints.json"
LEDGER = "privacy_ledger.json"
CHECKPOINT = "checkpoint.npz"


@dataclass(frozen=True)
class RunDir:
    """The layout above, rooted at one run's directory."""

    root: Path

    def node(self, i: int) -> Path:
        return self.root / str(i)

    def metrics(self, i: int) -> Path:
        return self.node(i) / METRICS

    def final(self, i: int) -> Path:
        return self.node(i) / FINAL

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def endpoints(self) -> Path:
        return self.root / ENDPOINTS

    def metrics_files(self) -> dict[int, Path]:
        """Every node's metrics.jsonl that exists, by node id."""
        return {int(p.parent.name): p for p in sorted(self.root.glob(f"*/{METRICS}"))
                if p.parent.name.isdigit()}


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity; a metric that is not a number is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class MetricsWriter:
    """Appends records to `<dir>/metrics.jsonl`."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(directory) / METRICS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        # One write() call per line: a reader (or a SIGKILL) never sees half a record merged
        # with the next one.
        self._file.write(json.dumps(_clean(record), allow_nan=False) + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a metrics.jsonl (a torn last line, if any, is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                records.append(json.loads(line))
    return records


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON via a temp file, fsync and rename, so readers see the old or the new file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_clean(data), f, indent=2, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def read_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A JSON object from `path`; None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
