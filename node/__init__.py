"""dpnorm's node: one house, six rooms. Each room imports only the rooms to its left:

    config, errors, cli  <-  core  <-  outputs  <-  sim, daemon  <-  tools, experiments  <-  scripts

- `core`: the algorithm (DP-Norm and its baselines), models, data, gradient oracles, the
  synchronous round driver and node assembly — pure: no sockets, no clock, no threads;
- `outputs`: the files a run leaves behind (metrics.jsonl, final.json, summary.json);
- `daemon`: one node as an asyncio process — settings, event loop, checkpoints, `python -m node`;
- `sim`: every node in one process (and the server-based references), no sockets;
- `tools`: launching daemons on this machine or on a LAN, and the chaos scenarios; they read the
  daemon's file formats but never run its event loop;
- `experiments`: grids of simulated runs, results, reports and figures (the only matplotlib).

`tests/unit/test_layering.py` enforces the rule; `ARCHITECTURE.md` shows how a round flows.
"""
