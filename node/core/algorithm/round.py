"""The round every algorithm of a node keeps: its interface (`RoundAlgorithm`), the message
it sends (`Outgoing`), its gradient oracle and the dual-noise source it is handed; the
families are `node.core.algorithm.primal_dual` and `node.core.algorithm.gossip`.

One round of a node is `absorb(received)` (the neighbours' messages of the previous round),
`local_steps(oracle, active)` (K steps with gradients from `oracle`) and `messages(active,
noise)` (what to send this round); `node.core.runner.NodeRunner` drives them. No sockets, no
clock, no global RNG: the simulator and the daemon drive the same code.

`E_i` is the number of *active* neighbours this round (the runtime decides who is up); a down
neighbour's edge leaves the primal update and receives no message until it is heard from again.

Compressed messages (error feedback for both families) are `node.core.algorithm.compressed`; these
classes exchange dense tensors and treat a compressed payload as a message that did not arrive.

Rounds a node skips (it restarted from a checkpoint, was frozen or cut off, and rejoins at its
neighbours' round; gossip/protocol.py) need no repair of this state in either family:
- primal-dual: PDMM's iteration is an averaged operator on the duals, and a node that takes no
  part in some rounds is a coordinate not updated in those rounds; its neighbours kept their
  z_{j|i} (a missing message keeps the old dual), it kept its z_{i|j} and w_i. Restoring an older
  checkpoint only moves the starting point of that block, from which the randomised
  block-coordinate iteration converges as from any other (Combettes & Pesquet, SIAM J. Optim.
  25(2), 2015; asynchronous PDMM: Sherson, Heusdens & Kleijn, IEEE TSIPN 5(2), 2019). With θ = 1
  the first exchange replaces both ends' duals of each edge. In message mode a skipped round
  releases nothing, so there is no noise to continue from (and nothing is charged).
- gossip: the neighbours mixed with the skipping node's weight on themselves (rows still sum to
  one); on return its stale w_i is pulled in by the ordinary mixing.
The one state that must be repaired is the compressed streams' shared copies, which assume that
both ends saw every message (`resync`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

import torch
from torch import Tensor

from gossip.messages import Packed
from node.core.algorithm.robust import RobustRule

Outgoing = Tensor | Packed
"""One message to one neighbour: a dense tensor, or a compressed payload
(node.core.algorithm.compressed)."""

GradientOracle = Callable[[Tensor], tuple[Tensor, float]]
"""Maps the current flat parameters to (gradient estimate, training loss on the batch)."""


class DualNoise(Protocol):
    """Source of the independent per-edge noise ξ_{ij} added to outgoing duals (message mode)."""

    @property
    def std(self) -> float: ...

    def sample(self, numel: int) -> Tensor: ...


class NoNoise:
    """ξ = 0: ECL, gradient-mode DP and non-private runs."""

    std = 0.0

    def sample(self, numel: int) -> Tensor:
        return torch.zeros(numel)



class RoundAlgorithm(ABC):
    """What every algorithm of a node does in a round, in the order `NodeRunner` calls it:
    `local_steps`, `messages` (its `step`), then `absorb` when the round closes."""

    # --robust (node.core.algorithm.robust), set by assemble: None leaves every update as it
    # is, bit for bit.
    robust: RobustRule | None = None

    def robust_state(self) -> dict[str, Tensor]:
        """What --robust remembers across rounds, for the checkpoint (empty without it): a
        restarted node keeps its verdicts on its neighbours."""
        return {} if self.robust is None else self.robust.state_dict()

    def load_robust_state(self, state: Mapping[str, Tensor]) -> None:
        if self.robust is not None:
            self.robust.load_state_dict(state)

    def resync(self, peers: Collection[int] | None = None) -> None:
        """Messages with `peers` (None: every neighbour) were not exchanged for some rounds.
        Dense messages carry their whole value, so there is nothing to repair (module doc)."""
        return None  # compressed streams override this (node.core.algorithm.compressed)

    @abstractmethod
    def absorb(self, received: Mapping[int, Outgoing]) -> None: ...

    @abstractmethod
    def local_steps(self, oracle: GradientOracle, active: Collection[int]) -> float: ...

    @abstractmethod
    def messages(self, active: Collection[int], noise: DualNoise) -> Mapping[int, Outgoing]: ...

