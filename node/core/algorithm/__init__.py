"""The algorithm sub-room of core: what a node does with gradients and messages in a round —
the primal-dual step (DP-Norm, ECL; `primal_dual`) and gossip (D-PSGD; `gossip`) on the round
they share (`round`), message compression with error feedback (`compression`, `compressed`),
and the robust rules for what a node received (`robust`).

Rule 1: this `__init__` is the sub-room's door; every other room, the rest of core included,
imports what it needs from `node.core.algorithm`, never from a module inside it.
Rule 2: like all of core, synchronous and without I/O; it imports only `node.config`,
`node.errors`, `node.core.seeds`, `privacy`, `topologies` and `gossip`'s pure message types.
"""

from __future__ import annotations

from node.core.algorithm.compressed import with_compression
from node.core.algorithm.compression import make_compressor
from node.core.algorithm.gossip import Gossip
from node.core.algorithm.primal_dual import PrimalDual, PrimalDualParams, default_eta
from node.core.algorithm.robust import RobustRule
from node.core.algorithm.round import DualNoise, NoNoise, Outgoing

# The algorithms a node can run: what `node.core.assemble.build_node` makes.
Algorithm = PrimalDual | Gossip

__all__ = [
    "Algorithm",
    "DualNoise",
    "Gossip",
    "NoNoise",
    "Outgoing",
    "PrimalDual",
    "PrimalDualParams",
    "RobustRule",
    "default_eta",
    "make_compressor",
    "with_compression",
]
