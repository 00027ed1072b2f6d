"""The fork server (node.daemon.template + node.tools.forkserver): nodes forked from one template
that imported torch and the daemon once.

What must hold: before any fork the template has exactly one thread and has run no torch op
(under OMP_NUM_THREADS=2 a single op would have started an OpenMP worker, and the first child
shows that it does); every child builds its private noise generator from OS entropy after the
fork (two children with the same config draw different noise; with a fixed noise_seed the
same, so the comparison can fail), and reseeds torch's global generator there too; exit
statuses, -9 for SIGKILL included, reach the launcher; a killed launcher takes the template
and its nodes with it, also once the template is gone (the nodes' lifeline); a launch gives
the same metrics forked as spawned, for fixed seeds; and every node is named in `ps` (its
/proc/PID/cmdline), forked or spawned. A killed template: test_no_spof.py.

Time bounds: one template (~3 s of imports) shared by the probes, two launcher subprocesses,
and two 4-node synthetic federations of 4 rounds; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import RunConfig
from node.daemon.lifeline import THREAD_NAME
from node.outputs.files import read_metrics
from node.tools.forkserver import ForkedProcess, ForkServer
from node.tools.local import LocalLaunch
from node.tools.plan import DaemonOptions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROBE = "tests.integration.test_forkserver:probe"
DP_RUN = RunConfig(topology="ring", nodes=4, rounds=4, dataset="synthetic", model="logreg",
                   lr=0.5, examples_per_node=200, test_examples=200, epsilon=8.0, threads=1)


def tasks(pid: int) -> int:
    """Threads of `pid`, less a node's lifeline watcher (node.daemon.lifeline), which the
    child starts itself and which runs no torch op."""
    names = [Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
             for t in os.listdir(f"/proc/{pid}/task")]
    return sum(name != THREAD_NAME for name in names)


def probe(argv: list[str]) -> int:
    """What a forked child runs in these tests (the template's --entry): a few modes."""
    mode, rest = argv[0], argv[1:]
    if mode == "exit":
        return int(rest[0])
    if mode == "sleep":  # sleep SECONDS [EXIT_STATUS]
        time.sleep(float(rest[0]))
        return int(rest[1]) if len(rest) > 1 else 0
    before = tasks(os.getpid())  # as the fork left it
    import torch

    from node.daemon.main import build_daemon_node, read_config

    setup = build_daemon_node(read_config(rest))  # the daemon's own construction of a node
    torch.set_num_threads(2)
    torch.ones(512, 512).sum(0)  # the first parallel op starts the OpenMP pool
    # The generator every private draw of the node comes from (dual and gradient noise).
    noise = torch.randn(8, generator=setup.trainer.noise_generator).tolist()
    print(json.dumps({"threads_before_op": before, "threads_after_op": tasks(os.getpid()),
                      "noise": noise, "global": torch.randn(8).tolist()}), flush=True)
    return 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("OPENBLAS_NUM_THREADS", None)
    log = tmp_path_factory.mktemp("template") / "forkserver.log"
    fs = ForkServer(sys.executable, cwd=ROOT, env=env, log_file=log, private=True, entry=PROBE)
    try:
        assert fs.ready(120), log.read_text()
        yield fs
    finally:
        fs.close()
    assert not fs.alive and fs.proc.returncode == 0


def run_probe(fs: ForkServer, argv: list[str], tmp_path: Path) -> tuple[int, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    read, write = os.pipe()
    with open(tmp_path / "stderr.log", "a") as err:
        try:
            child = fs.spawn(argv, write, err.fileno())
        finally:
            os.close(write)
    with open(read, encoding="utf-8") as out:
        text = out.read()  # EOF when the child exits
    return child.wait(60), text


def node_config(tmp_path: Path, **changes: object) -> str:
    launch = LocalLaunch(DP_RUN.replace(**changes), tmp_path / "run", fork_server=False)
    return str(launch.nodes[0].config)


def test_before_any_fork_the_template_has_one_thread_and_torch_loaded(
        server: ForkServer) -> None:
    assert server.template_threads == 1
    assert tasks(server.pid) == 1  # seen from outside too
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    assert "libtorch_cpu" in maps  # it really imported torch: the check is not vacuous


def test_each_child_seeds_its_noise_from_os_entropy_after_the_fork(
        server: ForkServer, tmp_path: Path) -> None:
    config = node_config(tmp_path)
    draws = []
    for k in range(2):
        code, out = run_probe(server, ["node", "--config", config], tmp_path / str(k))
        assert code == 0, (tmp_path / str(k) / "stderr.log").read_text()
        report = json.loads(out.strip().splitlines()[-1])
        # The child started single-threaded, and a torch op then did start a pool: had the
        # template run one before forking, its own thread count would not have been 1.
        assert report["threads_before_op"] == 1 and report["threads_after_op"] > 1
        draws.append((report["noise"], report["global"]))
    assert draws[0][0] != draws[1][0]
    # torch's global generator too: no DP draw uses it, but none could share its stream.
    assert draws[0][1] != draws[1][1]
    assert tasks(server.pid) == 1  # and forking did not start a thread in the template


def test_a_fixed_noise_seed_gives_both_children_the_same_noise(
        server: ForkServer, tmp_path: Path) -> None:
    config = node_config(tmp_path, noise_seed=11)
    draws = [json.loads(run_probe(server, ["node", "--config", config],
                                  tmp_path / str(k))[1].strip().splitlines()[-1])["noise"]
             for k in range(2)]
    assert draws[0] == draws[1]  # the comparison above can fail


def test_the_template_imports_nothing_a_daemon_without_dp_does_not(tmp_path: Path) -> None:
    from tests.integration.test_daemon_imports import NEVER, NOT_WITHOUT_DP, loaded

    script = ("import json, sys, importlib\n"
              "from node.daemon.template import PRELOAD\n"
              "for name in PRELOAD: importlib.import_module(name)\n"
              "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout)
    assert "torch" in modules and "node.daemon.loop" in modules
    assert loaded(NEVER + NOT_WITHOUT_DP, modules) == []


def test_exit_statuses_reach_the_launcher(server: ForkServer, tmp_path: Path) -> None:
    assert run_probe(server, ["exit", "3"], tmp_path)[0] == 3
    read, write = os.pipe()
    try:
        child = server.spawn(["sleep", "60"], write, write)
    finally:
        os.close(write)
        os.close(read)
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.2)
    assert os.getpgid(child.pid) == child.pid  # a process group of its own, as spawned nodes
    assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "dpnorm-node"
    os.killpg(child.pid, signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL


LAUNCHER = """
import os, signal, sys, time
from pathlib import Path
from node.tools.forkserver import ForkServer
env = {**os.environ, "OMP_NUM_THREADS": "1"}
fs = ForkServer(sys.executable, cwd=Path.cwd(), env=env, log_file=Path(sys.argv[1]),
                entry="tests.integration.test_forkserver:probe")
r, w = os.pipe()
child = fs.spawn(["sleep", "120"], w, w, timeout=120)
if sys.argv[2] == "kill-template":
    os.kill(fs.pid, signal.SIGKILL)
    while fs.alive:
        time.sleep(0.05)
print(fs.pid, child.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("template", ["alive", "kill-template"])
def test_a_killed_launcher_leaves_no_template_and_no_node(tmp_path: Path, template: str) -> None:
    # With the template killed first, only the node's lifeline to the launcher stops it.
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path / "fs.log"),
                                 template], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        template_pid, node = map(int, launcher.stdout.readline().split())
        assert Path(f"/proc/{node}").exists()
        launcher.kill()
        launcher.wait(10)
        deadline = time.monotonic() + 20
        while (Path(f"/proc/{template_pid}").exists() or Path(f"/proc/{node}").exists()) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        # Gone, not zombies: the template (or init, once it is gone) reaped the node, and
        # init the template.
        assert not Path(f"/proc/{node}").exists()
        assert not Path(f"/proc/{template_pid}").exists()
    finally:
        launcher.kill()
        launcher.wait(10)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def assert_named(launch: LocalLaunch) -> None:
    """`ps` tells every node (and the template) apart, and says how to start it again."""
    for n in launch.nodes:
        assert n.proc is not None
        assert cmdline(n.proc.pid) == f"dpnorm-node {n.id} --config {n.config}"
    if launch.template_pid is not None:
        assert cmdline(launch.template_pid) == f"dpnorm-template {launch.out}"


def launch_metrics(out: Path, fork_server: bool) -> list[list[dict[str, object]]]:
    cfg = DP_RUN.replace(noise_seed=5)  # fixed noise: only allowed on 127.0.0.1
    launch = LocalLaunch(cfg, out, DaemonOptions(node={"round_timeout": 20.0}),
                         fork_server=fork_server)
    try:
        launch.start(timeout=120)
        kinds = {type(n.proc) for n in launch.nodes}
        assert kinds == ({ForkedProcess} if fork_server else {subprocess.Popen})
        assert_named(launch)
        assert launch.wait(timeout=120)
    finally:
        launch.stop_all(grace=5.0)
    assert launch.succeeded()
    assert launch.template_pid is None  # closed once every node had exited
    keys = ("round", "loss", "accuracy", "epsilon", "dual_norm")
    return [[{k: r[k] for k in keys} for r in read_metrics(out / str(i) / "metrics.jsonl")]
            for i in range(cfg.nodes)]


def test_a_forked_launch_gives_the_same_metrics_as_a_spawned_one(tmp_path: Path) -> None:
    forked = launch_metrics(tmp_path / "forked", True)
    spawned = launch_metrics(tmp_path / "spawned", False)
    assert [len(m) for m in forked] == [DP_RUN.rounds] * DP_RUN.nodes
    assert forked == spawned

