"""The wheel ships every package and every room of node/ (what the Dockerfile installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ["node", "node.core", "node.core.algorithm", "node.core.data", "node.core.model",
         "node.adversary", "node.outputs", "node.daemon", "node.sim", "node.tools",
         "node.tools.chaos", "node.experiments", "node.experiments.grid",
         "node.experiments.studies", "gossip", "privacy", "topologies"]


@pytest.mark.slow
def test_the_wheel_installs_every_room_and_each_imports_from_the_install(tmp_path: Path) -> None:
    # Built from a copy: setuptools reuses a checkout's build/ directory, which could hold
    # sub-packages a broken package list no longer finds.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("node", "gossip", "privacy", "topologies"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "wheel"), str(src)], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("dpnorm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # Every source file of the checkout's packages is in the wheel, nothing left behind.
    sources = {p.relative_to(ROOT).as_posix() for pkg in ("node", "gossip", "privacy",
                                                          "topologies")
               for p in (ROOT / pkg).rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300, capture_output=True)
    probe = ("import importlib, sys\n"
             f"for name in {ROOMS!r}:\n"
             "    mod = importlib.import_module(name)\n"
             f"    assert mod.__file__.startswith({str(target)!r}), (name, mod.__file__)\n"
             "import node.daemon.main, node.sim.simulate, node.tools.chaos.hostile_peer\n"
             "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

