"""No code path may deserialise peer bytes with pickle, marshal, torch.load or eval."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["node", "gossip", "privacy", "topologies", "scripts"]
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
BANNED_CALLS = {"eval", "exec", "load", "loads"}  # `load(s)` only on the modules below
UNSAFE_LOADERS = {"torch", "pickle", "marshal", "np", "numpy"}


def python_files() -> list[Path]:
    return sorted(
        p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")
    )


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in BANNED_MODULES:
                found.append(node.module)
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append("from torch import load")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in {"eval", "exec"}:
                found.append(f"{f.id}(...)")
            elif (
                isinstance(f, ast.Attribute)
                and f.attr in BANNED_CALLS
                and isinstance(f.value, ast.Name)
                and f.value.id in UNSAFE_LOADERS
            ):
                # np.load is allowed only with allow_pickle left False (its default).
                pickled = any(
                    k.arg == "allow_pickle"
                    and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords
                )
                if f.value.id not in {"np", "numpy"} or pickled:
                    found.append(f"{f.value.id}.{f.attr}(...)")
    return [f"{path.relative_to(ROOT)}: {v}" for v in found]


def test_the_scan_finds_what_it_must(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport torch\nfrom marshal import loads\n"
        "torch.load('x')\neval('1')\nimport numpy as np\nnp.load('f', allow_pickle=True)\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(violations(bad)) == 5
    finally:
        ROOT = saved


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_deserialisation(path: Path) -> None:
    assert violations(path) == []
