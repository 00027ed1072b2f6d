"""dpnorm's node: one house, seven rooms. Each room imports only the rooms to its left:

    config, errors, cli  <-  core  <-  outputs  <-  sim, daemon  <-  tools, experiments  <-  scripts
                             core  <-  adversary  <-  tools, experiments

- `core`: node assembly, the synchronous round driver and the privacy mechanism at its door,
  and three sub-rooms entered by their `__init__`: `algorithm` (DP-Norm and its baselines),
  `data`, `model` (models, gradient oracles) — pure: no sockets, no clock, no threads;
- `adversary`: the Byzantine attacks, importable only by `tools` and `experiments`;
- `outputs`: the files a run leaves behind (metrics.jsonl, final.json, summary.json);
- `daemon`: one node as an asyncio process — settings, event loop, checkpoints, `python -m node`;
- `sim`: every node in one process (and the server-based references), no sockets;
- `tools`: launching daemons on this machine or on a LAN, and the chaos scenarios; they read the
  daemon's file formats but never run its event loop;
- `experiments`: the grid engine (`grid`: simulated runs, tuning, results, figures) and the
  studies run on it (`studies`), the only matplotlib.

`tests/unit/test_layering.py` enforces the rule; `ARCHITECTURE.md` shows how a round flows.
"""
