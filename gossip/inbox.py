"""The receive filter: turns (peer identity, frames) into a trusted `Message` or drops it.

Pure and synchronous; `now` is only used to rate-limit log lines. Checks, in order:

1. the identity the transport reports is a configured neighbour (with CURVE the transport reports
   the id bound to the authenticated public key, so this check is then cryptographic; in
   plaintext it is only the peer's claim);
2. the frames decode (`gossip.codec.decode`, with the model size we expect);
3. the header's `sender` equals that identity, so a neighbour cannot speak for another node;
4. the sequence number was not seen before and is not too old to tell (a sliding replay window,
   as in IPsec/DTLS, so that reordering within the window is still accepted);
5. a tensor's RMS per coordinate is at most `max_rms` (default: no bound), so that a neighbour
   sending huge values is dropped like any other bad message: it is not a sign of life and its
   missing round messages count as missed deadlines.

Rejections never raise: each is counted per peer and `Rejection` (the error's `kind`), and
logged at WARNING at most once per `log_interval` seconds per (peer, kind) with the number
suppressed meanwhile. Messages from non-neighbours are counted under the peer `None`, so
strangers cannot grow our tables.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gossip.codec import Frame, decode_with_sum_sq
from gossip.errors import NormError, PeerError, ProtocolError, Rejection, ReplayError
from gossip.messages import Dual, Message, PeerId, Primal, parse_peer_id

__all__ = ["Inbox", "ReplayWindow"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayWindow:
    """Remembers which of the last `size` sequence numbers of one peer were seen."""

    size: int = 64
    top: int = -1  # highest sequence number accepted so far; -1 before the first
    seen: int = 0  # bit i set <=> sequence number top - i was accepted

    def check(self, seq: int) -> None:
        """Record `seq`, or raise ReplayError if it is a duplicate or older than the window."""
        if seq > self.top:
            shift = seq - self.top
            self.seen = ((self.seen << shift) | 1) & ((1 << self.size) - 1)
            self.top = seq
            return
        age = self.top - seq
        if age >= self.size:
            raise ReplayError(f"sequence number {seq} is older than the replay window.")
        if self.seen >> age & 1:
            raise ReplayError(f"sequence number {seq} was already received.")
        self.seen |= 1 << age


class Inbox:
    """Validates inbound messages for one node; see the module docstring for the rules."""

    def __init__(
        self,
        neighbours: Iterable[PeerId],
        *,
        expected_dim: int | None = None,
        replay_window: int = 64,
        log_interval: float = 10.0,
        max_rms: float = math.inf,
    ) -> None:
        """Create the filter.

        Args:
            neighbours: the node ids we accept messages from.
            expected_dim: the model size every tensor (and Hello.dim) must have, if known.
            replay_window: how many recent sequence numbers per peer are remembered.
            log_interval: at most one log line per (peer, error kind) per this many seconds.
            max_rms: the largest RMS per coordinate a Dual/Primal tensor may have.
        """
        self.neighbours = frozenset(neighbours)
        self.expected_dim = expected_dim
        self.accepted: Counter[PeerId] = Counter()
        # peer (None = not a neighbour) -> why -> count
        self.rejected: dict[PeerId | None, Counter[Rejection]] = {}
        self._windows = {p: ReplayWindow(replay_window) for p in self.neighbours}
        self._log_interval = log_interval
        self._max_sq = max_rms * max_rms
        self._bounded = math.isfinite(self._max_sq)
        self._last_log: dict[tuple[PeerId | None, Rejection], float] = {}
        self._suppressed: Counter[tuple[PeerId | None, Rejection]] = Counter()

    def accept(self, identity: bytes, frames: Sequence[Frame], now: float) -> Message | None:
        """Return the message if it passes every check, else count and log it and return None."""
        peer = parse_peer_id(identity)
        if peer is None or peer not in self.neighbours:
            self._reject(None, PeerError(f"identity {identity[:16]!r} is not a neighbour."), now)
            return None
        try:
            # The sum of squares comes from the decoder's finite-values pass: the RMS bound
            # costs no second read of the payload.
            msg, sum_sq = decode_with_sum_sq(frames, expected_dim=self.expected_dim)
            if msg.sender != peer:
                raise PeerError(f"node {peer} sent a message claiming to be node {msg.sender}.")
            self._windows[peer].check(msg.seq)
            if self._bounded and isinstance(msg, Dual | Primal):
                n = len(msg.payload)
                if sum_sq > self._max_sq * n:
                    rms = math.sqrt(sum_sq / max(n, 1))
                    raise NormError(f"node {peer} sent a tensor with RMS {rms:.3g}, above the "
                                    f"bound {math.sqrt(self._max_sq):g}.")
        except ProtocolError as exc:
            self._reject(peer, exc, now)
            return None
        self.accepted[peer] += 1
        return msg

    def rejections(self, peer: PeerId | None) -> int:
        """Total messages rejected from `peer` (None: from non-neighbours)."""
        return sum(self.rejected.get(peer, Counter()).values())

    def count(self, peer: PeerId | None, kind: Rejection) -> None:
        """Count one dropped message; the protocol counts the round book's drops here too."""
        self.rejected.setdefault(peer, Counter())[kind] += 1

    def _reject(self, peer: PeerId | None, exc: ProtocolError, now: float) -> None:
        kind = exc.kind
        self.count(peer, kind)
        key = (peer, kind)
        last = self._last_log.get(key)
        if last is not None and now - last < self._log_interval:
            self._suppressed[key] += 1
            return
        self._last_log[key] = now
        suppressed = self._suppressed.pop(key, 0)
        who = "a non-neighbour" if peer is None else f"peer {peer}"
        logger.warning(
            "dropped a message from %s: %s (%d similar suppressed)", who, exc, suppressed
        )

