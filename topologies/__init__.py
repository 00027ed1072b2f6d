"""Communication graphs for dpnorm: builders, validation, edge signs, mixing weights.

Pure: imports networkx and numpy only, nothing of ours. Nodes are the integers 0..n-1.
"""

from topologies.builders import (
    SPECS,
    TopologyError,
    build,
    edge_sign,
    exponential,
    from_edgelist,
    line,
    max_degree,
    mesh,
    neighbours,
    ring,
    star,
    torus,
    torus_shape,
    validate,
)
from topologies.weights import metropolis_hastings, mixing_matrix, spectral_gap

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
    "metropolis_hastings",
    "mixing_matrix",
    "neighbours",
    "ring",
    "spectral_gap",
    "star",
    "torus",
    "torus_shape",
    "validate",
]
