"""The neighbour protocol: messages, the wire codec, round bookkeeping and liveness (sans-I/O),
and the ZeroMQ transport that carries them.

Only `gossip.transport` and `gossip.faults` touch zmq sockets/asyncio (`gossip.keys` uses zmq's
CURVE key functions, no sockets); everything else is pure and takes time as an input.
Imports nothing of ours (not `node`, `privacy` or `topologies`: tests/unit/test_layering.py).
"""
