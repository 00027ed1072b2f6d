"""The five messages neighbours exchange, as frozen dataclasses.

When each is sent (the contract; the wire format is in `gossip.codec` and `PROTOCOL.md`):

- `Hello`     once per neighbour at start-up (and after a restart): who I am, my model size and
              the round I am about to run. A neighbour with another `dim` is refused by the codec.
- `Dual`      once per round per neighbour j: the (noisy) dual y_{i|j} addressed to j alone.
- `Primal`    optionally once per round to every neighbour: w_i, for monitoring consensus.
- `Heartbeat` only to a neighbour we sent nothing else to for one heartbeat interval.
- `Bye`       at shutdown, with a reason; the receiver marks us down at once.

Every message carries `sender` (node id), `round` and `seq`: a per-sender sequence number that
increases with every message the sender emits, to any neighbour. Receivers reject a `seq` they
have already seen (see `gossip.inbox`). Any message counts as a sign of life.

Tensors are 1-D float32 numpy arrays on our side. They are shared with the transport without a
copy, so an array handed to `Dual`/`Primal` must not be modified afterwards. Equality compares
payloads element-wise, so `decode(encode(m)) == m` is meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "Bye",
    "Dual",
    "Heartbeat",
    "Hello",
    "Message",
    "PeerId",
    "Primal",
    "Tensor",
    "TensorMessage",
]

PeerId: TypeAlias = int
Tensor: TypeAlias = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Hello:
    """Introduces the sender: its model size and the round it is about to run."""

    sender: PeerId
    round: int
    seq: int
    dim: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Says "still here" when nothing else was sent for a heartbeat interval."""

    sender: PeerId
    round: int
    seq: int


@dataclass(frozen=True, slots=True)
class Bye:
    """Announces a graceful departure."""

    sender: PeerId
    round: int
    seq: int
    reason: str


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


# eq=False with a hand-written __eq__: the generated one would compare arrays with `==`, whose
# truth value is ambiguous. The classes are then unhashable, which is right for mutable buffers.
@dataclass(frozen=True, slots=True, eq=False)
class Dual:
    """The dual variable y_{i|j} that node i sends to its neighbour j for one round."""

    sender: PeerId
    round: int
    seq: int
    payload: Tensor

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dual):
            return NotImplemented
        return (self.sender, self.round, self.seq) == (
            other.sender,
            other.round,
            other.seq,
        ) and _same_tensor(self.payload, other.payload)


@dataclass(frozen=True, slots=True, eq=False)
class Primal:
    """The sender's primal variable w_i after its round update (monitoring only)."""

    sender: PeerId
    round: int
    seq: int
    payload: Tensor

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Primal):
            return NotImplemented
        return (self.sender, self.round, self.seq) == (
            other.sender,
            other.round,
            other.seq,
        ) and _same_tensor(self.payload, other.payload)


TensorMessage: TypeAlias = Dual | Primal
Message: TypeAlias = Hello | Dual | Primal | Heartbeat | Bye
