"""Topology builders, validation, edge signs and Metropolis–Hastings weights."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import topologies
from topologies import (
    TopologyError,
    build,
    edge_sign,
    metropolis_hastings,
    mixing_matrix,
    neighbours,
    spectral_gap,
    torus_shape,
    validate,
)

TORUS_SIZES = [n for n in range(6, 41) if any(n % r == 0 for r in range(2, int(n**0.5) + 1))]


@st.composite
def spec_and_size(draw: st.DrawFn) -> tuple[str, int, int]:
    """A valid (spec, n, seed) triple from every family except file:."""
    seed = draw(st.integers(0, 2**16))
    family = draw(
        st.sampled_from(["ring", "mesh", "torus", "star", "line", "exponential", "rr", "er", "sw"])
    )
    if family == "torus":
        return "torus", draw(st.sampled_from(TORUS_SIZES)), seed
    if family == "rr":
        n = draw(st.integers(4, 30))
        d = draw(st.integers(2, n - 1).filter(lambda d: n * d % 2 == 0))
        return f"random-regular:{d}", n, seed
    if family == "er":
        n = draw(st.integers(2, 30))
        return f"erdos-renyi:{draw(st.sampled_from([0.4, 0.7, 1.0]))}", n, seed
    if family == "sw":
        k = draw(st.sampled_from([2, 4]))
        n = draw(st.integers(k + 1, 30))
        return f"small-world:{k}:{draw(st.sampled_from([0.0, 0.1, 0.3]))}", n, seed
    return family, draw(st.integers(3, 30)), seed


@settings(max_examples=150, deadline=None)
@given(spec_and_size())
def test_every_built_graph_is_valid_and_mixes(case: tuple[str, int, int]) -> None:
    spec, n, seed = case
    g = build(spec, n, seed)
    validate(g)
    assert sorted(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    for i, j in g.edges:
        assert edge_sign(i, j) == -edge_sign(j, i) and edge_sign(i, j) in (1, -1)
    w = mixing_matrix(g)
    np.testing.assert_allclose(w, w.T, atol=0)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert (w >= 0).all() and (np.diag(w) > 0).all()
    assert ((w > 0) == (nx.to_numpy_array(g, nodelist=range(n)) + np.eye(n) > 0)).all()
    gap = spectral_gap(g)
    assert 0 < gap <= 1
    # Gossip averaging keeps the mean: the property D-PSGD relies on.
    x = np.random.default_rng(seed).normal(size=(n, 3))
    np.testing.assert_allclose((w @ x).mean(axis=0), x.mean(axis=0), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["random-regular:3", "erdos-renyi:0.5", "small-world:4:0.3"]),
       st.integers(0, 1000))  # fmt: skip
def test_random_families_are_deterministic_in_the_seed(spec: str, seed: int) -> None:
    assert sorted(build(spec, 12, seed).edges) == sorted(build(spec, 12, seed).edges)


def test_metropolis_hastings_weights_by_formula() -> None:
    w = metropolis_hastings(build("star", 4))  # hub 0 of degree 3, leaves of degree 1
    assert w[0] == {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
    assert w[1] == {0: 0.25, 1: 0.75}
    assert list(w[0]) == sorted(w[0])


@pytest.mark.parametrize(
    ("spec", "n", "degrees", "edges"),
    [
        ("ring", 7, {2}, 7),
        ("mesh", 5, {4}, 10),
        ("mesh", 2, {1}, 1),
        ("line", 5, {1, 2}, 4),
        ("line", 2, {1}, 1),
        ("star", 6, {1, 5}, 5),
        ("torus", 12, {4}, 24),  # 3×4
        ("torus", 9, {4}, 18),  # 3×3
        ("torus", 6, {3}, 9),  # 2×3: the vertical wrap coincides with the direct edge
        ("exponential", 8, {5}, 20),  # hops 1, 2, 4 (4 ≡ -4 mod 8)
        ("exponential", 16, {7}, 56),  # hops 1, 2, 4, 8
        ("random-regular:4", 10, {4}, 20),
        ("small-world:4:0.0", 10, {4}, 20),  # no rewiring: the ring lattice
        ("erdos-renyi:1", 6, {5}, 15),
    ],
)
def test_degree_structure(spec: str, n: int, degrees: set[int], edges: int) -> None:
    g = build(spec, n)
    assert {d for _, d in g.degree} == degrees
    assert g.number_of_edges() == edges


def test_torus_layout_and_shape() -> None:
    assert [torus_shape(n) for n in (6, 8, 9, 12, 16, 18, 30)] == [
        (2, 3), (2, 4), (3, 3), (3, 4), (4, 4), (3, 6), (5, 6),
    ]  # fmt: skip
    g = build("torus", 12)  # node r*4 + c: right, left, down, up neighbours
    assert neighbours(g, 5) == sorted([4, 6, 1, 9])
    assert neighbours(g, 0) == sorted([1, 3, 4, 8])


def test_exponential_links_powers_of_two() -> None:
    assert neighbours(build("exponential", 16), 0) == [1, 2, 4, 8, 12, 14, 15]


def test_spectral_gap_orders_topologies() -> None:
    gaps = {s: spectral_gap(build(s, 16)) for s in ("line", "ring", "torus", "exponential", "mesh")}
    assert gaps["line"] < gaps["ring"] < gaps["torus"] < gaps["exponential"] < gaps["mesh"]
    assert gaps["mesh"] == pytest.approx(1.0)


def test_edge_list_file(tmp_path: Path) -> None:
    f = tmp_path / "edges.txt"
    f.write_text("# a square with a diagonal\n0 1\n1 2  # inline comment\n\n2 3\n3 0\n0 2\n1 0\n")
    g = build(f"file:{f}", 4)
    assert sorted(g.edges) == [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]


@pytest.mark.parametrize(
    ("text", "n", "match"),
    [
        ("0 1\n1 x\n", 3, r"edges.txt:2: expected two integer node ids"),
        ("0 1\n1 2 3\n", 3, r"edges.txt:2: expected two integer"),
        ("0 1\n1 5\n", 3, r"edges.txt:2: node id out of range 0..2"),
        ("0 1\n1 1\n", 3, r"edges.txt:2: self-loop at node 1"),
        ("0 1\n1 2\n", 4, r"no edge for node 3"),
        ("0 1\n2 3\n", 4, r"disconnected \(2 components\)"),
    ],
)
def test_bad_edge_list(tmp_path: Path, text: str, n: int, match: str) -> None:
    f = tmp_path / "edges.txt"
    f.write_text(text)
    with pytest.raises(TopologyError, match=match):
        build(f"file:{f}", n)


@pytest.mark.parametrize(
    ("spec", "n", "match"),
    [
        ("rign", 5, r"^unknown topology 'rign' \(did you mean ring\?\); choose one of ring, mesh"),
        ("hypercube", 8, r"^unknown topology 'hypercube'; choose one of"),
        ("ring", 2, r"^topology ring needs at least 3 nodes \(use line for 2\); got 2$"),
        ("mesh", 1, r"needs at least 2 nodes"),
        ("ring:4", 6, r"takes no parameters"),
        ("torus", 7, r"torus needs n = rows×cols .* which 7 is not; try n = 6, 8, 9, 10"),
        ("torus", 4, r"which 4 is not"),
        ("random-regular", 6, r"is written random-regular:D"),
        ("random-regular:x", 6, r"cannot read 'x' in topology 'random-regular:x'"),
        ("random-regular:3", 5, r"n·D even"),
        ("random-regular:6", 6, r"2 ≤ D ≤ 5"),
        ("erdos-renyi:0", 6, r"must be in \(0, 1\]"),
        ("erdos-renyi:0.01", 30, r"stayed disconnected after 100 draws; raise P"),
        ("small-world:3:0.1", 10, r"K must be even"),
        ("small-world:4:1.5", 10, r"P in \[0, 1\]"),
        ("small-world:4", 10, r"is written small-world:K:P"),
        ("small-world:4:0.1", 4, r"needs at least 5 nodes"),
        ("file:/no/such/file", 4, r"cannot read topology file /no/such/file"),
        ("file:", 4, r"is written file:PATH"),
    ],
)
def test_bad_specs_give_one_sentence(spec: str, n: int, match: str) -> None:
    with pytest.raises(TopologyError, match=match) as info:
        build(spec, n)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_validate_rejects_unusable_graphs() -> None:
    with pytest.raises(TopologyError, match="self-loop at node 1"):
        g = nx.path_graph(3)
        g.add_edge(1, 1)
        validate(g)
    with pytest.raises(TopologyError, match=r"nodes 0\.\.2; found 'a'"):
        validate(nx.relabel_nodes(nx.path_graph(3), {2: "a"}))
    with pytest.raises(TopologyError, match="undirected simple"):
        validate(nx.DiGraph([(0, 1)]))
    with pytest.raises(TopologyError, match="at least 2"):
        validate(nx.empty_graph(1))
    with pytest.raises(TopologyError, match="itself"):
        edge_sign(3, 3)


def test_neighbours_sorted_even_when_inserted_out_of_order() -> None:
    g = nx.Graph([(0, 3), (0, 1), (0, 2)])
    assert neighbours(g, 0) == [1, 2, 3]


def test_package_imports_nothing_of_ours() -> None:
    ours = {"node", "gossip", "privacy"}
    allowed = {"networkx", "numpy", "topologies", "__future__"}
    for path in Path(topologies.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in ours, f"{path.name} imports {name}"
                assert top in allowed or top in _stdlib(), f"{path.name} imports {name}"


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)
