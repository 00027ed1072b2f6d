"""docs/DESIGN.md §5 and node/__init__.py: the import rule between packages and between node's
rooms, keyed by directory (the style gates, ruff and mypy, are `make lint`), and the test tiers.

    config, errors, cli  <-  core  <-  outputs  <-  sim, daemon  <-  tools, experiments

A module may import its own room and the rooms its row of `ROOMS` names; `tools` may also read
the daemon's file formats (`SHARED`). Some rooms may not import some outside modules at all
(`FORBIDDEN`). `test_a_planted_violation_is_reported` shows the checker failing.
"""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("node", "gossip", "privacy", "topologies")
IO = {"asyncio", "zmq", "uvloop", "socket", "subprocess", "signal", "threading", "time"}

# Room -> the other rooms it may import. "base" is node/config.py, errors.py and cli.py.
ROOMS: dict[str, set[str]] = {
    "base": set(),
    "core": {"base"},
    "outputs": {"base", "core"},
    "daemon": {"base", "core", "outputs"},
    "sim": {"base", "core", "outputs"},
    "tools": {"base", "core", "outputs"},
    "experiments": {"base", "core", "outputs", "sim"},
    "main": {"daemon"},  # node/__main__.py
}
# Single modules of another room that a room may read: the daemon's file formats.
SHARED = {"tools": {"node.daemon.settings", "node.daemon.state"}}
# Top-level modules a room (or package) must never import.
FORBIDDEN: dict[str, set[str]] = {
    "core": IO | {"matplotlib", "tests"},
    "base": IO | {"matplotlib", "tests", "torch"},
    "outputs": IO | {"matplotlib", "tests"},
    "daemon": {"matplotlib", "tests"},
    "sim": {"asyncio", "zmq", "uvloop", "socket", "subprocess", "signal", "matplotlib", "tests"},
    "tools": {"matplotlib", "tests", "uvloop"},
    "experiments": {"tests", "zmq", "uvloop"},
    "main": {"tests"},
    "gossip": {"node", "privacy", "topologies", "tests"},
    "gossip-sans-io": {"node", "privacy", "topologies", "tests", *IO},
    "privacy": {"node", "gossip", "topologies", "tests"},
    "topologies": {"node", "gossip", "privacy", "tests"},
}
GOSSIP_IO = {"transport.py", "faults.py", "keys.py"}


def room_of(path: Path, root: Path) -> str:
    """The room (or package rule) a source file is in."""
    parts = path.relative_to(root).parts
    if parts[0] != "node":
        if parts[0] == "gossip" and parts[-1] not in GOSSIP_IO:
            return "gossip-sans-io"
        return parts[0]
    if len(parts) == 2:
        return {"__main__.py": "main", "__init__.py": "base"}.get(parts[1], "base")
    return parts[1]


def room_of_module(module: str) -> str | None:
    """The node room a dotted module name belongs to; None outside node."""
    parts = module.split(".")
    if parts[0] != "node":
        return None
    if len(parts) == 1 or parts[1] in ("config", "errors", "cli"):
        return "base"
    if parts[1] == "__main__":
        return "main"
    return parts[1]


def imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) for every import in the file, function-local and TYPE_CHECKING ones
    included; `from a import b` yields a.b, so `from node import sim` is seen as node.sim."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def runs_a_test_file(path: Path) -> list[int]:
    """Lines where package code names a path under tests/ in a string (not a docstring): a
    file the wheel and the image do not ship."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
            and (n.value == "tests" or n.value.startswith("tests/"))]


def violations(root: Path) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            room, where = room_of(path, root), path.relative_to(root)
            for line, module in imported(path):
                top = module.split(".")[0]
                if top in FORBIDDEN.get(room, set()):
                    found.append(f"{where}:{line} ({room}) imports {top}")
                target = room_of_module(module)
                if room in ROOMS and target is not None and target != room:
                    shared = any(module == m or module.startswith(m + ".")
                                 for m in SHARED.get(room, ()))
                    if target not in ROOMS[room] and not shared:
                        found.append(f"{where}:{line} ({room}) imports room {target}")
            found += [f"{where}:{line} runs a file under tests/" for line in runs_a_test_file(path)]
    return sorted(set(found))


def test_every_package_and_room_keeps_its_import_rule() -> None:
    assert violations(ROOT) == []


def test_the_room_rule_is_acyclic_and_covers_every_room() -> None:
    graphlib.TopologicalSorter(ROOMS).prepare()  # raises CycleError on a cycle
    rooms = {p.name for p in (ROOT / "node").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(ROOMS) - {"base", "main"}


def test_a_planted_violation_is_reported(tmp_path: Path) -> None:
    plant = {
        "node/core/leaky.py": "import asyncio\nfrom node.daemon import loop\n",
        "node/tools/peek.py": "from node.daemon.loop import Daemon\n"
                              "from node.sim import simulate\n",
        "node/tools/fine.py": "from node.daemon.settings import NodeConfig\n"
                              "from node.daemon import state\n",
        "node/outputs/plot.py": "def f():\n    import matplotlib.pyplot\n",
        "node/sim/x.py": "CMD = ['python', 'tests/faults/hostile_peer.py']\n",
        "gossip/inbox.py": "import time\n",
        "gossip/transport.py": "import time\n",
        "privacy/p.py": "from node.core import trainer\n",
        "topologies/t.py": "",
    }
    for name, text in plant.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = "\n".join(violations(tmp_path))
    assert found.splitlines() == [
        "gossip/inbox.py:1 (gossip-sans-io) imports time",
        "node/core/leaky.py:1 (core) imports asyncio",
        "node/core/leaky.py:2 (core) imports room daemon",
        "node/outputs/plot.py:2 (outputs) imports matplotlib",
        "node/sim/x.py:1 runs a file under tests/",
        "node/tools/peek.py:1 (tools) imports room daemon",
        "node/tools/peek.py:2 (tools) imports room sim",
        "privacy/p.py:1 (privacy) imports node",
    ]


@pytest.mark.parametrize("room", sorted(set(ROOMS) - {"base", "main"}))
def test_every_room_says_what_lives_there_and_what_it_may_import(room: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / "node" / room / "__init__.py").read_text()))
    assert doc and "Rule 1" in doc and "Rule 2" in doc


# What makes a test leave the unit tier: another process, a socket, a process pool.
NOT_IN_UNIT = {"subprocess", "multiprocessing", "socket", "concurrent.futures", "ray",
               "gossip.transport", "tests.asyncio_helpers"}


def unit_tier_violations(tests: Path) -> list[str]:
    found = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {n}" for n in names
                      if any(n == bad or n.startswith(bad + ".") for bad in NOT_IN_UNIT)]
    return found


def test_unit_tests_start_no_process_and_bind_no_socket(tmp_path: Path) -> None:
    assert unit_tier_violations(ROOT / "tests" / "unit") == []
    (tmp_path / "test_planted.py").write_text("import subprocess\nfrom gossip.transport import Z\n")
    assert unit_tier_violations(tmp_path) == ["test_planted.py: subprocess",
                                              "test_planted.py: gossip.transport"]
