"""Metropolis–Hastings mixing weights and the spectral gap of a communication graph.

For an undirected graph with degrees d_i the Metropolis–Hastings weights are

    W_ij = 1 / (1 + max(d_i, d_j))   for each edge (i, j)
    W_ii = 1 − Σ_{j∈N_i} W_ij

W is symmetric and each row sums to 1, hence doubly stochastic: gossip averaging x ← W x keeps
the network mean. Every W_ii ≥ 1/(1 + d_i) > 0, so on a connected graph 1 is a simple eigenvalue
and all others have modulus < 1; the spectral gap 1 − |λ_2| sets the consensus rate
(Xiao & Boyd, "Fast linear iterations for distributed averaging", 2004).

>>> import networkx as nx
>>> round(spectral_gap(nx.complete_graph(4)), 6)
1.0
"""

from __future__ import annotations

import networkx as nx
import numpy as np

__all__ = ["metropolis_hastings", "mixing_matrix", "spectral_gap"]


def metropolis_hastings(g: nx.Graph) -> dict[int, dict[int, float]]:
    """Metropolis–Hastings weights as W[i][j], including the self weight W[i][i].

    Each node needs only its own and its neighbours' degrees, which is why the decentralised
    baselines (D-PSGD) use these weights: no node has to know the whole graph.
    """
    deg = {int(i): int(d) for i, d in g.degree}
    w: dict[int, dict[int, float]] = {}
    for i in sorted(deg):
        row = {int(j): 1.0 / (1.0 + max(deg[i], deg[int(j)])) for j in sorted(g.neighbors(i))}
        # Subtract in sorted order so W[i][i] is bit-for-bit reproducible across processes.
        row[i] = 1.0 - sum(row.values())
        w[i] = dict(sorted(row.items()))
    return w


def mixing_matrix(g: nx.Graph) -> np.ndarray:
    """The n×n Metropolis–Hastings matrix (float64), row i = node i."""
    n = g.number_of_nodes()
    m = np.zeros((n, n), dtype=np.float64)
    for i, row in metropolis_hastings(g).items():
        for j, wij in row.items():
            m[i, j] = wij
    return m


def spectral_gap(g: nx.Graph) -> float:
    """1 − second largest |eigenvalue| of the Metropolis–Hastings matrix; in (0, 1] if connected."""
    # W is symmetric, so eigvalsh is exact enough and returns real values.
    mods = np.sort(np.abs(np.linalg.eigvalsh(mixing_matrix(g))))[::-1]
    # Round-off can push 1 − |λ_2| a hair past 1 (e.g. complete graphs, where λ_2 = 0).
    return float(min(1.0, 1.0 - mods[1]))
