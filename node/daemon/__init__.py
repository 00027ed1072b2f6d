"""One node as a long-running process: its TOML settings, the asyncio event loop that joins the
core to ZeroMQ and the clock, checkpoints and resume, and `python -m node`.

Rule 1: only `loop` touches asyncio, sockets and the clock; `settings` and `state` are the
daemon's file formats, which the tools may read. Rule 2: it imports core, outputs and below.
"""
