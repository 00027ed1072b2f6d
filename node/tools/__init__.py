"""Tooling around the daemons: a local launch (plan, processes, live view), N containers on a LAN
(compose) and the chaos scenarios.

Rule 1: tools talk to daemons only through processes, files and sockets. Rule 2: they may read
the daemon's file formats (`node.daemon.settings`, `node.daemon.state`), `outputs` and (for
chaos's hostile daemons) `node.adversary`, but never import its event loop (`node.daemon.loop`,
`node.daemon.main`), the simulator or experiments.
"""
