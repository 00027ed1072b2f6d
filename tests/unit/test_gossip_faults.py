"""Fault layer: seeded, rates as configured, partitions cut and heal, delays reorder."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gossip.codec import Frame
from gossip.faults import Cut, FaultConfig, FaultyTransport


class Recorder:
    """A fake inner transport that records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.closed = False

    def send(self, peer: int, frames: Sequence[Frame]) -> bool:
        self.sent.append((peer, b"|".join(bytes(f) for f in frames)))
        return True

    async def recv(self) -> tuple[bytes, list[memoryview]]:
        raise NotImplementedError

    def close(self, *, linger_ms: int = 0) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run_layer(cfg: FaultConfig, n: int = 2000) -> tuple[Recorder, FaultyTransport]:
    inner = Recorder()
    layer = FaultyTransport(inner, 0, cfg, clock=Clock())
    for i in range(n):
        layer.send(1 + i % 3, [b"h", str(i).encode()])  # ASCII, so a flipped byte shows
    return inner, layer


def test_same_seed_same_faults_other_seed_other_faults() -> None:
    cfg = FaultConfig(drop=0.2, duplicate=0.1, corrupt=0.05, seed=7)
    a, b = run_layer(cfg)[0], run_layer(cfg)[0]
    c = run_layer(FaultConfig(drop=0.2, duplicate=0.1, corrupt=0.05, seed=8))[0]
    assert a.sent == b.sent
    assert a.sent != c.sent


def test_rates_are_roughly_as_configured_and_every_fault_is_counted() -> None:
    n = 10_000
    inner, layer = run_layer(FaultConfig(drop=0.1, duplicate=0.1, corrupt=0.05, seed=1), n)
    s = layer.stats
    assert 0.08 * n < s.dropped < 0.12 * n
    assert 0.08 * s.passed < s.duplicated < 0.12 * s.passed
    assert 0.03 * s.passed < s.corrupted < 0.07 * s.passed
    assert s.passed + s.dropped == n
    assert len(inner.sent) == s.passed + s.duplicated
    flipped = sum(any(b >= 0x80 for b in payload) for _, payload in inner.sent)
    assert s.corrupted <= flipped <= 2 * s.corrupted  # a corrupted message may be duplicated


def test_a_partition_cuts_during_its_window_and_heals() -> None:
    clock = Clock()
    inner = Recorder()
    cut = Cut.between(1.0, 2.0, edges=[(1, 0)])
    layer = FaultyTransport(inner, 0, FaultConfig(cuts=(cut,)), clock=clock)
    delivered = {}
    for t in [0.5, 1.0, 1.5, 1.999, 2.0, 3.0]:
        clock.t = t
        before = len(inner.sent)
        layer.send(1, [b"x"])
        layer.send(2, [b"y"])  # a link outside the cut
        delivered[t] = [p for p, _ in inner.sent[before:]]
    assert delivered == {0.5: [1, 2], 1.0: [2], 1.5: [2], 1.999: [2], 2.0: [1, 2], 3.0: [1, 2]}
    assert layer.stats.cut == 3
    isolate = Cut.between(0.0, 1.0, nodes=[0])
    assert isolate.cuts(0, 5, 0.5) and not isolate.cuts(3, 5, 0.5) and not isolate.cuts(0, 5, 1)


def test_reorder_and_jitter_deliver_everything_out_of_order() -> None:
    async def scenario() -> tuple[Recorder, FaultyTransport]:
        inner = Recorder()
        layer = FaultyTransport(inner, 0, FaultConfig(reorder=0.3, reorder_ms=5, seed=3))
        for i in range(200):
            layer.send(1, [i.to_bytes(4, "little")])
            await asyncio.sleep(0)  # let earlier timers run in between
        await asyncio.sleep(0.05)
        return inner, layer

    inner, layer = asyncio.run(scenario())
    order = [int.from_bytes(p, "little") for _, p in inner.sent]
    assert sorted(order) == list(range(200))
    assert order != list(range(200))
    assert layer.stats.reordered == layer.stats.delayed > 0


def test_close_cancels_pending_delays() -> None:
    async def scenario() -> Recorder:
        inner = Recorder()
        layer = FaultyTransport(inner, 0, FaultConfig(jitter_ms=50))
        for _ in range(10):
            layer.send(1, [b"x"])
        layer.close()
        await asyncio.sleep(0.08)
        return inner

    inner = asyncio.run(scenario())
    assert inner.sent == [] and inner.closed


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        FaultConfig(drop=1.5)
