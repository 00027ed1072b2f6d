"""One node as a long-running process: its TOML settings, the asyncio event loop that joins the
core to ZeroMQ and the clock, checkpoints and resume, `python -m node`, and the fork server's
template that pre-imports all that and forks nodes (`template`).

Rule 1: only `loop` touches asyncio, sockets and the clock (and `template` its launcher's
socket, never a node's); `settings` and `state` are the daemon's file formats, which the tools
may read. Rule 2: it imports core, outputs and below.
"""
