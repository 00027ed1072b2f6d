"""Every generator seed a node derives from the run's seed is derived in node/core/seeds.py, and
within each stream distinct nodes (and rounds) get distinct seeds."""

from __future__ import annotations

import ast
from pathlib import Path

from node.core.seeds import compression_seed, data_order_seed, noise_seed, restart_noise_seed

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "node" / "core" / "seeds.py"


def test_each_stream_gives_every_node_its_own_seed() -> None:
    pairs = [(s, i) for s in range(4) for i in range(300)]
    for stream in (data_order_seed, compression_seed, noise_seed):
        assert len({stream(s, i) for s, i in pairs}) == len(pairs), stream.__name__
    restarts = {restart_noise_seed(s, i, r) for s in range(3) for i in range(50) for r in range(50)}
    assert len(restarts) == 3 * 50 * 50
    assert noise_seed(None, 3) is None  # no base: OS entropy


def seed_arithmetic(tree: ast.AST) -> list[int]:
    """Lines where a name containing `seed` is multiplied by an integer literal (every per-node
    derivation does that: a seed offset by a constant is a second run, not a node's stream)."""
    def mentions_seed(node: ast.AST) -> bool:
        return any((isinstance(n, ast.Name) and "seed" in n.id.lower())
                   or (isinstance(n, ast.Attribute) and "seed" in n.attr.lower())
                   for n in ast.walk(node))

    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) and mentions_seed(n)
            and any(isinstance(c, ast.Constant) and isinstance(c.value, int)
                    for c in (n.left, n.right))]


def test_no_module_but_seeds_derives_a_seed_by_formula() -> None:
    found = {}
    for path in sorted((ROOT / "node").rglob("*.py")):
        if path != SEEDS:
            lines = seed_arithmetic(ast.parse(path.read_text(encoding="utf-8")))
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    assert found == {}


def test_a_planted_formula_is_found() -> None:
    assert seed_arithmetic(ast.parse("g.manual_seed(cfg.seed * 100_003 + node)\n")) != []
    assert seed_arithmetic(ast.parse("g.manual_seed(data_order_seed(cfg.seed, node))\n")) == []
