"""The files a run leaves behind, and their one definition.

Rule 1: `<dir>/<node>/metrics.jsonl`, `final.json` and `summary.json` are written and read only
through this room, so their layout and keys (docs/CONTRACTS.md) are stated once.
Rule 2: it imports `node.core` and below, never the daemon, the simulator or the tools.
"""
