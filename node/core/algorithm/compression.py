"""Compressors and the public copies that make compressed messages exact at both ends.

A compressor turns a message target y (a noised dual, or a model) into a small payload
relative to the *public copy* ŷ that sender and receiver share; both then apply the payload to
their copy with the same function (`apply`), so the copies stay bit-identical. What is carried
forward is the residual y − ŷ: error feedback in the CHOCO-SGD form (Koloskova, Stich & Jaggi,
ICML 2019), ŷ ← ŷ + C(y − ŷ).

    topk:F    the k = ⌈F·d⌉ coordinates of largest |y − ŷ|; they travel as indices and the new
              values y there (ŷ_S ← y_S, which is ŷ + C(y − ŷ) done without rounding)
    randk:F   k coordinates drawn from a seed (`random_indices`), which travels instead of them
    int8/int4 ŷ ← ŷ + s·q, q = stochastic rounding of (y − ŷ)/s to [−L, L], s = max|y − ŷ|/L,
              L = 127 or 7: unbiased, one scale per message

`:float16` (or `:bfloat16`) sends sparse values in half precision; they are rounded here, so
the sender's copy holds what the receiver decodes.

Randomness (which coordinates, how to round) comes from an explicit generator and never from
the private data, and every payload is a function of the message it compresses and of earlier
payloads only: compression after the DP noise is post-processing (docs/PRIVACY.md).

Copies resynchronise by themselves. A stream's first message, every RESET_EVERY-th one, and
the first after a round it skipped are *resets* (`reset`): int8 of y itself, which replaces ŷ.
A receiver that closes a round without its neighbour's message no longer trusts its copy and
ignores the neighbour until the next reset (the message may have been sent and lost).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from gossip.floats import round_to
from gossip.messages import Packed, Quantized, Seeded, Sparse, ValueDtype
from node.config import compress_spec

logger = logging.getLogger(__name__)

RESET_EVERY = 50
_MASK64 = (1 << 64) - 1
Payload = Tensor | Packed
"""What a node sends a neighbour: a dense tensor (no compression) or a compressed payload."""


class Compressor(Protocol):
    """Turns a target y into a payload relative to the public copy ŷ (never modified here)."""

    def pack(self, target: Tensor, copy: Tensor, gen: torch.Generator) -> Packed: ...


@dataclass(frozen=True)
class TopK:
    fraction: float
    value_dtype: ValueDtype = "float32"

    def pack(self, target: Tensor, copy: Tensor, gen: torch.Generator) -> Packed:
        k = kept(self.fraction, target.numel())
        chosen = torch.topk((target - copy).abs(), k, sorted=False).indices.sort().values
        values, dtype = _values(target[chosen], self.value_dtype)
        return Sparse(target.numel(), chosen.numpy().astype(np.uint32), values, dtype)


@dataclass(frozen=True)
class RandK:
    fraction: float
    value_dtype: ValueDtype = "float32"

    def pack(self, target: Tensor, copy: Tensor, gen: torch.Generator) -> Packed:
        d = target.numel()
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        values, dtype = _values(target[random_indices(d, kept(self.fraction, d), seed)],
                                self.value_dtype)
        return Seeded(d, seed, values, dtype)


@dataclass(frozen=True)
class Quantize:
    bits: Literal[8, 4]

    def pack(self, target: Tensor, copy: Tensor, gen: torch.Generator) -> Packed:
        return quantize(target - copy, self.bits, gen, reset=False)


def reset(compressor: Compressor, target: Tensor, gen: torch.Generator) -> Packed:
    """A payload that replaces the copy: int8 of y, or y itself for a sparsifier keeping every
    coordinate (the identity, so that compression off stays exact)."""
    if isinstance(compressor, TopK | RandK) and kept(compressor.fraction, target.numel()) \
            == target.numel():
        values, dtype = _values(target, compressor.value_dtype)
        return Sparse(target.numel(), np.arange(target.numel(), dtype=np.uint32), values, dtype,
                      reset=True)
    return quantize(target, 8, gen, reset=True)


def kept(fraction: float, dim: int) -> int:
    """How many coordinates a sparsifier keeps: ⌈F·d⌉, at least one."""
    return max(1, min(dim, math.ceil(fraction * dim)))


def _values(x: Tensor, dtype: ValueDtype) -> tuple[np.ndarray, ValueDtype]:
    """x as float32 numbers of `dtype` (float32 for the message if half precision overflows)."""
    raw = x.detach().numpy().astype(np.float32)
    rounded = round_to(raw, dtype)
    if dtype != "float32" and not np.isfinite(rounded).all():
        return raw, "float32"
    return rounded, dtype


def quantize(delta: Tensor, bits: Literal[8, 4], gen: torch.Generator, *,
             reset: bool) -> Quantized:
    """Unbiased stochastic rounding of `delta` to scale·q, q ∈ [−L, L], scale = max|delta|/L."""
    level = 127 if bits == 8 else 7
    top = float(delta.abs().max()) if delta.numel() else 0.0
    scale = float(np.float32(top / level))
    if scale == 0.0 or not math.isfinite(scale):
        codes = torch.zeros(delta.numel(), dtype=torch.int8)
        scale = 0.0
    else:
        u = torch.rand(delta.numel(), generator=gen)
        magnitude = torch.floor(delta.abs() / scale + u).clamp_(max=level)
        codes = (magnitude * torch.sign(delta)).to(torch.int8)
    return Quantized(delta.numel(), bits, scale, codes.numpy(), reset)


def random_indices(dim: int, k: int, seed: int) -> Tensor:
    """k distinct coordinates of a d-vector from `seed`: t ↦ (a·t + b) mod d for t < k, with b
    uniform and a coprime to d (so distinct). Every coordinate is chosen with probability k/d,
    which is all random-k's contraction E‖x − C(x)‖² = (1 − k/d)‖x‖² needs; integer arithmetic
    only, so both ends agree on any platform."""
    s1 = _splitmix64(seed)
    s2 = _splitmix64(s1)
    b = s1 % dim
    a = 1 + s2 % (dim - 1) if dim > 1 else 1
    while math.gcd(a, dim) != 1:
        a = a % (dim - 1) + 1
    t = torch.arange(k, dtype=torch.int64)
    return (t * a + b) % dim


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def apply(copy: Tensor, p: Packed) -> None:
    """Apply payload `p` to a public copy in place: what sender and receiver both do."""
    if isinstance(p, Quantized):
        step = torch.tensor(p.codes, dtype=torch.float32).mul_(p.scale)
        if p.reset:
            copy.copy_(step)
        else:
            copy.add_(step)
        return
    if isinstance(p, Sparse):
        where = torch.tensor(p.indices.astype(np.int64))
    else:
        where = random_indices(p.dim, len(p.values), p.seed)
    if p.reset:
        copy.zero_()
    copy[where] = torch.tensor(p.values, dtype=torch.float32)


def make_compressor(spec: str) -> Compressor | None:
    """The compressor of a `compress` setting; None for "none"."""
    kind, fraction, dtype = compress_spec(spec)
    value_dtype: ValueDtype = "float16" if dtype == "float16" else \
        "bfloat16" if dtype == "bfloat16" else "float32"
    if kind == "topk":
        return TopK(fraction, value_dtype)
    if kind == "randk":
        return RandK(fraction, value_dtype)
    if kind in ("int8", "int4"):
        return Quantize(8 if kind == "int8" else 4)
    return None


@dataclass
class _Stream:
    copy: Tensor
    sent: int = 0  # messages so far
    last_round: int | None = None  # the round of the last message
    synced: bool = False  # receiving side: whether the copy is known to match the sender's


@dataclass
class Exchange:
    """One node's compressed streams: a public copy per neighbour of what it sent there
    (outgoing) and of what that neighbour sent here (incoming)."""

    neighbours: Collection[int]
    dim: int
    compressor: Compressor
    generator: torch.Generator
    rounds: int = 0  # rounds closed (`receive` calls)
    ignored: Counter[int] = field(default_factory=Counter)
    out: dict[int, _Stream] = field(init=False)
    into: dict[int, _Stream] = field(init=False)

    def __post_init__(self) -> None:
        self.out = {j: _Stream(torch.zeros(self.dim)) for j in self.neighbours}
        self.into = {j: _Stream(torch.zeros(self.dim)) for j in self.neighbours}

    def send(self, targets: Mapping[int, Tensor]) -> dict[int, Packed]:
        """Payloads for this round's targets; each outgoing copy moves as its receiver's will."""
        out: dict[int, Packed] = {}
        for j, y in targets.items():
            stream = self.out[j]
            fresh = stream.last_round is None or stream.last_round != self.rounds - 1 \
                or stream.sent % RESET_EVERY == 0
            p = reset(self.compressor, y, self.generator) if fresh \
                else self.compressor.pack(y, stream.copy, self.generator)
            apply(stream.copy, p)
            stream.sent += 1
            stream.last_round = self.rounds
            out[j] = p
        return out

    def receive(self, received: Mapping[int, Payload]) -> dict[int, Tensor]:
        """Close a round: apply what arrived; returns the incoming copies that may be used."""
        usable: dict[int, Tensor] = {}
        for j, stream in self.into.items():
            p = received.get(j)
            if p is None:
                stream.synced = False  # it may have been sent and lost: wait for a reset
                continue
            if isinstance(p, Tensor) or p.dim != self.dim:
                self._ignore(j, "an uncompressed or mis-sized message")
                stream.synced = False
                continue
            if p.reset:
                stream.synced = True
            if stream.synced:
                apply(stream.copy, p)
                usable[j] = stream.copy
        self.rounds += 1
        return usable

    def sent_copy(self, j: int) -> Tensor:
        return self.out[j].copy

    def resync(self, peers: Collection[int] | None = None) -> None:
        """After a restart or skipped rounds: no copy shared with `peers` (None: all) is
        trusted, and each of their streams starts again with a reset."""
        chosen = self.out.keys() if peers is None else [j for j in peers if j in self.out]
        for j in chosen:
            for stream in (self.out[j], self.into[j]):
                stream.synced, stream.last_round = False, None

    def _ignore(self, j: int, what: str) -> None:
        if not self.ignored[j]:
            logger.warning("ignoring %s from neighbour %d (is compress the same on both?)",
                           what, j)
        self.ignored[j] += 1
