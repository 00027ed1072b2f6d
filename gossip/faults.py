"""A seeded fault layer around a transport's send side, for tests and chaos experiments.

`FaultyTransport(inner, me, FaultConfig(...))` has the `Transport` interface. Each outgoing
message independently, with the configured probabilities:

- is lost (`drop`), or
- is cut because its link is inside a partition window (`cuts`, see `Cut`), then never sent;
- otherwise may have one byte flipped (`corrupt`), be sent twice (`duplicate`), be held back
  so that later messages overtake it (`reorder`, by `reorder_ms`), and be delayed by a uniform
  `jitter_ms`.

A message dropped or cut here still makes `send` return True: to the sender it left, as on a
lossy network. Every decision draws the same number of values from one `random.Random(seed)`,
so a run is reproducible from its seed and the order of sends. `stats` counts every injected
fault. Delays use the running event loop's timers; `close` cancels what is still pending.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from gossip.codec import Frame
from gossip.messages import PeerId
from gossip.transport import Transport

__all__ = ["Cut", "FaultConfig", "FaultStats", "FaultyTransport"]


@dataclass(frozen=True, slots=True)
class Cut:
    """A partition: from `start` to `end` seconds after the layer was created, links are cut.

    A link a–b is cut if a or b is in `nodes` (isolate those nodes), or {a, b} is one of `edges`.
    """

    start: float
    end: float
    nodes: frozenset[PeerId] = frozenset()
    edges: frozenset[frozenset[PeerId]] = frozenset()

    @classmethod
    def between(
        cls,
        start: float,
        end: float,
        *,
        nodes: Collection[PeerId] = (),
        edges: Collection[tuple[PeerId, PeerId]] = (),
    ) -> Cut:
        """Build a cut from plain collections."""
        return cls(start, end, frozenset(nodes), frozenset(frozenset(e) for e in edges))

    @classmethod
    def parse(cls, text: str) -> tuple[Cut, ...]:
        """Cuts as a user writes them: "start:end:a-b,c-d" cuts links a–b and c–d,
        "start:end:n3" isolates node 3 (seconds after start-up); ";" separates several."""
        out = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            try:
                start, end, what = part.split(":", 2)
                begin, finish = float(start), float(end)
                nodes, edges = [], []
                for item in filter(None, what.split(",")):
                    if item.startswith("n"):
                        nodes.append(int(item[1:]))
                    else:
                        a, b = item.split("-")
                        edges.append((int(a), int(b)))
            except ValueError:
                raise ValueError(f"cannot read the cut {part!r}; write start:end:a-b,c-d or "
                                 "start:end:nK (seconds after start-up).") from None
            if not 0 <= begin < finish:
                raise ValueError(f"the cut {part!r} needs 0 <= start < end.")
            out.append(cls.between(begin, finish, nodes=nodes, edges=edges))
        return tuple(out)

    def spec(self) -> str:
        """The text `parse` reads back to this cut."""
        items = [f"n{k}" for k in sorted(self.nodes)]
        items += ["-".join(map(str, sorted(e))) for e in sorted(self.edges, key=sorted)]
        return f"{self.start!r}:{self.end!r}:{','.join(items)}"

    @property
    def peers(self) -> frozenset[PeerId]:
        """Every node the cut names."""
        return self.nodes.union(*self.edges)

    def cuts(self, a: PeerId, b: PeerId, t: float) -> bool:
        """Whether the link a–b is cut at time `t`."""
        return self.start <= t < self.end and (
            a in self.nodes or b in self.nodes or frozenset((a, b)) in self.edges
        )


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """What to inject; probabilities are per message, times in milliseconds unless noted."""

    drop: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 20.0
    jitter_ms: float = 0.0
    cuts: tuple[Cut, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "corrupt", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fault probability {name} must be in [0, 1].")
        if self.reorder_ms < 0 or self.jitter_ms < 0:
            raise ValueError("fault delays must be non-negative.")

    @property
    def enabled(self) -> bool:
        """Whether anything is injected at all (otherwise the transport is used directly)."""
        return any((self.drop, self.duplicate, self.corrupt, self.reorder, self.jitter_ms,
                    self.cuts))


@dataclass(slots=True)
class FaultStats:
    """How many messages went through and how many faults were injected."""

    passed: int = 0
    dropped: int = 0
    cut: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    delayed: int = 0


class FaultyTransport:
    """Wraps a transport and injects faults into what it sends; see the module docstring."""

    def __init__(
        self,
        inner: Transport,
        me: PeerId,
        config: FaultConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap `inner` (node `me`); partition windows count from now on `clock`."""
        self.inner = inner
        self.me = me
        self.config = config
        self.stats = FaultStats()
        self._rng = random.Random(config.seed)
        self._clock = clock
        self._t0 = clock()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._next_timer = 0

    def send(self, peer: PeerId, frames: Sequence[Frame]) -> bool:
        """Send through the fault model; True unless the inner transport refused at once."""
        cfg, rng = self.config, self._rng
        # Always draw the same values, so one decision never shifts the stream for the next.
        u_drop, u_dup, u_corrupt, u_reorder, u_jitter, u_pos = (rng.random() for _ in range(6))
        t = self._clock() - self._t0
        if any(c.cuts(self.me, peer, t) for c in cfg.cuts):
            self.stats.cut += 1
            return True
        if u_drop < cfg.drop:
            self.stats.dropped += 1
            return True
        if u_corrupt < cfg.corrupt:
            frames = _flip_one_byte(frames, u_pos)
            self.stats.corrupted += 1
        delay = u_jitter * cfg.jitter_ms / 1000.0
        if u_reorder < cfg.reorder:
            delay += cfg.reorder_ms / 1000.0
            self.stats.reordered += 1
        copies = 2 if u_dup < cfg.duplicate else 1
        self.stats.duplicated += copies - 1
        self.stats.passed += 1
        if delay <= 0.0:
            return all([self.inner.send(peer, frames) for _ in range(copies)])
        self.stats.delayed += 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            self._next_timer += 1
            self._timers[self._next_timer] = loop.call_later(
                delay, self._fire, self._next_timer, peer, frames
            )
        return True

    def _fire(self, key: int, peer: PeerId, frames: Sequence[Frame]) -> None:
        del self._timers[key]
        self.inner.send(peer, frames)

    async def recv(self) -> tuple[bytes, list[memoryview]]:
        """Receive from the inner transport unchanged."""
        return await self.inner.recv()

    def close(self, *, linger_ms: int = 0) -> None:
        """Cancel delayed sends and close the inner transport."""
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()
        self.inner.close(linger_ms=linger_ms)


def _flip_one_byte(frames: Sequence[Frame], u: float) -> list[Frame]:
    """A copy of `frames` with one byte, chosen by `u` in [0, 1), XOR-ed with 0xFF."""
    out: list[Frame] = [bytearray(f) for f in frames]
    total = sum(len(f) for f in out)
    if total == 0:
        return out
    pos = min(int(u * total), total - 1)
    for f in out:
        if pos < len(f):
            assert isinstance(f, bytearray)
            f[pos] ^= 0xFF
            break
        pos -= len(f)
    return out
