"""Graph builders: one function per topology and `build(spec, n, seed)` that parses a spec string.

Every builder returns an undirected `nx.Graph` on the integer nodes 0..n-1 that passes
`validate`. Random families are drawn from one `random.Random(seed)` and redrawn from the same
stream until connected, so a (spec, n, seed) triple always yields the same graph.

Minimum sizes (smaller graphs are either degenerate or duplicate another family):
ring 3 · torus 6 (rows ≥ 2, cols ≥ 3) · mesh, line, star, exponential, erdos-renyi, file 2 ·
random-regular:D needs D+1 nodes and D ≥ 2 · small-world:K:P needs K+1 nodes.

Errors: `TopologyError(ValueError)`, always one sentence naming the spec and what to change.
"""

from __future__ import annotations

import difflib
import math
import random
from collections.abc import Callable
from pathlib import Path

import networkx as nx

__all__ = [
    "SPECS",
    "TopologyError",
    "build",
    "edge_sign",
    "exponential",
    "from_edgelist",
    "line",
    "max_degree",
    "mesh",
    "neighbours",
    "ring",
    "star",
    "torus",
    "torus_shape",
    "validate",
]

# The spec grammar, in the order users see it in error messages.
SPECS = (
    "ring", "mesh", "torus", "star", "line", "random-regular:D", "erdos-renyi:P",
    "small-world:K:P", "exponential", "file:PATH",
)  # fmt: skip
_FORMS = {s.split(":")[0]: s for s in SPECS}
MAX_TRIES = 100  # redraws of a random family before we call the parameters hopeless


class TopologyError(ValueError):
    """A topology spec or graph that cannot be used; the message is one user-facing sentence."""


def edge_sign(i: int, j: int) -> int:
    """A_{i|j}: +1 if i < j else -1, so that A_{i|j} = -A_{j|i} on every edge."""
    if i == j:
        raise TopologyError(
            f"edge sign of node {i} with itself is undefined; graphs have no self-loops"
        )
    return 1 if i < j else -1


def neighbours(g: nx.Graph, i: int) -> list[int]:
    """Sorted neighbour ids of node i (sorted so iteration order never depends on insertion)."""
    return sorted(int(j) for j in g.neighbors(i))


def max_degree(g: nx.Graph) -> int:
    """The largest degree of g (ECL's network-wide η is set from it)."""
    return int(max(d for _, d in g.degree()))


def validate(g: nx.Graph, name: str = "graph") -> None:
    """Check that g is a usable communication graph, raising TopologyError otherwise.

    Usable means: undirected simple graph, n ≥ 2, nodes exactly the ints 0..n-1, no self-loops,
    connected (otherwise some node could never reach consensus with the rest).
    """
    if g.is_directed() or g.is_multigraph():
        raise TopologyError(f"{name} must be an undirected simple graph (nx.Graph)")
    n = g.number_of_nodes()
    if n < 2:
        raise TopologyError(f"{name} has {n} node(s); a federation needs at least 2")
    ids = set(g.nodes)
    if ids != set(range(n)):
        bad = sorted(map(repr, ids - set(range(n))))[:3]
        raise TopologyError(f"{name} must have nodes 0..{n - 1}; found {', '.join(bad)}")
    loops = sorted(int(u) for u, v in nx.selfloop_edges(g))
    if loops:
        raise TopologyError(f"{name} has a self-loop at node {loops[0]}; remove it")
    if not nx.is_connected(g):
        parts = nx.number_connected_components(g)
        raise TopologyError(
            f"{name} is disconnected ({parts} components); every node must reach every other"
        )


def _need(name: str, n: int, minimum: int, why: str = "") -> None:
    if n < minimum:
        extra = f" ({why})" if why else ""
        raise TopologyError(f"topology {name} needs at least {minimum} nodes{extra}; got {n}")


def ring(n: int) -> nx.Graph:
    """Cycle 0-1-…-(n-1)-0; with 2 nodes it would collapse into a line, so n ≥ 3."""
    _need("ring", n, 3, "use line for 2")
    return nx.cycle_graph(n)


def mesh(n: int) -> nx.Graph:
    """Complete graph."""
    _need("mesh", n, 2)
    return nx.complete_graph(n)


def line(n: int) -> nx.Graph:
    """Path 0-1-…-(n-1)."""
    _need("line", n, 2)
    return nx.path_graph(n)


def star(n: int) -> nx.Graph:
    """Node 0 is the hub, linked to every other node."""
    _need("star", n, 2)
    return nx.star_graph(n - 1)


def torus_shape(n: int) -> tuple[int, int]:
    """The most square rows×cols = n with 2 ≤ rows ≤ cols and cols ≥ 3.

    cols ≥ 3 because a wrap-around of length 2 adds no edge (2×2 would just be a 4-ring).
    With rows = 2 the vertical wrap coincides with the direct edge, so nodes have degree 3.
    """
    rows = max((r for r in range(2, math.isqrt(n) + 1) if n % r == 0), default=0)
    if n < 6 or rows == 0:
        hint = ", ".join(str(m) for m in range(max(6, n - 3), n + 4) if _factorable(m))
        raise TopologyError(
            f"topology torus needs n = rows×cols with rows ≥ 2 and cols ≥ 3, which {n} is not; "
            f"try n = {hint}"
        )
    return rows, n // rows


def _factorable(m: int) -> bool:
    return m >= 6 and any(m % r == 0 for r in range(2, math.isqrt(m) + 1))


def torus(n: int) -> nx.Graph:
    """2-D wrap-around grid of shape torus_shape(n); node r*cols + c sits at row r, column c."""
    rows, cols = torus_shape(n)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            g.add_edge(here, r * cols + (c + 1) % cols)
            g.add_edge(here, ((r + 1) % rows) * cols + c)
    return g


def exponential(n: int) -> nx.Graph:
    """Node i linked to i ± 2^k mod n for every 2^k < n (the 'exponential graph' of SGP/Bluefog).

    Degree O(log n) with a spectral gap that stays large as n grows, a cheap middle ground
    between ring and mesh.
    """
    _need("exponential", n, 2)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    hop = 1
    while hop < n:  # hop < n keeps (i + hop) % n != i, so no self-loops
        g.add_edges_from((i, (i + hop) % n) for i in range(n))
        hop *= 2
    return g


def _draw_connected(
    spec: str, n: int, seed: int, draw: Callable[[random.Random], nx.Graph], hint: str
) -> nx.Graph:
    """Draw from `draw` with one seeded stream until the result is connected (bounded)."""
    rng = random.Random(seed)
    for _ in range(MAX_TRIES):
        g = draw(rng)
        if nx.is_connected(g):
            return nx.convert_node_labels_to_integers(g, ordering="sorted")
    raise TopologyError(f"{spec} on {n} nodes stayed disconnected after {MAX_TRIES} draws; {hint}")


def from_edgelist(path: str | Path, n: int) -> nx.Graph:
    """Read an edge list: one `i j` pair of node ids per line, `#` starts a comment.

    The ids must be exactly 0..n-1 so that the file and the node count agree.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {p}: {exc.strerror or exc}") from exc
    g = nx.Graph()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            i, j = (int(f) for f in fields)
        except ValueError:
            raise TopologyError(
                f"{p}:{lineno}: expected two integer node ids 'i j', got {raw.strip()!r}"
            ) from None
        if not (0 <= i < n and 0 <= j < n):
            raise TopologyError(f"{p}:{lineno}: node id out of range 0..{n - 1} for {n} nodes")
        if i == j:
            raise TopologyError(f"{p}:{lineno}: self-loop at node {i}; remove it")
        g.add_edge(i, j)
    missing = sorted(set(range(n)) - set(g.nodes))
    if missing:
        raise TopologyError(
            f"{p} has no edge for node {missing[0]} of 0..{n - 1}; every node needs one"
        )
    return g


def _number(spec: str, text: str, kind: Callable[[str], int | float], example: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise TopologyError(
            f"cannot read {text!r} in topology {spec!r}; write it like {example}"
        ) from None


def build(spec: str, n: int, seed: int = 0) -> nx.Graph:
    """Build and validate the graph named by `spec` on nodes 0..n-1 (see SPECS).

    Args:
        spec: e.g. "ring", "torus", "random-regular:4", "erdos-renyi:0.3", "small-world:4:0.1",
            "file:edges.txt".
        n: number of nodes.
        seed: used only by the random families; same seed, same graph.
    """
    kind, _, arg = spec.partition(":")
    params = arg.split(":") if arg else []
    fixed: dict[str, Callable[[int], nx.Graph]] = {
        "ring": ring, "mesh": mesh, "torus": torus, "star": star, "line": line,
        "exponential": exponential,
    }  # fmt: skip
    if kind in fixed:
        if params:
            raise TopologyError(f"topology {kind} takes no parameters; got {spec!r}")
        g = fixed[kind](n)
    elif kind == "file" and arg:
        g = from_edgelist(arg, n)
    elif kind == "random-regular" and len(params) == 1:
        d = int(_number(spec, params[0], int, "random-regular:4"))
        if not 2 <= d < n or (n * d) % 2:
            raise TopologyError(
                f"{spec} on {n} nodes needs 2 ≤ D ≤ {n - 1} with n·D even; pick another D"
            )
        hint = "use a larger D"
        g = _draw_connected(spec, n, seed, lambda r: nx.random_regular_graph(d, n, seed=r), hint)
    elif kind == "erdos-renyi" and len(params) == 1:
        p = _number(spec, params[0], float, "erdos-renyi:0.3")
        _need(kind, n, 2)
        if not 0 < p <= 1:
            raise TopologyError(f"{spec}: the edge probability P must be in (0, 1]")
        hint = f"raise P well above ln(n)/n ≈ {math.log(n) / n:.2f}"
        g = _draw_connected(spec, n, seed, lambda r: nx.gnp_random_graph(n, p, seed=r), hint)
    elif kind == "small-world" and len(params) == 2:
        k = int(_number(spec, params[0], int, "small-world:4:0.1"))
        p = _number(spec, params[1], float, "small-world:4:0.1")
        if k < 2 or k % 2 or not 0 <= p <= 1:
            raise TopologyError(
                f"{spec}: K must be even and ≥ 2 and P in [0, 1], as in small-world:4:0.1"
            )
        _need(spec, n, k + 1, "K must be below the node count")
        hint = "lower the rewiring probability P or raise K"
        g = _draw_connected(spec, n, seed, lambda r: nx.watts_strogatz_graph(n, k, p, seed=r), hint)
    elif kind in _FORMS:
        raise TopologyError(f"topology {kind} is written {_FORMS[kind]}; got {spec!r}")
    else:
        choices = ", ".join(SPECS)
        close = difflib.get_close_matches(kind, [s.split(":")[0] for s in SPECS], n=1)
        hint = f" (did you mean {close[0]}?)" if close and close[0] != kind else ""
        raise TopologyError(f"unknown topology {spec!r}{hint}; choose one of {choices}")
    validate(g, f"topology {spec}")
    return g
