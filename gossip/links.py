"""What a transport promises and what it counts, without the sockets: the `Transport` protocol
the runtime and `gossip.faults.FaultyTransport` use, its socket options (`TransportConfig`) and
its per-neighbour counters (`LinkStats`, `TransportStats`). Pure: the ZeroMQ transport that
keeps them is `gossip.transport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gossip.codec import MAX_HEADER_BYTES, Frame
from gossip.messages import PeerId

__all__ = ["LinkStats", "Transport", "TransportConfig", "TransportStats"]


class Transport(Protocol):
    """What the runtime and `FaultyTransport` need from a transport."""

    def send(self, peer: PeerId, frames: Sequence[Frame]) -> bool:
        """Queue one message for `peer` without blocking; False if it was dropped."""
        ...

    async def recv(self) -> tuple[bytes, list[memoryview]]:
        """Wait for the next inbound message: (peer identity, frames)."""
        ...

    def close(self, *, linger_ms: int = 0) -> None:
        """Release sockets; queued messages get at most `linger_ms` to leave."""
        ...


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Socket options (times in milliseconds).

    Attributes:
        sndhwm: messages queued per neighbour before further sends are dropped.
        rcvhwm: inbound messages queued before libzmq stops reading (TCP back-pressure).
        max_frame_bytes: MAXMSGSIZE on the ROUTER; set it to 4 × dim + MAX_HEADER_BYTES.
        heartbeat_ivl_ms, heartbeat_timeout_ms, heartbeat_ttl_ms: ZMTP heartbeats.
        reconnect_ivl_ms, reconnect_ivl_max_ms: DEALER reconnect back-off.
    """

    sndhwm: int = 8
    rcvhwm: int = 64
    max_frame_bytes: int = 64 * 2**20 + MAX_HEADER_BYTES
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 5000
    heartbeat_ttl_ms: int = 5000
    reconnect_ivl_ms: int = 100
    # 1 s, not libzmq's habit of 5+: a restarted neighbour hears from us within a second
    # (it skips to our round only once it has), for one connection attempt a second to a
    # dead peer. (Re-dialling a returning peer at once instead races a ROUTER without
    # handover, which then refuses the new link for good.)
    reconnect_ivl_max_ms: int = 1000

    @classmethod
    def for_model(cls, dim: int, **overrides: int) -> TransportConfig:
        """A config whose frame cap admits exactly one float32 tensor of `dim` elements."""
        return cls(**{"max_frame_bytes": 4 * dim + MAX_HEADER_BYTES, **overrides})


@dataclass(slots=True)
class LinkStats:
    """Counters for one neighbour; bytes are header plus payload frames."""

    messages_sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0  # sends that would have blocked (queue full or not connected)
    messages_received: int = 0
    bytes_received: int = 0


@dataclass(slots=True)
class TransportStats:
    """Per-neighbour counters; `strangers` counts what arrived under any other identity."""

    links: dict[PeerId, LinkStats]
    strangers: LinkStats = field(default_factory=LinkStats)
    auth_denied: int = 0

    @property
    def bytes_sent(self) -> int:
        """Bytes sent to all neighbours."""
        return sum(s.bytes_sent for s in self.links.values())

    @property
    def bytes_received(self) -> int:
        """Bytes received from anyone."""
        return self.strangers.bytes_received + sum(s.bytes_received for s in self.links.values())
