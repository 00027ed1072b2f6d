"""Running a local launch for a person: live progress, Ctrl-C, the final table, summary.json.

The live view reads only what the nodes write anyway (the tail of each `metrics.jsonl`), so it
works the same for daemons it started and for a directory someone else is filling. On a
terminal it redraws one row per node in place; otherwise it prints one line every few seconds.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from node.config import RunConfig
from node.outputs.files import write_json_atomic
from node.tools.local import LaunchError, LocalLaunch
from node.tools.plan import DaemonOptions, preflight
from node.tools.resume import NothingToResume
from node.tools.rundir import check_out


class MetricsTail:
    """The latest record of each node's metrics.jsonl, reading only what was appended since."""

    def __init__(self, paths: dict[int, Path]) -> None:
        self.paths = paths
        self.offsets = dict.fromkeys(paths, 0)
        self.latest: dict[int, dict[str, Any]] = {}
        self.last_accuracy: dict[int, float] = {}

    def poll(self) -> dict[int, dict[str, Any]]:
        for node, path in self.paths.items():
            try:
                with open(path, "rb") as f:
                    if f.seek(0, 2) < self.offsets[node]:  # replaced or truncated: start over
                        self.offsets[node] = 0
                    f.seek(self.offsets[node])
                    chunk = f.read()
            except OSError:
                continue
            # Only complete lines; a half-written last line is read next time.
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.offsets[node] += len(complete)
            for line in complete.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                self.latest[node] = record
                if record.get("accuracy") is not None:
                    self.last_accuracy[node] = record["accuracy"]
        return self.latest


def _num(value: Any, fmt: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value * scale if scale != 1.0 else value, fmt)


class LiveView:
    """Per node: round, loss, accuracy, ε, peers alive, state."""

    def __init__(self, launch: LocalLaunch, stream: TextIO = sys.stderr,
                 every: float = 5.0) -> None:
        self.launch, self.stream = launch, stream
        self.tty = stream.isatty()
        self.every = every  # seconds between lines when not redrawing a terminal
        self.tail = MetricsTail({n.id: launch.run_dir.metrics(n.id) for n in launch.nodes})
        self.drawn = 0
        self.last_line = 0.0
        self.started = time.monotonic()

    def _state(self, node: int) -> str:
        proc = self.launch.nodes[node].proc
        if proc is None:
            return "not started"
        code = proc.poll()
        if code is None:
            return "running"
        return "done" if code == 0 else (f"killed ({-code})" if code < 0 else f"exit {code}")

    def rows(self) -> list[str]:
        latest = self.tail.poll()
        rounds = self.launch.cfg.rounds
        out = [f"{'node':>4}  {'round':>9}  {'loss':>7}  {'acc':>6}  {'eps':>6}  {'peers':>5}"
               "  state"]
        for n in self.launch.nodes:
            r = latest.get(n.id, {})
            done = f"{r['round'] + 1}/{rounds}" if "round" in r else f"0/{rounds}"
            out.append(f"{n.id:>4}  {done:>9}  {_num(r.get('loss'), '.4f'):>7}  "
                       f"{_num(self.tail.last_accuracy.get(n.id), '.1f', 100):>6}  "
                       f"{_num(r.get('epsilon'), '.3g'):>6}  {_num(r.get('peers_alive'), 'd'):>5}"
                       f"  {self._state(n.id)}")
        return out

    def update(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        if self.tty:
            lines = [*self.rows(), f"{elapsed:.0f} s elapsed"]
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        elif final or elapsed - self.last_line >= self.every:
            self.last_line = elapsed
            latest = self.tail.poll()
            done = [r["round"] + 1 for r in latest.values()] or [0]
            losses = [r["loss"] for r in latest.values() if r.get("loss") is not None]
            accs = list(self.tail.last_accuracy.values())
            eps = [r["epsilon"] for r in latest.values() if r.get("epsilon") is not None]
            self.stream.write(
                f"[{elapsed:5.0f} s] rounds {min(done)}-{max(done)}/{self.launch.cfg.rounds}"
                f"  loss {_num(sum(losses) / len(losses) if losses else None, '.4f')}"
                f"  acc {_num(sum(accs) / len(accs) if accs else None, '.1f', 100)}%"
                f"  eps {_num(max(eps) if eps else None, '.3g')}"
                f"  running {len(self.launch.running())}/{len(self.launch.nodes)}\n")
        self.stream.flush()


def format_table(summary: dict[str, Any]) -> str:
    """The final per-node table: accuracy, this run's ε, the lifetime ε of the node's data,
    bytes sent, rounds, exit; then why any ε is unknown."""
    lines = [f"{'node':>4}  {'accuracy':>8}  {'epsilon':>8}  {'lifetime':>8}  "
             f"{'bytes sent':>12}  {'rounds':>7}  exit"]
    for node, r in sorted(summary["nodes"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"{node:>4}  {_num(r.get('accuracy'), '.2%'):>8}  "
                     f"{_num(r.get('epsilon'), '.2f'):>8}  "
                     f"{_num(r.get('lifetime_epsilon'), '.2f'):>8}  "
                     f"{_num(r.get('bytes_sent'), ',d'):>12}"
                     f"  {r.get('rounds_completed', 0):>7}  {r.get('exit')}")
    lines.append(f"mean accuracy {_num(summary.get('mean_accuracy'), '.2%')}, max epsilon "
                 f"{_num(summary.get('max_epsilon'), '.2f')}, {summary['wall_seconds']:.0f} s")
    lines += [f"note: {note}" for _, note in sorted((summary.get("notes") or {}).items())]
    return "\n".join(lines)


def run(launch: LocalLaunch, *, timeout: float, quiet: bool = False,
        stream: TextIO = sys.stderr) -> tuple[dict[str, Any], int]:
    """Start, watch and stop a federation; write summary.json. Returns (summary, exit status).

    Status 0 only when every node exited 0 having finished (or spent its budget); 1 when a node
    failed or the run hit `timeout`; 130 when interrupted (the summary is written regardless).
    """
    stop = threading.Event()
    reason: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only a flag: the waits below notice it within 0.1 s and shut down in order.
        if not stop.is_set():
            reason.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    view = None if quiet else LiveView(launch, stream)
    try:
        if view is not None:  # start-up (imports, data, noise calibration) takes a while
            stream.write(f"starting {len(launch.nodes)} nodes (logs in {launch.out}/<id>/)...\n")
        try:
            launch.start(stop=stop)
            if view is not None:
                stream.write(f"all nodes listening after {launch.startup_seconds or 0:.1f} s; "
                             "training.\n")
        except LaunchError:
            # A resume that failed to start ran nothing: the earlier run's summary stands.
            if not (launch.resumed and launch.run_dir.summary.exists()):
                write_json_atomic(launch.run_dir.summary, launch.summary(0.0))
            raise
        finished = launch.wait(timeout - (time.monotonic() - started), stop=stop,
                               on_tick=view.update if view else None)
        if not finished:
            if reason:
                stream.write(f"\n{reason[0]}: stopping every node...\n")
            else:
                stream.write(f"\nthe run passed its time limit of {timeout:.0f} s; stopping "
                             "every node.\n")
        launch.stop_all(grace=10.0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if view is not None:
        view.update(final=True)
    summary = launch.summary(time.monotonic() - started)
    write_json_atomic(launch.run_dir.summary, summary)
    code = 0 if launch.succeeded() else 1
    return summary, 130 if reason else code


def default_timeout(cfg: RunConfig, round_timeout: float | None, startup: float) -> float:
    """Generous: only a hung federation should ever reach it."""
    return startup + cfg.rounds * max(60.0, 4 * (round_timeout or 30.0)) + 60.0


def launch(cfg: RunConfig, out: Path, options: DaemonOptions, *, timeout: float | None = None,
           quiet: bool = False, fresh: bool = True, force: bool = False,
           fork_server: bool | None = None,
           stream: TextIO = sys.stderr) -> tuple[int, dict[str, Any] | None]:
    """What scripts/launch_local.py and scripts/demo.py do: validate (bad input: one sentence,
    exit 2, nothing started or changed), start, watch, summarise. Returns (exit status,
    summary). An `out` holding a run is refused unless resumed (`fresh` False: checked first)
    or `force`d (moved aside; node.tools.rundir); a resume of a finished run returns (0, None)
    at once. `fork_server`: fork the nodes from one pre-imported template (None: on Linux)."""
    from gossip.errors import KeyFileError
    from node.cli import fail, guarded

    guarded(lambda: check_out(out, resume=not fresh, force=force))
    own_data = "node.data_file" in options.overrides or bool(options.node.get("data_file"))
    guarded(lambda: preflight(cfg, own_data=own_data))
    try:
        federation = guarded(lambda: LocalLaunch(cfg, out, options, fresh=fresh,
                                                 fork_server=fork_server))
    except KeyFileError as exc:
        fail(str(exc))
    except NothingToResume as exc:
        sys.stderr.write(f"{exc}\n")
        return 0, None
    limit = timeout or default_timeout(cfg, options.node.get("round_timeout"),
                                       federation.startup_timeout)
    if not options.curve and not quiet:  # once, after validation: errors stay one sentence
        stream.write("note: plaintext between the nodes (127.0.0.1 only); --curve encrypts it, "
                     "and make_compose.py uses CURVE unless told --plaintext.\n")
    try:
        summary, code = run(federation, timeout=limit, quiet=quiet, stream=stream)
    except LaunchError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.code, None
    return code, summary
