"""The Ray executor of the experiment grid: same files as the process pool, bad input refused.

The Ray tests need the optional extra (`pip install -e '.[ray]'`, which `make test` installs);
without it they are skipped, except the one that checks the message for a missing Ray.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.experiments.grid import build_grid, is_done
from node.experiments.grid.executors import DONE, deliver, run_in_scratch
from node.experiments.studies.paper import preset

ROOT = Path(__file__).resolve().parents[2]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is an optional extra: pip install -e '.[ray]'")

# Four runs of the quick preset (a decentralised DP run of each family, a server and a solo
# reference, all at ε = 1 so the seeded noise matters), shrunk to a few rounds; the same for
# both executors.
SUBSET = ["--preset", "quick", "--regimes", "scarce", "--epsilons", "1",
          "--methods", "dp-ecl", "dp-dpsgd", "fedavg", "solo",
          "--set", "rounds=3", "--set", "test_examples=100", "--set", "eval_every=1",
          "--jobs", "2"]
RUNS = ["scarce/dp-ecl/eps-1/seed-0", "scarce/dp-dpsgd/eps-1/seed-0",
        "scarce/fedavg/eps-1/seed-0", "scarce/solo/eps-1/seed-0"]
TIMINGS = {"time", "round_seconds", "compute_seconds", "wait_seconds", "wall_seconds"}


def _experiment(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/experiment.py", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _untimed(value: object) -> object:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMINGS}
    return value


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pool_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset run by the default executor, the process pool."""
    out = tmp_path_factory.mktemp("pool")
    result = _experiment(*SUBSET, "--out", str(out), "--executor", "local")
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow  # two grids of four runs, one on a local Ray: ~30 s on an idle 2-core machine
@needs_ray
def test_ray_executor_writes_what_the_process_pool_writes(pool_grid: Path,
                                                          tmp_path: Path) -> None:
    result = _experiment(*SUBSET, "--out", str(tmp_path), "--executor", "ray")
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and progress[-1].startswith("[4/4]"), result.stderr
    assert all("eta" in line for line in progress)
    assert "on a local Ray (2 CPU(s)" in result.stderr
    assert json.loads(result.stdout)["ran"] == 4

    assert _files(tmp_path) == _files(pool_grid)
    assert (tmp_path / "grid.json").read_bytes() == (pool_grid / "grid.json").read_bytes()
    for run in RUNS:
        ray_dir, pool_dir = tmp_path / run, pool_grid / run
        for name in ("run.json", "summary.json", DONE):
            ours, theirs = (json.loads((d / name).read_text()) for d in (ray_dir, pool_dir))
            assert _untimed(ours) == _untimed(theirs), (run, name)
        summary = json.loads((ray_dir / "summary.json").read_text())
        assert summary["mean_accuracy"] > 0 and 0 < summary["max_epsilon"] <= 1 + 1e-9
        for metrics in sorted(ray_dir.glob("*/metrics.jsonl")):
            twin = pool_dir / metrics.relative_to(ray_dir)
            ours_m = [_untimed(json.loads(line)) for line in metrics.read_text().splitlines()]
            theirs_m = [_untimed(json.loads(line)) for line in twin.read_text().splitlines()]
            assert ours_m == theirs_m, metrics
    specs = [s for s in build_grid(preset("quick"), overrides={
        "rounds": 3, "test_examples": 100, "eval_every": 1}) if s.path in RUNS]
    assert len(specs) == 4 and all(is_done(tmp_path, s) for s in specs)


def test_ray_executor_without_ray_names_the_extra(tmp_path: Path) -> None:
    hide_ray = ("import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; "
                "runpy.run_path('scripts/experiment.py', run_name='__main__')")
    result = subprocess.run(
        [sys.executable, "-c", hide_ray, "scripts/experiment.py", *SUBSET, "--out",
         str(tmp_path / "out"), "--executor", "ray"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[ray]'" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def _done_stamps(root: Path) -> dict[str, int]:
    return {p.parent.relative_to(root).as_posix(): p.stat().st_mtime_ns
            for p in root.rglob(DONE)}


@needs_ray
def test_unreachable_ray_address_fails_fast_and_keeps_finished_runs(pool_grid: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "grid"
    shutil.copytree(pool_grid, out)
    (out / RUNS[0] / DONE).unlink()  # one run left to do, three finished
    before = _done_stamps(out)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = _experiment(*SUBSET, "--out", str(out), "--ray-address", f"127.0.0.1:{port}",
                         timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach a Ray cluster at 127.0.0.1:{port}" in lines[0]
    assert _done_stamps(out) == before and len(before) == 3


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says anything (not a Ray head)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


@needs_ray
def test_a_ray_address_that_never_answers_is_bounded(silent_port: int, tmp_path: Path) -> None:
    started = time.monotonic()
    result = _experiment(*SUBSET, "--out", str(tmp_path), "--ray-address",
                         f"127.0.0.1:{silent_port}", "--ray-timeout", "3", timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result.stderr
    assert "no answer within 3 s" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_shipped_files_land_with_done_last(tmp_path: Path) -> None:
    """What a Ray task sends back (run in a scratch directory, its files returned) is written
    so that DONE appears only once everything else is there."""
    spec = build_grid(preset("quick"))[0]

    def worker(task: tuple[object, str]) -> tuple[str, None, str]:
        run = Path(task[1])
        (run / "0").mkdir(parents=True)
        (run / "0" / "metrics.jsonl").write_text("{}\n")
        (run / DONE).write_text("{}")
        return "p", None, ""

    result, files = run_in_scratch(worker, spec)  # type: ignore[arg-type]
    assert result == ("p", None, "") and set(files) == {"0/metrics.jsonl", DONE}
    target = tmp_path / "run"
    (target / "stale").mkdir(parents=True)
    order: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        order.append(Path(dst).name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("node.experiments.grid.executors.os.replace", spy)
        deliver(target, files)
    assert order == ["metrics.jsonl", DONE]
    assert _files(target) == {"0/metrics.jsonl", DONE}  # wiped first
    with pytest.raises(ValueError, match="outside"):
        deliver(tmp_path / "evil", {"../x": b""})
