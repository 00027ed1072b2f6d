"""The algorithm core: what one node computes, as synchronous code that takes time and
randomness as inputs.

Rule 1: everything that decides the numbers a node computes and releases lives here. At the
door: node assembly (`assemble`), the round (`runner`), the privacy mechanism (`mechanism`) and
its calibration (`privacy_plan`), the seeds (`seeds`); in three sub-rooms, each entered only by
its `__init__`: the algorithm step (`algorithm`), data and shards (`data`), models and
gradient oracles (`model`).
Rule 2: no asyncio, zmq, subprocess, signal, threading or clock; it imports only `node.config`,
`node.errors`, `privacy`, `topologies` and `gossip`'s pure message types, never another room.
"""
