"""DESIGN.md §5: the dependency rule, and the style gates (ruff, mypy) every change must pass."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"node", "gossip", "privacy", "topologies"}
IO_MODULES = {"asyncio", "zmq", "uvloop", "socket", "subprocess", "signal", "time"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["topologies", "privacy"])
def test_pure_packages_import_nothing_of_ours(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        ours = imports(path) & (OURS - {package})
        assert not ours, f"{path.relative_to(ROOT)} imports {sorted(ours)}"


def test_gossip_never_imports_node_and_its_protocol_logic_is_sans_io() -> None:
    io_allowed = {"transport.py", "faults.py", "keys.py"}
    for path in (ROOT / "gossip").rglob("*.py"):
        found = imports(path)
        assert "node" not in found, f"{path.name} imports node"
        if path.name not in io_allowed:
            assert not found & IO_MODULES, f"{path.name} imports {sorted(found & IO_MODULES)}"


def test_the_algorithm_is_pure() -> None:
    for name in ("algorithm.py", "runner.py", "federation.py", "trainer.py"):
        found = imports(ROOT / "node" / name)
        assert not found & IO_MODULES, f"node/{name} imports {sorted(found & IO_MODULES)}"


def test_ruff_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "node", "gossip", "privacy",
                           "topologies"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
