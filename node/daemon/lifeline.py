"""A node's tie to the launcher that started it: the node stops when the launcher is gone.

The launcher holds the only write end of a pipe and never writes to it; each node it starts
gets a read end. However the launcher ends (exit, crash, SIGKILL), the kernel closes that write
end and every read end reads EOF: the node then stops itself as the launcher's SIGTERM would
stop it (end the step, say BYE, flush) and SIGKILLs itself if that takes longer than `GRACE`.

Why a pipe and not a parent-death signal (PR_SET_PDEATHSIG): a forked node's parent is the fork
server's template, not the launcher, and that signal fires when the *parent* dies, so it would
make the template a single point of failure of the whole federation. Making the launcher a
child subreaper would give it the orphaned nodes back, but also every other orphan below it (a
test runner's included). A pipe's EOF names the launcher whoever the node's parent is at the
time, is delivered by the kernel even for SIGKILL, and costs the node one thread blocked in
read().
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

__all__ = ["ENV", "GRACE", "THREAD_NAME", "from_env", "watch"]

# How a spawned (not forked) node learns its read end: the descriptor's number.
ENV = "DPNORM_LIFELINE_FD"
GRACE = 10.0  # seconds a node gets to say BYE and flush once its launcher is gone
THREAD_NAME = "dpnorm-lifeline"  # its name in /proc/PID/task/*/comm (ps -L), ≤ 15 bytes


def watch(fd: int, grace: float = GRACE) -> threading.Thread:
    """Start the thread that waits for EOF on `fd` and then stops this process."""
    os.set_inheritable(fd, False)  # anything the node starts must not hold the node's tie

    def run() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 64):  # nobody writes; only EOF ends this
                pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
    thread.start()
    # Named before this returns (start() waits until it runs), so `ps -L` and a thread count
    # made by the node right after can tell it from the node's own threads.
    with contextlib.suppress(OSError):
        Path(f"/proc/self/task/{thread.native_id}/comm").write_text(THREAD_NAME)
    return thread


def from_env() -> threading.Thread | None:
    """`watch` the descriptor named in $DPNORM_LIFELINE_FD, if a launcher set one."""
    value = os.environ.pop(ENV, "")
    if not value.isdigit():
        return None
    try:
        os.fstat(int(value))
    except OSError:
        return None  # a stale variable without its descriptor: nothing ties this node
    return watch(int(value))
