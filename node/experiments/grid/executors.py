"""Where a grid's runs execute: a local process pool (the default) or Ray (one machine or many).

    with LocalExecutor(jobs=2) as ex:                 # spawn pool, one torch thread per worker
        for path, brief, error in ex.run(worker, tasks): ...
    with RayExecutor(cpus=2) as ex: ...               # starts a local Ray with 2 CPUs
    with RayExecutor(address="10.0.0.1:6379") as ex:  # joins a running Ray cluster

A task is `(spec, directory)`. `worker(task)` runs the spec into the directory, writes DONE last
and returns `(spec.path, brief or None, traceback text)`; it never raises, so one failed run loses
nothing else (the next invocation retries it). `run` yields those triples as runs finish, in
completion order, which is what the grid's progress lines and ETA are built from.

Ray: every run is one task declaring `num_cpus=1` (and one torch thread, set by the worker). The
task runs into a scratch directory on whichever machine Ray places it, and returns that
directory's files through Ray's object store; this process then writes them under the output
directory, DONE last and atomically. So the output directory lives on the driver's machine only
(no shared filesystem needed), a run is done exactly when its directory has DONE, and an
interrupted grid resumes as with the pool. Every machine of a cluster needs dpnorm installed
(same version, with `torch`) and the dataset at the run's `data_dir`.

Ray is imported only when a `RayExecutor` is entered. Without it, or with a cluster address that
does not answer within `connect_timeout` seconds, entering raises `ExecutorError`, whose message
is one sentence for the user, before any run starts.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from node.experiments.grid.engine import RunSpec

__all__ = ["DONE", "Executor", "ExecutorError", "LocalExecutor", "RayExecutor", "deliver",
           "probe_cluster", "run_in_scratch"]

DONE = "DONE"  # a run's directory is finished exactly when it holds this file (written last)

Brief = dict[str, Any]
Result = tuple[str, Brief | None, str]
Task = tuple["RunSpec", str]
Worker = Callable[[Task], Result]

RAY_EXTRA = "pip install -e '.[ray]'"


class ExecutorError(RuntimeError):
    """The chosen executor cannot run here; the message is one user-facing sentence."""


class Executor(Protocol):
    def __enter__(self) -> Executor: ...

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def describe(self) -> str:
        """How the runs execute, for the grid's first progress line."""
        ...

    def run(self, worker: Worker, tasks: Sequence[Task]) -> Iterator[Result]: ...


class LocalExecutor:
    """This machine's cores: in-process for one job, else a spawn pool of `jobs` processes."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = jobs

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def describe(self) -> str:
        return f"with {self.jobs} worker(s)"

    def run(self, worker: Worker, tasks: Sequence[Task]) -> Iterator[Result]:
        if self.jobs <= 1:
            yield from map(worker, tasks)
            return
        # spawn, not fork: forking a process that already initialised torch's thread pools can
        # deadlock the children.
        with multiprocessing.get_context("spawn").Pool(self.jobs, maxtasksperchild=8) as pool:
            yield from pool.imap_unordered(worker, tasks)


class RayExecutor:
    """Each run a Ray task (`num_cpus=1`); a local Ray of `cpus` CPUs, or the cluster at
    `address` (its CPUs then set the parallelism)."""

    def __init__(self, *, address: str | None = None, cpus: int = 1,
                 connect_timeout: float = 20.0) -> None:
        self.address = address
        self.cpus = max(1, cpus)
        self.connect_timeout = connect_timeout
        self._ray: Any = None

    def __enter__(self) -> RayExecutor:
        if self.address is not None:
            _token_auth_if_available()  # before the import: Ray reads its auth mode then
        try:
            import ray as ray_module
        except ImportError:
            raise ExecutorError(f"--executor ray needs Ray, which is not installed here: "
                                f"install the extra with `{RAY_EXTRA}`.") from None
        ray: Any = ray_module
        quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        if self.address is not None:
            probe_cluster(self.address, self.connect_timeout)
            try:
                ray.init(address=self.address, **quiet)
            except Exception as exc:
                raise _unreachable(self.address, _root_cause(exc)) from exc
            if not ray.cluster_resources().get("CPU"):  # its tasks would wait forever
                ray.shutdown()
                raise ExecutorError(f"the Ray cluster at {self.address} has no CPUs to run on; "
                                    f"start its machines with `ray start --num-cpus N`.")
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            try:
                ray.init(address="local", num_cpus=self.cpus, num_gpus=0,
                         include_dashboard=False, object_store_memory=256 * 1024**2, **quiet)
            except Exception as exc:
                raise ExecutorError(f"could not start a local Ray: {_first_line(exc)}.") from exc
        self._ray = ray
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None

    def describe(self) -> str:
        cpus = int(self._ray.cluster_resources().get("CPU", 0)) if self._ray else self.cpus
        where = "a local Ray" if self.address is None else f"the Ray cluster at {self.address}"
        return f"on {where} ({cpus} CPU(s), one per run)"

    def run(self, worker: Worker, tasks: Sequence[Task]) -> Iterator[Result]:
        ray = self._ray
        if ray is None:
            raise RuntimeError("enter the RayExecutor before running tasks")
        # max_calls mirrors the pool's maxtasksperchild: a fresh worker process every 8 runs.
        remote = ray.remote(num_cpus=1, max_calls=8, max_retries=1)(run_in_scratch)
        owner = {remote.remote(worker, spec): (spec, directory) for spec, directory in tasks}
        pending = list(owner)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    spec, directory = owner.pop(ref)
                    try:
                        result, files = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # worker died, node lost, ...
                        yield spec.path, None, f"{exc}\n{type(exc).__name__}: {_first_line(exc)}"
                        continue
                    deliver(directory, files)
                    yield result
        finally:
            # Stopped early (Ctrl-C, an error): cancel what has not finished. Not forced, so a
            # running task unwinds and removes its scratch directory; those runs have no DONE.
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            if pending:
                with contextlib.suppress(Exception):
                    ray.wait(pending, num_returns=len(pending), timeout=5)


def run_in_scratch(worker: Worker, spec: RunSpec) -> tuple[Result, dict[str, bytes]]:
    """On a Ray worker: run into a scratch directory, return the result and the run's files."""
    scratch = Path(tempfile.mkdtemp(prefix="dpnorm-run-"))
    try:
        run_dir = scratch / "run"
        result = worker((spec, str(run_dir)))
        files = {p.relative_to(run_dir).as_posix(): p.read_bytes()
                 for p in sorted(run_dir.rglob("*")) if p.is_file()} if run_dir.is_dir() else {}
        return result, files
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def deliver(directory: str | Path, files: dict[str, bytes]) -> None:
    """Write a run's files into `directory` (wiped first), DONE last and atomically."""
    target = Path(directory)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in sorted(files, key=lambda n: n == DONE):
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"a run returned a file outside its directory: {name!r}")
        path = target.joinpath(*rel.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(files[name])
            if name == DONE:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)


# Run in a child process so that a cluster that never answers cannot hang the grid: ray.init to
# a dead or wrong address retries for minutes (and cannot be interrupted from a thread).
_PROBE = """
import logging, sys
try:
    import ray
    ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
    print("OK", int(ray.cluster_resources().get("CPU", 0)), flush=True)
except BaseException as exc:
    while exc.__cause__ is not None:  # "Failed to connect" wraps the reason
        exc = exc.__cause__
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()] or [type(exc).__name__]
    print("ERROR", lines[-1].split(". ")[0][:200], flush=True)
    sys.exit(1)
"""


def probe_cluster(address: str, timeout: float) -> None:
    """Raise ExecutorError unless a Ray cluster answers at `address` within `timeout` s."""
    hostport = _host_port(address)
    if hostport is not None:  # a closed port or a dead host answers here in at most 5 s
        try:
            socket.create_connection(hostport, timeout=min(5.0, timeout)).close()
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            raise _unreachable(address, why.lower()) from None
    # Ray retries a refused connection about once a second, 20 times by default: fewer here, so
    # that a definite refusal (a wrong auth token, say) is reported rather than timed out.
    env = {**os.environ, "RAY_gcs_server_port_wait_time_s": str(max(1, int(timeout / 4)))}
    proc = subprocess.Popen([sys.executable, "-c", _PROBE, address], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
        raise _unreachable(address, f"no answer within {timeout:g} s") from None
    if proc.returncode != 0 or not out.startswith("OK"):
        reason = out.strip().removeprefix("ERROR").strip() or f"exit status {proc.returncode}"
        raise _unreachable(address, reason.rstrip("."))


def _unreachable(address: str, why: str) -> ExecutorError:
    return ExecutorError(f"cannot reach a Ray cluster at {address} ({why}); start one there "
                         f"with `ray start --head`, or check --ray-address (the head's "
                         f"host:port, 6379 by default) and the head's auth token, which this "
                         f"machine reads from ~/.ray/auth_token or RAY_AUTH_TOKEN.")


def _root_cause(exc: BaseException) -> str:
    """The last line of the innermost cause, first sentence: Ray wraps the reason twice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__).split(". ")[0][:200].rstrip(".")


def _token_auth_if_available() -> None:
    """Send the cluster's auth token if there is one here, as `ray.init()` does on its own only
    for a cluster it finds by itself: given an address, Ray (2.60) connects without the token
    and a cluster started by `ray start --head` (token auth on by default) refuses it."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a `host:port` or `ray://host:port` address; None for `auto` and such."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
