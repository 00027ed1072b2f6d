"""Every node in one process, no sockets: the simulator (the daemon's code path) and the
server-based references (FedAvg, SCAFFOLD, solo, pooled).

Rule 1: a simulated node runs exactly the core's code, never a copy. Rule 2: it imports core,
outputs and below, never the daemon or the tools.
"""
