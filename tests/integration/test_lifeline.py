"""A node's lifeline (node.daemon.lifeline): a process holding the read end stops when the last
write end closes, as when its launcher dies, whoever its parent is; one that ignores SIGTERM is
killed after the grace period; and the tie is never inherited by what the node starts.

Time bounds: three small Python subprocesses (no torch), each wait at most 20 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.daemon.lifeline import ENV
from node.tools.forkserver import LIFELINE_ENV

ROOT = Path(__file__).resolve().parents[2]
NODE = """
import os, signal, subprocess, sys, time
from node.daemon.lifeline import from_env, watch
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch(int(os.environ["DPNORM_LIFELINE_FD"]), grace=0.5)
else:
    assert from_env() is not None and "DPNORM_LIFELINE_FD" not in os.environ
    fd = int(sys.argv[2])
    child = subprocess.run([sys.executable, "-c", f"import os; os.fstat({fd})"],
                           close_fds=False, stderr=subprocess.DEVNULL)
    print("inherited" if child.returncode == 0 else "private", flush=True)
print("ready", flush=True)
time.sleep(60)
"""


def node(mode: str) -> tuple[subprocess.Popen[str], int]:
    read, write = os.pipe()
    env = {**os.environ, ENV: str(read),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", NODE, mode, str(read)], env=env,
                            pass_fds=(read,), stdout=subprocess.PIPE, text=True)
    os.close(read)
    return proc, write


def test_the_launcher_and_the_daemon_name_the_same_variable() -> None:
    assert LIFELINE_ENV == ENV  # tools may not import the daemon: two spellings, one name


def test_a_node_stops_when_its_launcher_is_gone_and_keeps_the_tie_to_itself() -> None:
    proc, write = node("plain")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "private"
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert proc.poll() is None  # alive while the write end is held
        os.close(write)  # what the kernel does when the launcher dies
        assert proc.wait(20) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(10)


def test_a_node_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    proc, write = node("ignore-term")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        began = time.monotonic()
        os.close(write)
        assert proc.wait(20) == -signal.SIGKILL
        assert time.monotonic() - began >= 0.5
    finally:
        proc.kill()
        proc.wait(10)
