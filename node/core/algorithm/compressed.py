"""Both algorithm families with compressed messages and error feedback (`--compress`).

Each directed edge i→j carries one stream: a public copy that node i keeps of what it sent and
node j of what it received, equal bit for bit because both apply the same payloads with the
same code (`node.core.algorithm.compression`). Compression acts on the message a node would
have sent uncompressed — after its DP noise — and on that copy, never on private state directly.

Primal-dual family (ECL / DP-Norm). Uncompressed, node i sends j the noised dual message
y_{i|j} = κ·z_{i|j} − 2β·A_{i|j}·w_i + ξ_{ij} and j sets z_{j|i} ← (1−θ)·z_{j|i} + θ·y_{i|j}.
Compressed, the edge's copy ŷ_{i|j} stands in for y_{i|j}:

    i:  q = C(y_{i|j} − ŷ_{i|j});  ŷ_{i|j} ← ŷ_{i|j} + q;  send q
    j:  ŷ_{i|j} ← ŷ_{i|j} + q;     z_{j|i} ← (1−θ)·z_{j|i} + θ·ŷ_{i|j}

The residual e = y − ŷ is not lost but compressed next round together with the new change:
y' − ŷ = (y' − y) + e (error feedback). With a contractive C (E‖x − C(x)‖² ≤ (1 − δ)‖x‖²) the
residual stays a bounded multiple of the per-round change of y, which vanishes as the duals
converge, so the fixed point is ECL's. ŷ is a function of the sent (noised) messages only, so
DP-Norm's message-mode guarantee holds as it is: the node's hidden state and noise are exactly
the uncompressed ones, and what leaves is a post-processing of what would have left.
With compression off (C = identity: topk:1 or randk:1, whose payload writes y's values into ŷ)
ŷ_{i|j} = y_{i|j} exactly, so every z and w is ECL's bit for bit (tests/sim/test_compressed_gossip).

Gossip family (D-PSGD), CHOCO-SGD (Koloskova, Stich & Jaggi, ICML 2019) with one copy x̂_{i→j}
per edge rather than one per node (same bytes; each edge resynchronises on its own):

    x_i ← x_i − lr·g_i                          (K local steps)
    q = C(x_i − x̂_{i→j});  x̂_{i→j} ← x̂_{i→j} + q;  send q to j
    x_i ← x_i + γ·Σ_j W_ij·(x̂_{j→i} − x̂_{i→j})    (j's copy updated with its q first)

W is symmetric, so the sum over all nodes of the mixing terms is zero: the average model moves
only by the gradients, as in D-PSGD. With C = identity and γ = 1 it is D-PSGD up to the order
of floating-point additions. γ < 1 (`consensus_step`) is CHOCO's consensus step size.

A neighbour whose copy is not trusted (a lost message; see `Exchange`) counts as absent: its
dual is kept, its mixing weight goes back to self. After skipped rounds (a restart or a rejoin)
both ends of each affected edge resynchronise at once (`resync`): the next message each way is a
reset, rather than a delta the other end would ignore until the periodic reset.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import Tensor

from gossip.messages import Packed
from node.core.algorithm.compression import Compressor, Exchange, Quantize, RandK, TopK
from node.core.algorithm.gossip import Gossip
from node.core.algorithm.primal_dual import PrimalDual, PrimalDualParams
from node.core.algorithm.round import DualNoise, Outgoing
from node.core.seeds import compression_seed


def consensus_step(compressor: Compressor) -> float:
    """CHOCO's γ for a compressor: 1 for fine quantisation, less the coarser the messages.

    A heuristic, not tuned: the theory's γ (of order δ·spectral gap) is far too cautious in
    practice, and top-k's effective δ is much better than its nominal k/d, so √(k/d) is used;
    int4 gets 0.5. scripts/bench_bytes.py measures the result.
    """
    if isinstance(compressor, Quantize):
        return 1.0 if compressor.bits == 8 else 0.5
    if isinstance(compressor, TopK | RandK):
        return min(1.0, math.sqrt(compressor.fraction))
    return 1.0


class CompressedPrimalDual(PrimalDual):
    """ECL / DP-Norm whose dual messages travel compressed with error feedback."""

    def __init__(self, node: int, neighbours: Sequence[int], w0: Tensor,
                 params: PrimalDualParams, compressor: Compressor,
                 generator: torch.Generator) -> None:
        super().__init__(node, neighbours, w0, params)
        self.exchange = Exchange(self.neighbours, self.w.numel(), compressor, generator)

    def messages(self, active: Collection[int], noise: DualNoise) -> Mapping[int, Outgoing]:
        out: dict[int, Packed] = self.exchange.send(self.dual_messages(active, noise))
        return out

    def absorb(self, received: Mapping[int, Outgoing]) -> None:
        super().absorb(self.exchange.receive(received))

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.exchange.resync()

    def resync(self, peers: Collection[int] | None = None) -> None:
        self.exchange.resync(peers)


class ChocoGossip(Gossip):
    """D-PSGD with CHOCO-SGD's compressed gossip."""

    def __init__(self, node: int, weights: Mapping[int, float], w0: Tensor, lr: float,
                 compressor: Compressor, generator: torch.Generator, *, local_steps: int = 1,
                 weight_decay: float = 0.0, gamma: float | None = None) -> None:
        super().__init__(node, weights, w0, lr, local_steps=local_steps,
                         weight_decay=weight_decay)
        self.gamma = consensus_step(compressor) if gamma is None else gamma
        self.exchange = Exchange(self.neighbours, self.w.numel(), compressor, generator)
        self.heard: dict[int, Tensor] = {}

    def messages(self, active: Collection[int], noise: DualNoise) -> Mapping[int, Outgoing]:
        dense = super().messages(active, noise)
        out: dict[int, Packed] = self.exchange.send(
            {j: y for j, y in dense.items() if isinstance(y, Tensor)})
        return out

    def absorb(self, received: Mapping[int, Outgoing]) -> None:
        self.heard = self.exchange.receive(received)
        if not self.heard:
            return
        if self.robust is not None:  # clipped around our own public copy x̂_{i→j}
            self.heard = self.robust.apply(
                self.heard, {j: self.exchange.sent_copy(j) for j in self.heard}, self.own_move())
        pull = torch.zeros_like(self.w)
        for j, copy in self.heard.items():
            pull.add_(copy - self.exchange.sent_copy(j), alpha=self.weights[j])
        self.w = self._w_mixed = self.w + self.gamma * pull

    def neighbour_models(self, received: Mapping[int, Outgoing]) -> dict[int, Tensor]:
        return dict(self.heard)

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.exchange.resync()

    def resync(self, peers: Collection[int] | None = None) -> None:
        self.exchange.resync(peers)


def with_compression(algorithm: PrimalDual | Gossip, compressor: Compressor | None, *,
                     seed: int) -> PrimalDual | Gossip:
    """The same node with compressed messages (unchanged when `compressor` is None). Its
    randomness is public and reproducible (seeded by the run's seed and the node): it touches
    only what is released anyway."""
    if compressor is None:
        return algorithm
    gen = torch.Generator().manual_seed(compression_seed(seed, algorithm.node))
    if isinstance(algorithm, PrimalDual):
        return CompressedPrimalDual(algorithm.node, algorithm.neighbours, algorithm.w,
                                    algorithm.params, compressor, gen)
    weights = {**algorithm.weights, algorithm.node: algorithm.self_weight}
    return ChocoGossip(algorithm.node, weights, algorithm.w, algorithm.lr, compressor, gen,
                       local_steps=algorithm.k, weight_decay=algorithm.weight_decay)
