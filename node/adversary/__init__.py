"""The adversary: what a Byzantine neighbour sends (`attacks`): the simulated attackers of the
robustness study and the hostile daemons of the chaos tooling run the same functions.

Rule 1: no honest code may import it: only `node.tools` and `node.experiments` do, so a node's
own code path can never reach an attack (tests/unit/test_layering.py).
Rule 2: it imports only `node.config`, `node.errors` and core's doors; no I/O.
"""

from __future__ import annotations

from node.adversary.attacks import ATTACKS, View, attack_message, fake_model, flipped_labels

__all__ = [
    "ATTACKS",
    "View",
    "attack_message",
    "fake_model",
    "flipped_labels",
]
