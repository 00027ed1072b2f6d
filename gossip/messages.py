"""The five messages neighbours exchange, as frozen dataclasses.

When each is sent (the contract; the wire format is in `gossip.codec` and `PROTOCOL.md`):

- `Hello`     once per neighbour at start-up (and after a restart): who I am, my model size and
              the round I am about to run. A neighbour with another `dim` is refused by the codec.
- `Dual`      once per round per neighbour j: the (noisy) dual y_{i|j} addressed to j alone.
- `Primal`    optionally once per round to every neighbour: w_i, for monitoring consensus.
- `Heartbeat` only to a neighbour we sent nothing else to for one heartbeat interval, and in
              answer to its `Hello`; an answer also tells the neighbour how far its rounds went
              before that Hello (`high_water`), which a node restored from a backup does not know.
- `Bye`       at shutdown, with a reason; the receiver marks us down at once.

Every message carries `sender` (node id), `round` and `seq`: a per-sender sequence number that
increases with every message the sender emits, to any neighbour. Receivers reject a `seq` they
have already seen (see `gossip.inbox`). Any message counts as a sign of life.

A `Dual` carries either a dense tensor or one of three compressed forms (`Sparse`, `Seeded`,
`Quantized`); what a compressed dual means to its receiver (a delta to add, values to put in
place, or a reset) is the algorithm's business (`node.core.compression`), the wire only carries
it exactly. `Primal` is always dense.

Tensors are 1-D float32 numpy arrays on our side. They are shared with the transport without a
copy, so an array handed to `Dual`/`Primal` must not be modified afterwards. Equality compares
payloads element-wise, so `decode(encode(m)) == m` is meaningful.

A node's id travels twice: in every header (`sender`) and, outside the message, as the identity
the transport reports (the DEALER's routing identity, or with CURVE the id bound to the
authenticated key). `parse_peer_id` is the one reading of the latter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_PEER_ID",
    "Bye",
    "Dual",
    "DualPayload",
    "Heartbeat",
    "Hello",
    "Message",
    "Packed",
    "PeerId",
    "Primal",
    "Quantized",
    "Seeded",
    "Sparse",
    "Tensor",
    "TensorMessage",
    "ValueDtype",
    "parse_peer_id",
]

PeerId: TypeAlias = int
Tensor: TypeAlias = npt.NDArray[np.float32]
ValueDtype: TypeAlias = Literal["float32", "float16", "bfloat16"]

# The largest node id a header may carry (msgpack's signed 32-bit range).
MAX_PEER_ID: Final = 2**31 - 1


def parse_peer_id(identity: bytes) -> PeerId | None:
    """The node id a transport identity names, or None if it names none.

    A node sets its identity to its id in canonical decimal (`str(id)`), and CURVE reports the
    id bound to the peer's key the same way. Anything else names no node: ZeroMQ's generated
    5-byte ids of peers that set none, an empty User-Id, signs, spaces, leading zeros (so that
    two different identities never count as the same peer) and ids out of a header's range.
    """
    if not identity or len(identity) > len(str(MAX_PEER_ID)) or not identity.isdigit():
        return None  # bytes.isdigit is ASCII-only: no other script's digits get through
    if identity[:1] == b"0" and len(identity) > 1:
        return None
    peer = int(identity)
    return peer if peer <= MAX_PEER_ID else None


@dataclass(frozen=True, slots=True)
class Hello:
    """Introduces the sender: its model size and the round it is about to run."""

    sender: PeerId
    round: int
    seq: int
    dim: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Says "still here" when nothing else was sent for a heartbeat interval.

    `high_water` is set only in an answer to the receiver's Hello (None otherwise): 1 + the
    highest round of the *receiver's* whose dual or primal the sender had received before the
    receiver's latest Hello (0: none). A node sends Hellos only before its first round, so the
    number never counts a round of the receiver's present run: it tells a node restored from a
    backup which rounds it released before (gossip/PROTOCOL.md)."""

    sender: PeerId
    round: int
    seq: int
    high_water: int | None = None


@dataclass(frozen=True, slots=True)
class Bye:
    """Announces a graceful departure."""

    sender: PeerId
    round: int
    seq: int
    reason: str


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(frozen=True, slots=True, eq=False)
class Sparse:
    """Top-k: the values at `indices` (strictly increasing, each below `dim`) of a `dim`-vector.

    `values` are float32 holding numbers exactly representable in `value_dtype`, the dtype they
    travel in, so both ends see the same numbers. `reset`: the receiver's copy is replaced by
    the vector (zeros elsewhere) rather than updated.
    """

    dim: int
    indices: npt.NDArray[np.uint32]
    values: Tensor
    value_dtype: ValueDtype = "float32"
    reset: bool = False

    def __len__(self) -> int:
        return self.dim

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sparse):
            return NotImplemented
        return ((self.dim, self.value_dtype, self.reset)
                == (other.dim, other.value_dtype, other.reset)
                and bool(np.array_equal(self.indices, other.indices))
                and _same_tensor(self.values, other.values))


@dataclass(frozen=True, slots=True, eq=False)
class Seeded:
    """Random-k: `len(values)` values at positions both ends derive from `seed` (the rule is the
    algorithm's: `node.core.compression.random_indices`), so no indices travel."""

    dim: int
    seed: int
    values: Tensor
    value_dtype: ValueDtype = "float32"
    reset: bool = False

    def __len__(self) -> int:
        return self.dim

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Seeded):
            return NotImplemented
        return ((self.dim, self.seed, self.value_dtype, self.reset)
                == (other.dim, other.seed, other.value_dtype, other.reset)
                and _same_tensor(self.values, other.values))


@dataclass(frozen=True, slots=True, eq=False)
class Quantized:
    """A `dim`-vector as `scale * codes`: int8 codes in [-L, L], L = 2^(bits-1) - 1 (127 for 8
    bits, 7 for 4 bits, which travel two to a byte); `scale` is a finite float32 >= 0."""

    dim: int
    bits: Literal[8, 4]
    scale: float
    codes: npt.NDArray[np.int8]
    reset: bool = False

    def __len__(self) -> int:
        return self.dim

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantized):
            return NotImplemented
        return ((self.dim, self.bits, self.scale, self.reset)
                == (other.dim, other.bits, other.scale, other.reset)
                and bool(np.array_equal(self.codes, other.codes)))


Packed: TypeAlias = Sparse | Seeded | Quantized
DualPayload: TypeAlias = Tensor | Packed


def _same_payload(a: DualPayload, b: DualPayload) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return _same_tensor(a, b)
    return type(a) is type(b) and a == b


# eq=False with a hand-written __eq__: the generated one would compare arrays with `==`, whose
# truth value is ambiguous. The classes are then unhashable, which is right for mutable buffers.
@dataclass(frozen=True, slots=True, eq=False)
class Dual:
    """The dual variable y_{i|j} that node i sends to its neighbour j for one round (dense or
    compressed)."""

    sender: PeerId
    round: int
    seq: int
    payload: DualPayload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dual):
            return NotImplemented
        return (self.sender, self.round, self.seq) == (
            other.sender,
            other.round,
            other.seq,
        ) and _same_payload(self.payload, other.payload)


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
