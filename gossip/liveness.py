"""Peer liveness, sans-I/O: who is up, who is suspected, who is down, and when to heartbeat.

Rules (after the zguide's "Heartbeating" chapter):

- Every peer starts UP, as if heard from at construction time.
- Any valid message from a peer counts as a heartbeat (`heard`). A SUSPECT or DOWN peer that is
  heard from is UP again at once; leaving DOWN emits `PeerUp`.
- A peer silent for `suspect_after` seconds is SUSPECT: still waited for, but logged.
- A peer is DOWN (emits `PeerDown`) when silent for `down_after` seconds, when it missed
  `max_missed_deadlines` consecutive round deadlines, or when it said Bye. DOWN peers are not
  waited for. The missed-deadline count is reset only by an on-time delivery, so a peer that is
  alive but always late goes straight back DOWN after its next miss.
- We send a peer a heartbeat only when we sent it nothing else for `heartbeat_interval` seconds
  (`sent` records every other message), so a busy link carries no heartbeats at all.

Everything takes `now` (seconds, any monotonic origin) as an argument; nothing reads a clock.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from gossip.messages import PeerId

__all__ = [
    "DownReason",
    "Liveness",
    "LivenessConfig",
    "LivenessEffect",
    "PeerDown",
    "PeerState",
    "PeerUp",
    "SendHeartbeat",
]

logger = logging.getLogger(__name__)


class PeerState(enum.Enum):
    """How much we believe a neighbour is alive."""

    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    """Liveness timing, in seconds.

    Attributes:
        heartbeat_interval: send a heartbeat to a peer after this long without sending it anything.
        suspect_after: silence after which a peer is SUSPECT.
        down_after: silence after which a peer is DOWN.
        max_missed_deadlines: consecutive round deadlines missed before a peer is DOWN.
    """

    heartbeat_interval: float = 1.0
    suspect_after: float = 3.0
    down_after: float = 6.0
    max_missed_deadlines: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.suspect_after <= self.down_after:
            raise ValueError(
                "liveness needs 0 < heartbeat_interval < suspect_after <= down_after, got "
                f"{self.heartbeat_interval}, {self.suspect_after}, {self.down_after}."
            )
        if self.max_missed_deadlines < 1:
            raise ValueError("max_missed_deadlines must be at least 1.")


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    """Effect: send a Heartbeat to `peer`."""

    peer: PeerId


class DownReason(enum.StrEnum):
    """Why a peer went DOWN (logged, and compared by tests and the simulated network)."""

    SILENT = "silent"        # not heard from for `down_after` seconds
    DEADLINES = "deadlines"  # missed `max_missed_deadlines` round deadlines in a row
    BYE = "bye"              # said Bye


@dataclass(frozen=True, slots=True)
class PeerDown:
    """Effect: `peer` is now DOWN, for `reason`."""

    peer: PeerId
    reason: DownReason


@dataclass(frozen=True, slots=True)
class PeerUp:
    """Effect: `peer`, which was DOWN, was heard from again."""

    peer: PeerId


LivenessEffect = SendHeartbeat | PeerDown | PeerUp


@dataclass(slots=True)
class _Peer:
    state: PeerState
    last_heard: float
    last_sent: float
    missed: int = 0


class Liveness:
    """Tracks the liveness of a fixed set of neighbours; see the module docstring."""

    def __init__(self, peers: Iterable[PeerId], cfg: LivenessConfig, now: float) -> None:
        """Start with every peer UP and both directions fresh at `now`."""
        self.cfg = cfg
        self._peers = {p: _Peer(PeerState.UP, now, now) for p in peers}

    # ---- inputs --------------------------------------------------------------------------

    def restart_clock(self, now: float) -> None:
        """Measure every peer's silence from `now` (a node starting to talk after set-up)."""
        for p in self._peers.values():
            p.last_heard = max(p.last_heard, now)

    def heard(self, peer: PeerId, now: float) -> list[PeerUp]:
        """Record a valid message from `peer`; returns [PeerUp] if it was DOWN."""
        p = self._peers[peer]
        p.last_heard = max(p.last_heard, now)
        was = p.state
        p.state = PeerState.UP
        if was is PeerState.DOWN:
            logger.info("peer %d is up again", peer)
            return [PeerUp(peer)]
        return []

    def sent(self, peer: PeerId, now: float) -> None:
        """Record that we sent `peer` something, which makes a heartbeat unnecessary for now."""
        p = self._peers[peer]
        p.last_sent = max(p.last_sent, now)

    def delivered_on_time(self, peer: PeerId) -> None:
        """Record that `peer` delivered its round message before the deadline."""
        self._peers[peer].missed = 0

    def missed_deadline(self, peer: PeerId, now: float) -> list[PeerDown]:
        """Record that `peer` missed a round deadline; returns [PeerDown] at the last straw."""
        p = self._peers[peer]
        p.missed += 1
        if p.missed >= self.cfg.max_missed_deadlines:
            return self._down(peer, DownReason.DEADLINES)
        return []

    def said_bye(self, peer: PeerId) -> list[PeerDown]:
        """Record a Bye from `peer`: it is DOWN until heard from again."""
        return self._down(peer, DownReason.BYE)

    def tick(self, now: float) -> list[LivenessEffect]:
        """Advance time: returns heartbeats due and peers that just went DOWN."""
        effects: list[LivenessEffect] = []
        cfg = self.cfg
        for peer, p in self._peers.items():
            silence = now - p.last_heard
            if silence >= cfg.down_after:
                effects += self._down(peer, DownReason.SILENT)
            elif silence >= cfg.suspect_after and p.state is PeerState.UP:
                p.state = PeerState.SUSPECT
                logger.info("peer %d is suspect: silent for %.1f s", peer, silence)
            # DOWN peers get heartbeats too, so that they hear from us when they come back.
            if now - p.last_sent >= cfg.heartbeat_interval:
                p.last_sent = now
                effects.append(SendHeartbeat(peer))
        return effects

    # ---- queries -------------------------------------------------------------------------

    def state(self, peer: PeerId) -> PeerState:
        """The current state of `peer`."""
        return self._peers[peer].state

    def last_heard(self, peer: PeerId) -> float:
        """When `peer` was last heard from (the construction time if never)."""
        return self._peers[peer].last_heard

    def alive(self) -> frozenset[PeerId]:
        """Peers that are not DOWN (UP or SUSPECT): those a round waits for."""
        return frozenset(p for p, s in self._peers.items() if s.state is not PeerState.DOWN)

    def _down(self, peer: PeerId, reason: DownReason) -> list[PeerDown]:
        p = self._peers[peer]
        if p.state is PeerState.DOWN:
            return []
        p.state = PeerState.DOWN
        logger.warning("peer %d is down (%s)", peer, reason)
        return [PeerDown(peer, reason)]
