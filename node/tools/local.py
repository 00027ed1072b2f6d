"""Start a federation of real node daemons on 127.0.0.1 and collect what they leave behind.

`LocalLaunch` validates everything, moves an earlier run aside or checks its resume (nothing is
ever deleted: node.tools.rundir, node.tools.resume) and writes one `node.toml` per node when it
is built, before any process starts; `start()` runs one daemon per node in its own process
group, collects every `READY <endpoint>` line and writes `endpoints.json` atomically; the nodes
wait for that file. On Linux each daemon is a fork of one template that imported torch and the
daemon once (`node.tools.forkserver`), so N nodes share those pages; `fork_server=False` (or
another `command`) runs `python -m node` per node instead. `node_commands` gives single nodes a
command of their own (a hostile peer); a node the template cannot start is spawned as its own
process too. Tests drive it directly; `scripts/launch_local.py` and `scripts/demo.py` go through
`node.tools.live.launch()` (live view, signals, summary.json). Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gossip.keys import generate_topology_keys
from node.config import RunConfig
from node.core.model import is_package_model
from node.core.privacy_plan import formal_guarantee
from node.outputs.files import FINAL, RunDir, read_json, write_json_atomic
from node.outputs.records import GOOD_EXITS, kept_result, node_result, summary
from node.tools.forkserver import LIFELINE_ENV, ForkServer, ForkServerError, Lifeline, NodeHandle
from node.tools.plan import (
    LOCAL_LISTEN,
    DaemonOptions,
    check_nodes,
    config_text,
    node_configs,
    privacy_plans,
)
from node.tools.resume import reuse_run_dir
from node.tools.rundir import keep_files, restore_files

__all__ = ["DaemonOptions", "LaunchError", "LocalLaunch", "NodeProcess", "read_final"]

# The directory holding the `node` package: the daemons import this very checkout.
ROOT = Path(__file__).resolve().parents[2]
FORK_SERVER_LOG = "forkserver.log"
log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """The federation could not be started or run; the message is one sentence, `code` the
    exit status it calls for (2: a node refused its config, data or files)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class NodeProcess:
    id: int
    config: Path
    out: Path
    proc: NodeHandle | None = None
    endpoint: str | None = None
    ready: threading.Event = field(default_factory=threading.Event)


class LocalLaunch:
    """N daemons on this machine. Build (validates, writes configs), `start()`, `wait()`."""

    def __init__(self, cfg: RunConfig, out: str | Path, options: DaemonOptions | None = None, *,
                 command: Sequence[str] | None = None, fresh: bool = True,
                 recompute_privacy: bool = True, fork_server: bool | None = None,
                 node_commands: Mapping[int, Sequence[str]] | None = None) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.run_dir = RunDir(self.out)
        self.options = options or DaemonOptions()
        self.command = list(command or [sys.executable, "-m", "node"])
        # Nodes that run a command of their own (a hostile peer, a poisoned node); the others
        # are still forked from the template, so one odd node does not slow every start-up.
        self.node_commands = {i: list(c) for i, c in (node_commands or {}).items()}
        # The template runs the daemon's own main: another command is spawned as asked.
        default = sys.platform.startswith("linux")
        self.fork_server = command is None and (default if fork_server is None else fork_server)
        self._server: ForkServer | None = None
        self._lifeline = Lifeline()  # the spawned nodes' (a forked one's is its server's)
        self.options.check_overrides("the launcher")
        configs = node_configs(cfg, self.options, self._place, endpoint=lambda j: "")
        # Off when nodes read their own files: the launcher cannot see their shard sizes.
        self.recompute_privacy = recompute_privacy and not any(c.node.data_file for c in configs)
        self.startup_timeout = configs[0].node.startup_timeout
        check_nodes(configs)  # ports, own files: before anything in DIR is moved or written
        self.resumed = not fresh
        reuse_run_dir(self.out, configs, fresh=fresh)  # moved aside, or checked: never deleted
        if self.options.curve:
            generate_topology_keys(self.out / "keys", range(cfg.nodes))
        # Seconds from starting the first node to every node READY; None until start() has.
        self.startup_seconds: float | None = None
        # Each node's final.json from before `start` (a resumed launch), by node id.
        self._previous: dict[int, dict[str, Any] | None] = {}
        self.nodes: list[NodeProcess] = []
        for i, config in enumerate(configs):
            node_dir = self.run_dir.node(i)
            node_dir.mkdir(parents=True, exist_ok=True)
            (node_dir / "node.toml").write_text(config_text(config), encoding="utf-8")
            self.nodes.append(NodeProcess(i, node_dir / "node.toml", node_dir))

    def _place(self, i: int) -> dict[str, Any]:
        keys = {"curve_keys": str(self.out / "keys")} if self.options.curve else {}
        return {"id": i, "listen": LOCAL_LISTEN, "out": str(self.run_dir.node(i)),
                "endpoints_file": str(self.run_dir.endpoints), **keys}

    @property
    def processes(self) -> dict[int, NodeHandle]:
        return {n.id: n.proc for n in self.nodes if n.proc is not None}

    @property
    def template_pid(self) -> int | None:
        """The fork server's template process while one runs (it holds pages too)."""
        return self._server.pid if self._server is not None and self._server.alive else None

    @property
    def endpoints(self) -> dict[int, str]:
        return {n.id: n.endpoint for n in self.nodes if n.endpoint is not None}

    def _env(self) -> dict[str, str]:
        threads = str(self.cfg.threads)
        # A package.module:FUNC model is found from the launcher's directory, as in the launcher.
        here = str(Path.cwd()) if is_package_model(self.cfg.model) else None
        return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH"), here]))}

    def _template(self) -> ForkServer | None:
        if not self.fork_server:
            return None
        # One that died is not replaced: its nodes run on, and `_fork` spawns a restarted one.
        if self._server is None:
            self._server = ForkServer(self.command[0], cwd=ROOT, env=self._env(),
                                      log_file=self.out / FORK_SERVER_LOG,
                                      private=self.cfg.private, title=str(self.out))
        return self._server

    def close_fork_server(self) -> None:
        """Stop the template (it also dies with this process) and cut the lifeline of the
        spawned nodes; a later spawn starts both again."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._lifeline.close()

    def _spawn(self, n: NodeProcess, extra: Sequence[str] = ()) -> None:
        argv = ["--config", str(n.config)]  # --set overrides are in the file
        for pair in extra:
            argv += ["--set", pair]
        n.ready.clear()
        own = self.node_commands.get(n.id)
        with open(n.out / "stderr.log", "a", encoding="utf-8") as err:
            stream = self._fork(n, argv, err) if own is None else None
            if stream is None:
                # A process group of its own: the terminal's Ctrl-C reaches only the launcher,
                # which then stops every node in order instead of all of them dying mid-write.
                life = self._lifeline.read_end()  # tied to this process, as a forked node
                proc = subprocess.Popen([*(own or self.command), *argv], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                                        env={**self._env(), LIFELINE_ENV: str(life)},
                                        pass_fds=(life,), start_new_session=True)
                n.proc, stream = proc, proc.stdout
        threading.Thread(target=self._read_stdout, args=(n, stream), daemon=True).start()

    def _fork(self, n: NodeProcess, argv: list[str], err: IO[str]) -> IO[str] | None:
        """Start the node from the template; its stdout, or None to spawn it plainly."""
        server = self._template()
        if server is None:
            return None
        read, write = os.pipe()
        try:
            n.proc = server.spawn(argv, write, err.fileno(), timeout=self.startup_timeout)
        except ForkServerError as exc:
            os.close(read)
            log.warning("node %d: %s; starting it as its own process", n.id, exc)
            return None
        finally:
            os.close(write)
        return open(read, encoding="utf-8")

    def _read_stdout(self, n: NodeProcess, stream: IO[str] | None) -> None:
        # Drains stdout for the node's whole life so a chatty node never blocks on a full pipe.
        if stream is None:
            return
        with stream, open(n.out / "stdout.log", "a", encoding="utf-8") as out:
            for line in stream:
                if line.startswith("READY ") and not n.ready.is_set():
                    n.endpoint = line.split(None, 1)[1].strip()
                    n.ready.set()
                out.write(line)
                out.flush()

    def _await_ready(self, nodes: Sequence[NodeProcess], timeout: float,
                     stop: threading.Event | None) -> None:
        deadline = time.monotonic() + timeout
        while not all(n.ready.is_set() for n in nodes):
            for n in nodes:
                if not n.ready.is_set() and n.proc is not None and n.proc.poll() is not None:
                    time.sleep(0.2)  # let the reader thread see a READY printed just before exit
                    if not n.ready.is_set():
                        raise self._refused(n, n.proc.returncode)
            if stop is not None and stop.is_set():
                raise LaunchError("interrupted while the nodes were starting.")
            if time.monotonic() > deadline:
                late = [str(n.id) for n in nodes if not n.ready.is_set()]
                raise LaunchError(f"node(s) {', '.join(late)} did not print READY within "
                                  f"{timeout:.0f} s; see {self.out}/<id>/stderr.log.")
            time.sleep(0.05)

    def _refused(self, n: NodeProcess, code: int) -> LaunchError:
        lines = (n.out / "stderr.log").read_text(encoding="utf-8", errors="replace").splitlines()
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
        if code == 2 and last:  # its one sentence, and the status every command gives it
            return LaunchError(f"node {n.id} refused to start: {last.removeprefix('error: ')}", 2)
        said = f" ({last})." if last else f"; see {n.out / 'stderr.log'}."
        return LaunchError(f"node {n.id} exited with status {code} before it was ready{said}")

    def start(self, timeout: float | None = None, stop: threading.Event | None = None) -> None:
        """Start every node, wait for all READY lines, then publish endpoints.json."""
        # Nodes read endpoints.json as soon as it exists: one left by an earlier run (--resume)
        # would wire them to dead ports. final.json is per process: a stale one would be read
        # as this run's outcome.
        self._previous = {n.id: read_final(n.out) for n in self.nodes}  # see `results`
        kept = keep_files([self.run_dir.endpoints, *(n.out / FINAL for n in self.nodes)])
        for path in kept:  # put back if the start fails
            path.unlink(missing_ok=True)
        self.startup_seconds = None
        began = time.monotonic()
        try:
            for n in self.nodes:
                self._spawn(n)
            self._await_ready(self.nodes, timeout or self.startup_timeout, stop)
        except BaseException:
            self.stop_all()
            restore_files(kept)  # nothing ran: the earlier results stand (a node stopped
            raise                # while waiting for its neighbours wrote "stopped" over them)
        self.startup_seconds = time.monotonic() - began
        write_json_atomic(self.run_dir.endpoints,
                          {str(i): ep for i, ep in sorted(self.endpoints.items())})

    def signal(self, node: int, sig: int) -> None:
        proc = self.nodes[node].proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def kill(self, node: int) -> None:
        self.signal(node, signal.SIGKILL)
        self.stop_all([node], grace=5.0)

    def stop(self, node: int, grace: float = 10.0) -> None:
        self.stop_all([node], grace)

    def restart(self, node: int, timeout: float | None = None) -> None:
        """Start a stopped node again on the endpoint its neighbours already know."""
        n = self.nodes[node]
        if n.proc is not None and n.proc.poll() is None:
            raise LaunchError(f"node {node} is still running; stop or kill it first.")
        (n.out / FINAL).unlink(missing_ok=True)
        self._spawn(n, [f"node.listen={n.endpoint or LOCAL_LISTEN}"])
        self._await_ready([n], timeout or self.startup_timeout, None)

    def running(self) -> list[int]:
        return [n.id for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait(self, timeout: float, *, tick: float = 1.0, on_tick: Any = None,
             stop: threading.Event | None = None) -> bool:
        """Wait until every node exits (True) or the deadline passes / `stop` is set (False)."""
        deadline = time.monotonic() + timeout
        next_tick = 0.0
        while self.running():
            now = time.monotonic()
            if now >= deadline or (stop is not None and stop.is_set()):
                return False
            if on_tick is not None and now >= next_tick:
                on_tick()
                next_tick = now + tick
            time.sleep(0.1)
        self.close_fork_server()
        return True

    def stop_all(self, nodes: Sequence[int] | None = None, grace: float = 10.0) -> None:
        """SIGTERM the nodes, give them `grace` seconds to say BYE and flush, then SIGKILL."""
        ids = list(range(len(self.nodes))) if nodes is None else list(nodes)
        for i in ids:
            self.signal(i, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for i in ids:
            proc = self.nodes[i].proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.signal(i, signal.SIGKILL)
                proc.wait(5.0)
        if nodes is None:
            self.close_fork_server()

    def results(self, notes: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """summary.json's per-node entries: final.json where the node wrote one, else metrics
        (and, in `notes`, why a node's ε is null where its files prove no bound)."""
        formal = formal_guarantee(self.cfg, released=True)
        entries = {str(n.id): node_result(n.out, formal=formal, notes=notes) for n in self.nodes}
        for i, previous in self._previous.items():
            entries[str(i)] = kept_result(previous, entries[str(i)]) or entries[str(i)]
        return entries

    def succeeded(self) -> bool:
        results = self.results()
        return all(n.proc is not None and n.proc.returncode == 0
                   and results[str(n.id)]["exit"] in GOOD_EXITS for n in self.nodes)

    def summary(self, wall: float) -> dict[str, Any]:
        # The noise each daemon calibrated, from its final.json; recomputed only for nodes
        # that died without writing one, so that ε stays recomputable from the summary.
        privacy: dict[int, dict[str, Any]] = {}
        for n in self.nodes:
            reported = (read_final(n.out) or {}).get("privacy")
            if isinstance(reported, dict):
                privacy[n.id] = reported
        missing = [n.id for n in self.nodes if n.id not in privacy]
        if missing and privacy and self.recompute_privacy:
            privacy.update({i: plan.record()
                            for i, plan in privacy_plans(self.cfg, missing).items()})
        ordered = [privacy[i] for i in sorted(privacy)] if len(privacy) == len(self.nodes) else []
        notes: dict[str, str] = {}
        results = self.results(notes)
        return summary(self.cfg, results, wall, ordered, startup_seconds=self.startup_seconds,
                       notes=notes)


def read_final(out: Path) -> dict[str, Any] | None:
    """A node's final.json, or None if it wrote none (yet)."""
    return read_json(out / FINAL)
