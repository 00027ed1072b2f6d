"""docs/DESIGN.md §5 and node/__init__.py: the import rule between packages and between node's
rooms, keyed by directory (the style gates, ruff and mypy, are `make lint`), and the test tiers.

    config, errors, cli  <-  core  <-  outputs  <-  sim, daemon  <-  tools, experiments
                             core  <-  adversary  <-  tools, experiments

A module may import its own room and the rooms its row of `ROOMS` names; `tools` may also read
the daemon's file formats (`SHARED`). Some rooms may not import some outside modules at all
(`FORBIDDEN`). Inside a room, a sub-room (`SUBROOMS`) is entered by its door, its `__init__`:
a module outside it (another sub-room, the room's own top level, another room, a script) may
import `node.core.data` but never `node.core.data.tables`. `test_a_planted_violation_is_reported`
shows the checker failing.
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
    "adversary": {"base", "core"},  # no honest room may import it
    "tools": {"base", "core", "outputs", "adversary"},
    "experiments": {"base", "core", "outputs", "sim", "adversary"},
    "main": {"daemon"},  # node/__main__.py
}
# Sub-rooms: packages inside a room whose `__init__` is the only way in from outside them.
SUBROOMS = ("node.core.algorithm", "node.core.data", "node.core.model", "node.experiments.grid")
# Code outside the packages that must also enter sub-rooms by their doors.
ENTRY_POINTS = ("scripts",)
# Single modules of another room that a room may read: the daemon's file formats.
SHARED = {"tools": {"node.daemon.settings", "node.daemon.state"}}
# Top-level modules a room (or package) must never import.
FORBIDDEN: dict[str, set[str]] = {
    "core": IO | {"matplotlib", "tests"},
    "base": IO | {"matplotlib", "tests", "torch"},
    "outputs": IO | {"matplotlib", "tests"},
    "adversary": IO | {"matplotlib", "tests"},
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
GOSSIP_IO = {"transport.py", "zap.py", "faults.py", "keys.py"}


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


def module_of(path: Path, root: Path) -> str:
    """The dotted name of a source file (a package's `__init__` is the package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def subroom_internal(module: str, root: Path) -> str | None:
    """The sub-room whose inside `module` names (a module or package in the sub-room's
    directory), or None for its door and anything outside. `from node.core.data import
    Dataset` yields node.core.data.Dataset, a name of the door, not a module: only a name that
    is a file or directory there counts as inside."""
    for sub in SUBROOMS:
        if module.startswith(sub + "."):
            first = module[len(sub) + 1:].split(".")[0]
            folder = root.joinpath(*sub.split("."))
            if (folder / f"{first}.py").exists() or (folder / first).is_dir():
                return sub
    return None


def door_violations(path: Path, root: Path) -> list[str]:
    """Imports by `path` of a sub-room's inside from outside that sub-room."""
    me, where = module_of(path, root), path.relative_to(root)
    found = []
    for line, module in imported(path):
        sub = subroom_internal(module, root)
        if sub is not None and me != sub and not me.startswith(sub + "."):
            inside = f"{sub}.{module[len(sub) + 1:].split('.')[0]}"
            found.append(f"{where}:{line} imports {inside} past its door")
    return found


def violations(root: Path) -> list[str]:
    found = []
    for entry in ENTRY_POINTS:
        for path in sorted((root / entry).rglob("*.py")):
            found += door_violations(path, root)
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
            found += door_violations(path, root)
    return sorted(set(found))


def test_every_package_and_room_keeps_its_import_rule() -> None:
    assert violations(ROOT) == []


def test_the_room_rule_is_acyclic_and_covers_every_room() -> None:
    graphlib.TopologicalSorter(ROOMS).prepare()  # raises CycleError on a cycle
    rooms = {p.name for p in (ROOT / "node").iterdir() if (p / "__init__.py").exists()}
    assert rooms == set(ROOMS) - {"base", "main"}
    # Every package inside core is a sub-room, so a new one cannot be entered sideways.
    core = {f"node.core.{p.name}" for p in (ROOT / "node" / "core").iterdir()
            if (p / "__init__.py").exists()}
    assert core == {s for s in SUBROOMS if s.startswith("node.core.")}
    assert all((ROOT.joinpath(*s.split(".")) / "__init__.py").exists() for s in SUBROOMS)


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
        # Sub-rooms: the door and the sub-room's own modules may use its inside; nobody else.
        "node/core/data/__init__.py": "from node.core.data.tables import read_file\n",
        "node/core/data/tables.py": "from node.core.data.idx import read_idx\n",
        "node/core/data/idx.py": "",
        "node/core/model/__init__.py": "",
        "node/core/model/trainer.py": "from node.core.data import Dataset\n"
                                      "from node.core.data.tables import read_file\n",
        "node/core/assemble.py": "from node.core.model import trainer\n"
                                 "from node.core.data import read_file\n",
        "node/sim/door.py": "import node.core.data.idx\nfrom node.adversary import ATTACKS\n",
        "node/tools/hostile.py": "from node.adversary import ATTACKS\n",
        "scripts/bench.py": "from node.core.data.tables import read_file\n",
    }
    for name, text in plant.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = "\n".join(violations(tmp_path))
    assert found.splitlines() == [
        "gossip/inbox.py:1 (gossip-sans-io) imports time",
        "node/core/assemble.py:1 imports node.core.model.trainer past its door",
        "node/core/leaky.py:1 (core) imports asyncio",
        "node/core/leaky.py:2 (core) imports room daemon",
        "node/core/model/trainer.py:2 imports node.core.data.tables past its door",
        "node/outputs/plot.py:2 (outputs) imports matplotlib",
        "node/sim/door.py:1 imports node.core.data.idx past its door",
        "node/sim/door.py:2 (sim) imports room adversary",
        "node/sim/x.py:1 runs a file under tests/",
        "node/tools/peek.py:1 (tools) imports room daemon",
        "node/tools/peek.py:2 (tools) imports room sim",
        "privacy/p.py:1 (privacy) imports node",
        "scripts/bench.py:1 imports node.core.data.tables past its door",
    ]


@pytest.mark.parametrize("room", sorted(set(ROOMS) - {"base", "main"}) + list(SUBROOMS))
def test_every_room_says_what_lives_there_and_what_it_may_import(room: str) -> None:
    folder = ROOT / "node" / room if "." not in room else ROOT.joinpath(*room.split("."))
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
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


# One concept per module: a module past this has more than one and is split along them.
MAX_LINES = 350


def long_modules(root: Path) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for package in PACKAGES
            for p in sorted((root / package).rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]


def test_no_module_is_over_350_lines(tmp_path: Path) -> None:
    assert long_modules(ROOT) == []
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "node" / "fits.py").write_text("x = 1\n" * MAX_LINES)
    assert long_modules(tmp_path) == [f"node/big.py: {MAX_LINES + 1} lines"]
