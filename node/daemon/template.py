"""The fork server's template: one process that imports what a daemon needs, then forks nodes.

    python -m node.daemon.template --fd N [--lifeline FD] [--title TEXT] [--private]
                                   [--entry MODULE:FUNC]

`import torch` alone costs a daemon ~2.4 s of CPU; N daemons on a small machine pay it N times
and keep N private copies of the interpreter's objects. The template pays it once, then forks
one child per node: every child shares the template's pages copy-on-write and starts at
`node.daemon.main.main(argv)` with everything already imported.

Before any fork the template has run no torch op and started no thread, event loop or ZeroMQ
context: a fork copies only the calling thread, so a pool created before it (torch's OpenMP
workers, OpenBLAS's) would be dead in the children. It checks its own thread count before
each fork and refuses to fork when it is not one. Nothing secret exists before the fork either:
each node's noise generator is seeded from `secrets` inside the child (`build_daemon_node`), and
numpy's and torch's global generators are reseeded from OS entropy there too (`_child`).

The launcher talks to it over the socket `--fd` (AF_UNIX, SOCK_SEQPACKET): one JSON line per
packet, never pickle. Launcher → template: `{"op": "spawn", "tag": T, "argv": [...]}` with the
node's stdout, stderr and status pipe attached (SCM_RIGHTS), or `{"op": "close"}`. Template →
launcher: `{"ready": PID, "threads": N}` once imported; `{"tag": T, "pid": P}` or `{"tag": T,
"error": "..."}` per spawn; `{"pid": P, "returncode": R}` when it reaps a child (R as Popen's:
-9 for SIGKILL). On `close` or EOF (the launcher died) it SIGTERMs every child's process group,
gives them a grace period, SIGKILLs what is left, reaps all and exits: no orphans, no zombies.
On SIGTERM it exits alone, leaving its nodes to the launcher, as a SIGKILL would.

A node does not depend on the template once forked: it has no parent-death signal, so a killed
template (the OOM killer's likely pick: it holds the largest RSS) costs the launcher only the
ability to fork more nodes. The node's lifetime is tied to the launcher instead, through the
read end of the launcher's lifeline pipe (`--lifeline`, node.daemon.lifeline), and its exit
status reaches the launcher on the status pipe as well (the node writes it just before it
exits), so the launcher still learns it when the template is no longer there to report it.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import ctypes
import gc
import importlib
import json
import os
import secrets
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import setproctitle

# What a daemon imports before READY (see node.daemon.main); `dp_accounting` only for a
# private run, where the noise calibration needs it (~1.8 s of imports on its own).
PRELOAD = ["numpy", "torch", "zmq", "zmq.asyncio", "msgpack", "uvloop", "node.daemon.main",
           "node.daemon.loop", "node.daemon.state", "node.core.runner", "node.core.assemble",
           "node.core.privacy_plan", "node.outputs.files", "privacy.ledger", "topologies"]
PRELOAD_DP = ["dp_accounting", "dp_accounting.pld", "dp_accounting.rdp",
              "dp_accounting.pld.privacy_loss_distribution"]
DAEMON = "node.daemon.main:main"
GRACE = 10.0  # seconds children get to say BYE and flush when the launcher goes away
PR_SET_NAME = 15
MAX_PACKET = 1 << 16


def threads() -> int:
    """This process's thread count, from the kernel (not only the threads Python knows)."""
    return len(os.listdir("/proc/self/task"))


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    # The launcher may be gone; EOF on the next read ends the loop.
    with contextlib.suppress(OSError):
        sock.send((json.dumps(message) + "\n").encode())


def _entry(spec: str) -> Callable[[list[str]], int]:
    module, _, name = spec.partition(":")
    fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), name)
    return fn


def _as_node() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    # `ps`/`top` show the template's command line until the daemon sets its own title
    # (node.daemon.main); the short name tells a node from the template meanwhile.
    libc.prctl(PR_SET_NAME, b"dpnorm-node", 0, 0, 0)


def _child(entry: Callable[[list[str]], int], argv: list[str], fds: list[int],
           keep_closed: list[int], lifeline: int | None) -> None:
    """In the forked child: become the node (stdio, process group, fresh RNGs, the launcher's
    lifeline), run, say its exit status on the status pipe, exit."""
    code, status = 1, fds[2]
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.setpgid(0, 0)  # the parent does it too, so a signal to the group never misses
        _as_node()
        for fd in keep_closed:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in {devnull, fds[0], fds[1]}:
            os.close(fd)
        os.set_inheritable(status, False)
        if lifeline is not None:
            from node.daemon.lifeline import watch

            watch(lifeline)
        # numpy's global generator was seeded once, in the template; a spawned process would
        # have drawn its own from OS entropy (Python's `random` reseeds itself at fork).
        # torch's global generator is the template's too: no DP draw uses it, but were one
        # ever to, forked nodes must not share its stream.
        import numpy as np
        import torch

        np.random.seed()
        torch.manual_seed(secrets.randbits(64))
        gc.enable()
        sys.argv = ["node", *argv]
        code = entry(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        # What os._exit will make of it; a node killed by a signal never gets here, and the
        # launcher reads the EOF without a number as "no status".
        with contextlib.suppress(OSError):
            os.write(status, b"%d\n" % (code & 0xFF))
        from node.daemon.main import exit_now

        exit_now(code)


class Template:
    def __init__(self, sock: socket.socket, entry: Callable[[list[str]], int],
                 lifeline: int | None = None) -> None:
        self.sock, self.entry, self.lifeline = sock, entry, lifeline
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        # A SIGTERM (an operator's `kill`) ends the template alone: its nodes belong to the
        # launcher (their lifeline), which stops them itself; only `close` and the launcher's
        # EOF stop them here.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        self.stopping = False
        self.leave_children = False

    def serve(self) -> None:
        while not self.stopping:
            ready, _, _ = select.select([self.sock.fileno(), self.wake_r], [], [], 1.0)
            if self.wake_r in ready:
                self._drain_wakeups()
            self._reap()
            if self.sock.fileno() in ready:
                self._handle()
        if not self.leave_children:
            self._shutdown()

    def _drain_wakeups(self) -> None:
        try:
            for signum in os.read(self.wake_r, 4096):
                if signum == signal.SIGTERM:
                    self.stopping = self.leave_children = True
        except BlockingIOError:
            pass

    def _handle(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(32))
        except OSError:
            data, ancillary = b"", []
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not data:  # EOF: the launcher exited or was killed
            self.stopping = True
            return
        try:
            message = json.loads(data)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
            if message.get("op") == "close":
                self.stopping = True
            elif message.get("op") == "spawn":
                self._spawn(message, list(fds))
        except ValueError as exc:
            _send(self.sock, {"error": f"unreadable request: {exc}"})
        finally:
            for fd in fds:
                os.close(fd)

    def _spawn(self, message: dict[str, Any], fds: list[int]) -> None:
        tag = message.get("tag")
        argv = message.get("argv")
        if len(fds) != 3 or not isinstance(argv, list) or not all(isinstance(a, str)
                                                                  for a in argv):
            _send(self.sock, {"tag": tag, "error": "a spawn needs argv and three descriptors"})
            return
        count = threads()
        if count != 1:
            _send(self.sock, {"tag": tag, "error": f"the template has {count} threads; "
                                                   "forking now is unsafe"})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(self.entry, argv, fds, [self.sock.fileno(), self.wake_r, self.wake_w],
                   self.lifeline)
        os.setpgid(pid, pid)
        self.children.add(pid)
        _send(self.sock, {"tag": tag, "pid": pid})

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            _send(self.sock, {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def _signal_all(self, sig: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def _shutdown(self) -> None:
        self._signal_all(signal.SIGTERM)
        self._signal_all(signal.SIGCONT)  # a frozen node cannot handle its SIGTERM
        deadline = time.monotonic() + GRACE
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        self._signal_all(signal.SIGKILL)
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.discard(pid)
            _send(self.sock, {"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.daemon.template",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="the launcher's socket")
    parser.add_argument("--lifeline", type=int, default=None,
                        help="the read end of the launcher's lifeline pipe, for the nodes")
    parser.add_argument("--title", default="", help="shown after dpnorm-template in ps")
    parser.add_argument("--private", action="store_true", help="also import dp-accounting")
    parser.add_argument("--entry", default=DAEMON, help="what each child runs (tests)")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    # Named for `ps`, as every node is: an operator can tell it from the nodes it forked.
    setproctitle.setproctitle(" ".join(filter(None, ["dpnorm-template", args.title])))
    # OpenBLAS (numpy's) starts its pool when numpy is imported; in the template that pool
    # would be one more thread to lose at fork. The daemons compute with torch, not numpy.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Collections would write to every object's header and unshare the pages the children
    # inherit; the frozen generation is never scanned, in the template or in the children.
    gc.disable()
    for name in PRELOAD + (PRELOAD_DP if args.private else []):
        importlib.import_module(name)
    entry = _entry(args.entry)
    gc.collect()
    gc.freeze()
    _send(sock, {"ready": os.getpid(), "threads": threads()})
    Template(sock, entry, args.lifeline).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
