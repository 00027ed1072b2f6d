"""The DP-Norm family on convex problems: exactness, an independent ECL, the denoising effect."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from node.core.algorithm import Gossip, PrimalDual, PrimalDualParams
from tests.sim.lsq import GaussianNoise, LeastSquares, primal_dual_nodes, run_rounds

GRAPHS = {
    "ring": nx.cycle_graph(6),
    "torus": nx.convert_node_labels_to_integers(nx.grid_2d_graph(3, 3, periodic=True)),
    "random": nx.erdos_renyi_graph(8, 0.5, seed=3),  # irregular: degrees differ
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("local_steps", [2, 4, 8])  # 8: ECL-ISVR's exchange interval
def test_ecl_converges_to_pooled_minimiser(name: str, local_steps: int) -> None:
    graph = GRAPHS[name]
    assert nx.is_connected(graph)
    problem = LeastSquares.random(graph.number_of_nodes(), seed=1)
    w_star = problem.pooled_minimiser()
    nodes = primal_dual_nodes(graph, problem, lr=0.2, local_steps=local_steps)
    run_rounds(nodes, problem, rounds=400)
    worst = max(float((n.w - w_star).norm() / w_star.norm()) for n in nodes)
    assert worst < 1e-6


def reference_ecl(
    graph: nx.Graph, problem: LeastSquares, lr: float, eta: float, k: int, rounds: int
) -> list[list[torch.Tensor]]:
    """Textbook ECL/PDMM (θ = 1) over the whole graph at once; returns every node's w per round."""
    n = graph.number_of_nodes()
    mu = 1.0 / lr
    w = [torch.zeros(problem.dim, dtype=torch.float64) for _ in range(n)]
    z = {(i, j): torch.zeros(problem.dim, dtype=torch.float64) for i in graph for j in graph[i]}
    sign = {(i, j): (1.0 if i < j else -1.0) for (i, j) in z}
    history = []
    for _ in range(rounds):
        for i in range(n):
            nbrs = list(graph[i])
            for _ in range(k):
                pull = sum(sign[i, j] * z[i, j] for j in nbrs)
                w[i] = (mu * w[i] - problem.grad(i, w[i]) + eta * pull) / (mu + eta * len(nbrs))
        y = {(i, j): z[i, j] - 2 * sign[i, j] * w[i] for (i, j) in z}
        z = {(i, j): y[j, i] for (i, j) in z}
        history.append([wi.clone() for wi in w])
    return history


def test_alpha_zero_without_noise_is_textbook_ecl_step_for_step() -> None:
    graph = GRAPHS["random"]
    problem = LeastSquares.random(graph.number_of_nodes(), seed=2)
    nodes = primal_dual_nodes(graph, problem, lr=0.1, local_steps=3)
    eta = nodes[0].params.eta
    expected = reference_ecl(graph, problem, lr=0.1, eta=eta, k=3, rounds=30)
    observed: list[list[torch.Tensor]] = []
    # Our step() absorbs round r's messages at the start of round r+1, so after round r our
    # w equals the reference w after its local phase of round r.
    run_rounds(nodes, problem, rounds=30,
               on_round=lambda r: observed.append([n.w.clone() for n in nodes]))
    for r, (exp, obs) in enumerate(zip(expected, observed, strict=True)):
        for i, (a, b) in enumerate(zip(exp, obs, strict=True)):
            assert torch.allclose(a, b, atol=1e-12, rtol=0), f"round {r} node {i}"


def dual_rms_tail(nodes: list[PrimalDual], rounds: int, **kwargs: object) -> float:
    problem = LeastSquares.random(len(nodes), seed=3)
    tail: list[float] = []

    def record(r: int) -> None:
        if r >= rounds - 300:
            tail.append(sum(n.dual_norm() or 0.0 for n in nodes) / len(nodes))

    run_rounds(nodes, problem, rounds, on_round=record, seed=4, **kwargs)  # type: ignore[arg-type]
    return sum(tail) / len(tail)


def test_denoising_bounds_the_dual_norm_under_message_noise() -> None:
    """docs/DESIGN.md §1: per-edge dual noise with α = 0 inflates the duals; γ = 0.1 does not."""
    ring = nx.cycle_graph(6)
    problem = LeastSquares.random(6, seed=3)
    rounds, sigma, lr = 3000, 0.02, 0.05

    def nodes(gamma: float = 0.0) -> list[PrimalDual]:
        return primal_dual_nodes(ring, problem, lr=lr, local_steps=1, gamma=gamma)

    def noise() -> GaussianNoise:
        return GaussianNoise(sigma, torch.Generator().manual_seed(5))

    clean = dual_rms_tail(nodes(), rounds)
    noisy = dual_rms_tail(nodes(), rounds, noise=noise)
    denoised = dual_rms_tail(nodes(gamma=0.1), rounds, noise=noise)
    gradient_noise = dual_rms_tail(nodes(), rounds, grad_noise=sigma * 20)
    print(f"dual RMS clean={clean:.4f} noisy/clean={noisy / clean:.2f} "
          f"denoised/clean={denoised / clean:.2f} gradnoise/clean={gradient_noise / clean:.2f}")
    assert noisy > 2.0 * clean
    assert denoised < 1.25 * clean
    assert gradient_noise < 1.5 * clean


def test_dual_noise_random_walk_grows_like_sqrt_rounds_without_alpha() -> None:
    """b.5: with κ = 1 the noise part of the duals is a random walk; with κ < 1 it plateaus."""
    ring = nx.cycle_graph(6)
    problem = LeastSquares.random(6, seed=3)

    def norms(gamma: float) -> list[float]:
        nodes = primal_dual_nodes(ring, problem, lr=0.05, local_steps=1, gamma=gamma)
        out: list[float] = []
        run_rounds(
            nodes, problem, 1600, seed=6,
            noise=lambda: GaussianNoise(0.05, torch.Generator().manual_seed(7)),
            on_round=lambda r: out.append(sum(n.dual_norm() or 0.0 for n in nodes) / 6),
        )
        return out

    walk, bounded = norms(0.0), norms(0.2)
    assert walk[1599] > 1.5 * walk[399]  # √4 = 2 for a pure walk
    assert bounded[1599] < 1.2 * bounded[399]


def test_message_noise_continuation_is_what_neighbours_reconstruct() -> None:
    params = PrimalDualParams(lr=0.1, eta=10.0, alpha=0.02)
    node = PrimalDual(1, [0, 2, 3], torch.randn(7, dtype=torch.float64), params)
    for j in node.duals:
        node.duals[j] = torch.randn(7, dtype=torch.float64)
    w_before = node.w.clone()
    msgs = node.messages({0, 2, 3}, GaussianNoise(0.3, torch.Generator().manual_seed(0)))
    # Each neighbour j knows z_{1|j} (it sent it) and recovers w + noise; their average is w'.
    estimates = [
        (params.kappa * node.duals[j] - y) / (2 * params.beta * node.signs[j])
        for j, y in msgs.items()
    ]
    joint = sum(estimates) / len(estimates)
    assert torch.allclose(joint, node.w, atol=1e-12)
    assert not torch.allclose(node.w, w_before)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 9),
    p=st.floats(0.3, 1.0),
    seed=st.integers(0, 10_000),
)
def test_dpsgd_mixing_preserves_the_network_average(
    n: int, p: float, seed: int
) -> None:
    from topologies import metropolis_hastings

    graph = nx.erdos_renyi_graph(n, p, seed=seed)
    if not nx.is_connected(graph):
        graph = nx.cycle_graph(n)
    weights = metropolis_hastings(graph)
    g = torch.Generator().manual_seed(seed)
    nodes = [
        Gossip(i, weights[i], torch.randn(4, generator=g, dtype=torch.float64), lr=0.1)
        for i in range(n)
    ]
    before = sum(node.w for node in nodes) / n
    sent = [node.w for node in nodes]  # absorb() rebinds w, so these stay the old values
    for node in nodes:
        node.absorb({j: sent[j] for j in node.neighbours})
    after = sum(node.w for node in nodes) / n
    assert torch.allclose(before, after, atol=1e-12)
    assert math.isfinite(float(after.sum()))


def test_local_sgd_gossip_takes_k_steps_then_mixes() -> None:
    """D-PSGD with K local steps (local-SGD gossip): K plain SGD steps, then one mixing."""
    from topologies import metropolis_hastings

    graph = GRAPHS["ring"]
    problem = LeastSquares.random(6, seed=8)
    weights = metropolis_hastings(graph)
    w0 = torch.zeros(problem.dim, dtype=torch.float64)
    nodes = [Gossip(i, weights[i], w0, lr=0.1, local_steps=3) for i in range(6)]
    expected = []
    for i in range(6):
        w = w0.clone()
        for _ in range(3):
            w = w - 0.1 * problem.grad(i, w)
        expected.append(w)
    run_rounds(nodes, problem, rounds=1)  # round 0: local phase only, mixing comes with round 1
    for i in range(6):
        assert torch.allclose(nodes[i].w, expected[i], atol=1e-12)
    mixed = [sum(weights[i][j] * expected[j] for j in weights[i]) for i in range(6)]
    for i, node in enumerate(nodes):
        node.absorb({j: expected[j] for j in node.neighbours})
        assert torch.allclose(node.w, mixed[i], atol=1e-12)
