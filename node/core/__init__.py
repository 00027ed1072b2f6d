"""The algorithm core: what one node computes, as synchronous code that takes time and
randomness as inputs.

Rule 1: everything that decides the numbers a node computes and releases lives here — the
algorithm step, models, data shards, gradient oracles, the privacy mechanism and its
calibration, node assembly.
Rule 2: no asyncio, zmq, subprocess, signal, threading or clock; it imports only `node.config`,
`node.errors`, `privacy`, `topologies` and `gossip`'s pure message types, never another room.
"""
