"""Issue 30: the privacy mechanism is a type (node/core/mechanism.py), so nothing else branches on
its name. This test reads the source of node/, privacy/ and gossip/ and fails on any comparison
of a privacy mode with a mechanism's name outside the mechanism module.

What counts: `==`, `!=`, `in`, `not in` (or a `match` case) with the string "gradient" or
"message" on one side — no other setting uses those words — and "none" or "clip" where the
other side names a mode (`x.mode`, `x.privacy_mode`, `record["mode"]`), since "none" and
"clip" are also values of unrelated settings (compress, standardise, robust).
`test_a_planted_comparison_is_reported` shows the check failing.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("node", "privacy", "gossip")
ALWAYS = {"gradient", "message"}
MODE_ONLY = {"none", "clip"}
ALLOWED = {
    # The one place that maps a mode's name to its behaviour.
    "node/core/mechanism.py",
    # The standalone calculator, `python -m privacy gradient|message`: its command line and its
    # statement text name the two modes, and privacy/ may not import node (test_layering.py).
    "privacy/__main__.py",
    "privacy/statement.py",
}


def _names(node: ast.expr) -> set[str]:
    """The string constants `node` is, or holds (a tuple, list or set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_names(e) for e in node.elts))
    return set()


def _names_a_mode(node: ast.expr) -> bool:
    """`x.mode`, `x.privacy_mode`, `x["mode"]`: an expression that is a mode by its name."""
    if isinstance(node, ast.Attribute):
        return node.attr.endswith("mode")
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "mode"
    return False


def _compares_a_mode(left: ast.expr, right: ast.expr) -> bool:
    for literal, other in ((left, right), (right, left)):
        found = _names(literal)
        if found & ALWAYS or (found & MODE_ONLY and _names_a_mode(other)):
            return True
    return False


def mode_comparisons(root: Path) -> list[str]:
    """"path:line" of every comparison of a mode's name outside the allowed modules."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root).as_posix()
            if where in ALLOWED:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if _compares(node):
                    found.append(f"{where}:{node.lineno}")
    return sorted(found)


def _compares(node: ast.AST) -> bool:
    """A comparison, or a `match` with a case, of a mode with a mechanism's name."""
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        return any(_compares_a_mode(a, b) for a, b in itertools.pairwise(sides))
    if isinstance(node, ast.Match):
        return any(isinstance(case.pattern, ast.MatchValue)
                   and bool(_names(case.pattern.value) & ALWAYS) for case in node.cases)
    return False


def test_no_module_but_the_mechanism_compares_a_privacy_mode() -> None:
    assert mode_comparisons(ROOT) == []


def test_a_planted_comparison_is_reported(tmp_path: Path) -> None:
    plant = {
        "node/core/runner.py": "if plan.mode == 'message' and not active:\n    pass\n",
        "node/sim/x.py": "x = 'gradient' if cfg.effective_privacy_mode != 'none' else 'y'\n"
                         "ok = cfg.compress == 'none' or mode == 'none'\n",
        "node/outputs/r.py": "if privacy[0]['mode'] in ('none', 'clip'):\n    pass\n",
        "privacy/p.py": "match mode:\n    case 'gradient':\n        pass\n",
        "gossip/g.py": "if 'message' != kind:\n    pass\n",
        "node/core/mechanism.py": "if mode == 'message':\n    pass\n",  # the one place
    }
    for name, text in plant.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert mode_comparisons(tmp_path) == [
        "gossip/g.py:1",
        "node/core/runner.py:1",
        "node/outputs/r.py:1",
        "node/sim/x.py:1",
        "privacy/p.py:1",
    ]
