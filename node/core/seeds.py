"""Every torch generator seed derived from a run's seed, in one place.

A run has one public `seed` (data order, initialisation, partition) and, for tests and
simulations only, a `noise_seed`. Each node's torch generators are seeded from them here:

    data_order_seed(seed, i)            Poisson sampling of node i's batches (public, reproducible)
    compression_seed(seed, i)           rand-k coordinates of node i's compressed messages (public:
                                        they touch only what is released anyway)
    noise_seed(base, i)                 node i's privacy noise; None = OS entropy, the default of
                                        any run that releases (base: noise_seed, or in simulation
                                        the run's seed)
    restart_noise_seed(base, i, r)      the same, for a fixed-seed node resuming at round r

Distinct nodes never share a seed within one stream: with the same seed two nodes' noise would be
the same draws, and with a noise seed from public values anyone could subtract the noise (which
is why a real run draws it from OS entropy). Streams are not kept apart from each other: with
seed 0 the simulator's noise_seed and data_order_seed of node i are both i. The values are kept
as they are so that recorded runs reproduce bit for bit.

The model's initialisation is `seed` itself (node.core.model.models); the numpy draws of partitions,
splits and hold-outs take `seed` with a stream constant of their own (node.core.data,
node.core.data.tables, node.core.assemble).
"""

from __future__ import annotations

__all__ = ["compression_seed", "data_order_seed", "noise_seed", "restart_noise_seed"]

# Above any node count (and round count), so that distinct (seed, node[, round]) give distinct
# seeds within a stream.
_DATA = 100_003
_NODE = 1_000_003
_ROUND = 1_000_033


def data_order_seed(seed: int, node: int) -> int:
    """Node `node`'s data-order generator (which examples each local step samples)."""
    return seed * _DATA + node


def compression_seed(seed: int, node: int) -> int:
    """Node `node`'s compression generator (rand-k coordinates)."""
    return (seed * _NODE + node) * 2 + 1


def noise_seed(base: int | None, node: int) -> int | None:
    """Node `node`'s fixed noise seed from an experiment's seed `base`; None = OS entropy."""
    return None if base is None else base * _NODE + node


def restart_noise_seed(base: int, node: int, round: int) -> int:
    """The seed a fixed-seed node reseeds with when it resumes at `round`: replaying round 0's
    draws after a restart would release two messages with the same noise."""
    return base * _NODE * _ROUND + node * _ROUND + round
