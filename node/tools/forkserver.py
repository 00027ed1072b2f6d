"""The launcher's side of the fork server: start the template once, fork nodes from it.

The template (`python -m node.daemon.template`, which describes the protocol) imports torch
and the daemon once; every node is then a fork of it, sharing its pages. Here:
`ForkServer` starts it and sends it spawn requests over a SOCK_SEQPACKET socket (JSON lines,
the node's stdout and stderr passed as descriptors), and `ForkedProcess` is the handle per
node, with the part of `subprocess.Popen` the launcher, the live view and chaos use (pid,
poll, wait, send_signal, terminate, kill, returncode). Exit statuses come from the template,
which reaps its children and reports each one's status.

No single point of failure: a forked node does not die with the template. The launcher keeps
the only write end of a lifeline pipe whose read end every node watches (node.daemon.lifeline),
so nodes die with the launcher, not with the template; and each node writes its exit status on
a pipe of its own just before exiting, so that the status still arrives when the template was
killed. A lost template costs only the ability to fork more nodes: `ForkServer.lost` says why,
and the launcher spawns a restarted node as its own process instead.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["LIFELINE_ENV", "ForkServer", "ForkServerError", "ForkedProcess", "Lifeline",
           "NodeHandle"]

log = logging.getLogger(__name__)
MAX_PACKET = 1 << 16
# Status of a node that exited without saying its status (killed by a signal) after its
# template died: the signal's number went with the template.
LOST = 1


# node.daemon.lifeline.ENV (tools do not import the daemon): how a spawned node finds its end.
LIFELINE_ENV = "DPNORM_LIFELINE_FD"


class Lifeline:
    """The launcher's end of its nodes' lifeline (node.daemon.lifeline): a pipe whose write
    end only this process holds (os.pipe's descriptors are never inherited by what it starts)
    and never writes to; each node watches a read end for the EOF of this process's death."""

    def __init__(self) -> None:
        self._fds: tuple[int, int] | None = None

    def read_end(self) -> int:
        """The descriptor to pass to a node (created on first use)."""
        if self._fds is None:
            self._fds = os.pipe()
        return self._fds[0]

    def close(self) -> None:
        """Cut it: every node still holding a read end stops."""
        fds, self._fds = self._fds, None
        for fd in fds or ():
            os.close(fd)


class ForkServerError(RuntimeError):
    """The template could not start a node; the launcher can still spawn it plainly."""


class NodeHandle(Protocol):
    """What the launcher keeps per node: a `subprocess.Popen` or a `ForkedProcess`."""

    pid: int
    returncode: int | Any

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class ForkedProcess:
    """A node forked by the template. Its status arrives when the template reaps it or, once
    the template is gone, from what the node wrote on its status pipe before exiting."""

    def __init__(self, pid: int, args: Sequence[str], status: int | None = None) -> None:
        self.pid, self.args = pid, list(args)
        self.returncode: int | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._said: int | None = None  # what the node wrote on its status pipe
        self._closed = threading.Event()  # that pipe's EOF: the node has exited
        self._orphan = False  # the template is gone and will not report this node
        if status is not None:
            threading.Thread(target=self._read_status, args=(status,), daemon=True).start()

    def _exited(self, code: int) -> None:
        with self._lock:
            if self.returncode is None:
                self.returncode = code
                self._done.set()

    def _read_status(self, fd: int) -> None:
        # EOF when the node's copy closes at its exit: the template and the launcher closed
        # theirs when the request went through.
        with open(fd, "rb") as pipe:
            text = pipe.read().strip()
        self._said = int(text) if text.isdigit() else None
        self._closed.set()
        self._settle()

    def _orphaned(self) -> None:
        self._orphan = True
        self._settle()

    def _settle(self) -> None:
        # While the template lives, its report (which knows a killing signal) is the one used.
        if self._orphan and self._closed.is_set():
            self._exited(LOST if self._said is None else self._said)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # Not once reaped: the pid may belong to someone else by then.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One template process and the nodes forked from it."""

    def __init__(self, python: str, *, cwd: Path, env: Mapping[str, str], log_file: Path,
                 private: bool = False, entry: str | None = None, title: str = "") -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.lifeline = Lifeline()  # the forked nodes' tie to this process, not the template
        lifeline = self.lifeline.read_end()
        args = [python, "-m", "node.daemon.template", "--fd", str(theirs.fileno()),
                "--lifeline", str(lifeline)]
        args += ["--title", title] if title else []
        args += ["--private"] if private else []
        args += ["--entry", entry] if entry else []
        try:
            with open(log_file, "a", encoding="utf-8") as err:
                # Its own session: the terminal's Ctrl-C reaches only the launcher, which
                # stops the nodes in order and then closes the template.
                self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=err,
                                             cwd=cwd, env=dict(env),
                                             pass_fds=(theirs.fileno(), lifeline),
                                             start_new_session=True)
        finally:
            theirs.close()
        self.sock = ours
        self.template_threads: int | None = None
        self._hello = threading.Event()
        self._lost = threading.Event()
        self._send_lock = threading.Lock()
        self._tags = itertools.count()
        self._closing = False
        self._pending: dict[int, queue.Queue[ForkedProcess | str]] = {}
        self._status: dict[int, int] = {}  # per pending spawn, the read end of its status pipe
        self._handles: dict[int, ForkedProcess] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return not self._lost.is_set()

    @property
    def lost(self) -> str | None:
        """Why the template is gone (one clause), or None while it runs."""
        return self._why_not() if self._lost.is_set() else None

    def ready(self, timeout: float) -> bool:
        """Whether the template finished its imports, single-threaded, within `timeout`."""
        self._hello.wait(timeout)
        return self._hello.is_set() and self.template_threads == 1 and self.alive

    def spawn(self, argv: Sequence[str], stdout: int, stderr: int,
              timeout: float = 60.0) -> ForkedProcess:
        """Fork a node running the daemon's main with `argv`, writing to the two descriptors."""
        if not self.ready(timeout):
            raise ForkServerError(self._why_not())
        tag = next(self._tags)
        reply: queue.Queue[ForkedProcess | str] = queue.Queue()
        self._pending[tag] = reply
        line = (json.dumps({"op": "spawn", "tag": tag, "argv": list(argv)}) + "\n").encode()
        status, said = os.pipe()
        self._status[tag] = status
        fds = array.array("i", [stdout, stderr, said])
        try:
            with self._send_lock:
                self.sock.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            answer = reply.get(timeout=timeout)
        except (OSError, queue.Empty) as exc:
            raise ForkServerError(f"the fork server did not answer ({exc or 'timeout'})") \
                from exc
        finally:
            os.close(said)  # the node holds the only write end from here on
            self._pending.pop(tag, None)
            unused = self._status.pop(tag, None)  # none forked: nobody reads it
            if unused is not None:
                os.close(unused)
        if isinstance(answer, str):
            raise ForkServerError(answer)
        return answer

    def _why_not(self) -> str:
        if self.template_threads not in (None, 1):
            return f"the template has {self.template_threads} threads before forking"
        if not self.alive:
            code = self.proc.poll()
            if code is None:  # its socket closed a moment before it exited
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self.proc.wait(1.0)
            return f"the fork server (pid {self.pid}) exited with status {code}"
        return "the template did not finish importing in time"

    def _read(self) -> None:
        # The only reader: it creates each handle from the spawn reply, so the exit report
        # that follows it on the socket always finds the handle.
        while True:
            try:
                data = self.sock.recv(MAX_PACKET)
                message = json.loads(data) if data else None
            except (OSError, ValueError):
                message = None
            if not isinstance(message, dict):
                break
            if "ready" in message:
                self.template_threads = int(message.get("threads", 0))
                self._hello.set()
            elif "tag" in message:
                self._answer(message)
            elif "returncode" in message:
                done = self._handles.pop(int(message["pid"]), None)
                if done is not None:
                    done._exited(int(message["returncode"]))
        self._lose()

    def _answer(self, message: dict[str, Any]) -> None:
        pending = self._pending.get(message["tag"])
        answer: ForkedProcess | str = str(message.get("error"))
        if "pid" in message:
            answer = ForkedProcess(int(message["pid"]), ["node", "forked"],
                                   self._status.pop(message["tag"], None))
            self._handles[answer.pid] = answer
            if pending is None:  # the launcher gave up waiting: stop it again
                answer.kill()
        if pending is not None:
            pending.put(answer)

    def _lose(self) -> None:
        self._lost.set()
        self._hello.set()
        for pending in list(self._pending.values()):
            pending.put("the fork server exited")
        orphans = list(self._handles.values())
        self._handles.clear()
        if orphans and not self._closing:
            log.warning("%s; its %d node(s) go on, and a node started from now on runs as its "
                        "own process", self._why_not(), len(orphans))
        for handle in orphans:  # their statuses now come from their status pipes
            handle._orphaned()

    def close(self, timeout: float = 20.0) -> None:
        """Ask the template to stop (its remaining children first) and wait for it. Closing
        the lifeline also stops any node that outlived a killed template."""
        self._closing = True
        if self.alive:
            with self._send_lock, contextlib.suppress(OSError):
                self.sock.send(b'{"op": "close"}\n')
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5.0)
        self._reader.join(5.0)
        self.sock.close()
        self.lifeline.close()
