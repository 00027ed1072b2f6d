"""`GossipProtocol`: one node's side of the neighbour protocol, sans-I/O.

It wires the receive filter (`Inbox`), `Liveness` and the `RoundBook` together and numbers the
messages we send, so a runtime only moves bytes and time:

    proto = GossipProtocol(me, neighbours, cfg, dim=d, now=clock(),
                           seq_start=time.time_ns() // 1000)
    apply(proto.hello(now))
    loop:  r = proto.catch_up(r)           # skip the rounds the neighbours have left behind
           proto.start_round(r, now)
           apply([proto.dual(j, y_ij, now) for j in neighbours])
           on inbound (identity, frames):  apply(proto.receive(identity, frames, now))
           every tick:                     apply(proto.tick(now))
           when proto.ready(now):          result, effects = proto.close_round(now); apply(effects)
    apply(proto.bye("shutdown", now))

`apply` encodes each `Send` with `gossip.codec.encode` and hands it to the transport; `PeerDown`
and `PeerUp` are for metrics and for leaving a dead edge out of the update, `PeerRejoined` for
telling the algorithm that an edge's messages flow again after a gap. No method raises because
of anything a peer sent.

Rejoining. Every message carries the round its sender is in, so each node knows where its
neighbours are (`RoundBook.peer_round`). The round number is the federation's clock: a node
does not run rounds its neighbours have left behind. Before each round the runtime asks
`catch_up(r)`: the round most alive neighbours have reached (the lower median of their rounds;
for two neighbours, the smaller), when that is two or more rounds later than r. A node that
restarted from a checkpoint, was frozen or was cut off from both sides skips the rounds it
missed and runs in step again, releasing nothing for the skipped rounds. A neighbour one round
ahead is ordinary lockstep and causes no skip, and a minority of neighbours cannot make a node
skip at all (a hostile one claiming a round far ahead is outvoted). The mirror case: a node
whose neighbours are mostly two or more rounds behind it (it came back from a later checkpoint)
waits for them before its next round (`ahead_of`), as long as they make progress, rather than
run on alone or drag them forward. A Hello is answered at once
with a Heartbeat carrying our round, so a restarted node knows where its neighbours are before
its first round, and a neighbour waiting for it waits no more than one of its rounds. A
neighbour more than `future_window` rounds behind is not waited for (rounds.py). When a
neighbour seen two or more rounds behind is back in step, `PeerRejoined` says so.

Restored from a backup, a node resumes at rounds it released before without knowing it. The
Heartbeat answering its Hello carries the highest round of its that the neighbour heard before
that Hello, which (Hellos go out before a node's first round) never counts a round of its
present run: the node waits for that answer, or a Hello, from each neighbour (`unanswered`)
before its first round, and its runtime charges and skips the rounds up to `heard_of_us`.

Sequence numbers must keep increasing across restarts, or neighbours drop a restarted node's
messages as replays until its counter passes the old one. Starting the counter at the wall clock
in microseconds (as above) does that without persisting it, as long as the clock does not step
back and we send fewer than a million messages per second.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gossip.codec import Frame
from gossip.errors import STRANGER, Rejection
from gossip.inbox import Inbox
from gossip.liveness import Liveness, LivenessConfig, PeerDown, PeerUp, SendHeartbeat
from gossip.messages import (
    Bye,
    Dual,
    DualPayload,
    Heartbeat,
    Hello,
    Message,
    PeerId,
    Primal,
    Tensor,
)
from gossip.rounds import RoundBook, RoundConfig, RoundResult, Verdict

logger = logging.getLogger(__name__)

__all__ = [
    "Effect", "GossipConfig", "GossipProtocol", "PeerRejoined", "PeerStarted", "Send",
]


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Protocol settings (timings in seconds)."""

    rounds: RoundConfig = field(default_factory=RoundConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    replay_window: int = 64
    log_interval: float = 10.0
    max_message_rms: float = math.inf  # Dual/Primal tensors above this RMS are rejected


@dataclass(frozen=True, slots=True)
class Send:
    """Effect: encode `msg` and send it to `peer`."""

    peer: PeerId
    msg: Message


@dataclass(frozen=True, slots=True)
class PeerStarted:
    """Effect: `peer` said Hello: it (re)started, about to run `round` (it was answered with
    our round; a runtime whose first answer may not have left repeats it shortly)."""

    peer: PeerId
    round: int


@dataclass(frozen=True, slots=True)
class PeerRejoined:
    """Effect: `peer`, seen out of step (behind), is in step again at our round `round`."""

    peer: PeerId
    round: int


Effect = Send | PeerDown | PeerUp | PeerStarted | PeerRejoined

# Tensor messages the round book drops, and why: a message for a round already closed (late, or
# an old round re-sent), a second one for the same round, one too far ahead to buffer.
_DROPPED = {
    Verdict.STALE: Rejection.STALE_ROUND,
    Verdict.DUPLICATE: Rejection.DUPLICATE_ROUND,
    Verdict.TOO_FAR: Rejection.TOO_FAR_AHEAD,
}


class GossipProtocol:
    """One node's protocol state machine; see the module docstring for how to drive it."""

    def __init__(
        self,
        me: PeerId,
        neighbours: Iterable[PeerId],
        cfg: GossipConfig,
        *,
        dim: int,
        now: float,
        first_round: int = 0,
        seq_start: int = 0,
    ) -> None:
        """Create the state for node `me` with model size `dim`, starting at `first_round`."""
        self.me = me
        self.neighbours = frozenset(neighbours)
        if me in self.neighbours:
            raise ValueError(f"node {me} cannot be its own neighbour.")
        self.dim = dim
        self.inbox = Inbox(
            self.neighbours,
            expected_dim=dim,
            replay_window=cfg.replay_window,
            log_interval=cfg.log_interval,
            max_rms=cfg.max_message_rms,
        )
        self.liveness = Liveness(self.neighbours, cfg.liveness, now)
        self.book = RoundBook(self.neighbours, cfg.rounds, first_round=first_round)
        self._seq = seq_start
        self._lagging: set[PeerId] = set()  # seen two or more rounds behind, not yet back
        self._answered: set[PeerId] = set()  # answered our Hello, or said its own
        # The highest round of ours any neighbour heard before our Hello: released by an
        # earlier run of this node (-1: none heard).
        self.heard_of_us = -1

    # ---- outputs -------------------------------------------------------------------------

    def hello(self, now: float, peers: Iterable[PeerId] | None = None) -> list[Send]:
        """Hello to every neighbour (or to `peers`, a repeat), with the round we are about to
        run; the first call starts counting their silence from now (set-up time is not)."""
        if peers is None:
            self.liveness.restart_clock(now)
        upcoming = self.book.round + (0 if self.book.is_open else 1)
        return [
            self._send(p, Hello(self.me, upcoming, self._next_seq(), self.dim), now)
            for p in sorted(self.neighbours if peers is None else self.neighbours & set(peers))
        ]

    def dual(self, peer: PeerId, payload: DualPayload, now: float) -> Send:
        """Our dual for `peer` in the open round (dense or compressed)."""
        return self._send(peer, Dual(self.me, self._round, self._next_seq(), payload), now)

    def primal(self, payload: Tensor, now: float) -> list[Send]:
        """Our primal for every neighbour in the open round (one shared, read-only payload)."""
        return [
            self._send(p, Primal(self.me, self._round, self._next_seq(), payload), now)
            for p in sorted(self.neighbours)
        ]

    def heartbeat(self, peer: PeerId, now: float, *, answer: bool = False) -> Send:
        """A heartbeat for `peer`: a sign of life that also tells it our round; as the `answer`
        to its Hello, also how far its rounds went before that Hello."""
        high_water = self.book.released_before_hello.get(peer, -1) + 1 if answer else None
        return self._send(peer, Heartbeat(self.me, self._round, self._next_seq(), high_water),
                          now)

    def bye(self, reason: str, now: float) -> list[Send]:
        """Bye to every neighbour."""
        return [
            self._send(p, Bye(self.me, self._round, self._next_seq(), reason), now)
            for p in sorted(self.neighbours)
        ]

    # ---- inputs --------------------------------------------------------------------------

    def receive(self, identity: bytes, frames: Sequence[Frame], now: float) -> list[Effect]:
        """Feed one inbound message (identity as reported by the transport); never raises."""
        msg = self.inbox.accept(identity, frames, now)
        if msg is None:
            return []
        effects: list[Effect] = list(self.liveness.heard(msg.sender, now))
        self.book.saw(msg.sender, msg.round, restarted=isinstance(msg, Hello))
        match msg:
            case Dual() | Primal():
                dropped = _DROPPED.get(self.book.receive(msg, now))
                if dropped is not None:  # counted per peer, like the inbox's rejections
                    self.inbox.count(msg.sender, dropped)
            case Bye():
                effects += self.liveness.said_bye(msg.sender)
            case Hello():
                if msg.round < self.book.round - 1:
                    logger.info("neighbour %d (re)started at round %d, behind our round %d; "
                                "it will skip ahead", msg.sender, msg.round, self.book.round)
                # Tell it where we are now, not at our next heartbeat: it must not run a round
                # we have left behind.
                effects += [PeerStarted(msg.sender, msg.round),
                            self.heartbeat(msg.sender, now, answer=True)]
                self._answered.add(msg.sender)  # restarted itself: it remembers nothing of us
            case Heartbeat(high_water=int(high_water)):
                self._answered.add(msg.sender)
                self.heard_of_us = max(self.heard_of_us, high_water - 1)
            case Heartbeat():
                pass
        return effects + self._track_step(msg.sender)

    def _track_step(self, peer: PeerId) -> list[Effect]:
        p = self.book.peer_round.get(peer)
        if p is not None and p < self.book.round - 1:
            self._lagging.add(peer)
        elif peer in self._lagging and self.book.in_step(peer):
            self._lagging.discard(peer)
            logger.info("neighbour %d rejoined: in step at round %d", peer, self.book.round)
            return [PeerRejoined(peer, self.book.round)]
        return []

    def tick(self, now: float) -> list[Effect]:
        """Advance time: heartbeats to send and peers that went down."""
        effects: list[Effect] = []
        for e in self.liveness.tick(now):
            if isinstance(e, SendHeartbeat):
                effects.append(self.heartbeat(e.peer, now))
            else:
                effects.append(e)
        return effects

    # ---- rounds --------------------------------------------------------------------------

    def catch_up(self, r: int) -> int:
        """The round to run instead of `r`: the latest round most alive neighbours have reached
        (`RoundBook.agreed_round`), if that is two or more rounds later. One round ahead is
        ordinary lockstep (that neighbour closed r and waits for our r + 1); two or more
        means they no longer wait for us, and running r would only release a message nobody
        reads. A majority, not the furthest: one hostile neighbour claiming a round far ahead
        would otherwise make us skip to the end of the run, and our neighbours after us."""
        # A neighbour not heard yet counts as in our round: it is no evidence either way.
        agreed = self.book.median_round(self.liveness.alive(), r)
        return agreed if agreed is not None and agreed > r + 1 else r

    def ahead_of(self, r: int) -> int | None:
        """Where most alive neighbours are, if that is two or more rounds before `r` (else
        None): a node that came back ahead of them (a later checkpoint) waits for them to get
        there rather than make them skip. Most, not any: a minority claiming to be behind
        cannot hold a node up."""
        behind = self.book.median_round(self.liveness.alive(), r, upper=True)
        return behind if behind is not None and behind < r - 1 else None

    def start_round(self, r: int, now: float) -> None:
        """Open round `r`; its deadline is `now + cfg.rounds.deadline`."""
        self.book.start_round(r, now)

    def ready(self, now: float) -> bool:
        """Whether the open round has every alive neighbour's message or hit its deadline."""
        return self.book.ready(now, self.liveness.alive())

    def close_round(self, now: float) -> tuple[RoundResult, list[Effect]]:
        """Close the open round; peers that missed its deadline once too often go down.

        A neighbour already past this round missed nothing: its message for the round was
        lost, or it ran on without us, and the round did not wait for it. Counting that as a
        missed deadline took live neighbours down within milliseconds, and after a partition
        or a restart the two ends of an edge then leapfrogged each other down for many rounds
        (found by the simulated-network tests, tests/sim/test_simnet.py)."""
        alive = self.liveness.alive()
        result = self.book.close(alive)
        effects: list[Effect] = []
        for peer in sorted(self.neighbours):
            if peer in result.duals:
                self.liveness.delivered_on_time(peer)
            elif peer in alive and not (self.book.ran_ahead(peer) or self.book.far_behind(peer)):
                effects += self.liveness.missed_deadline(peer, now)
        return result, effects

    # ---- what a runtime reads ------------------------------------------------------------

    def alive(self) -> frozenset[PeerId]:
        """Neighbours currently up (their edges take part in the next round)."""
        return self.liveness.alive()

    @property
    def deadline(self) -> float:
        """When the open round closes at the latest (on the clock `now` is measured on)."""
        return self.book.deadline

    def unanswered(self) -> list[PeerId]:
        """Neighbours that have not yet told us what they heard of our earlier runs (neither
        answered our Hello nor said their own), in id order."""
        return sorted(self.neighbours - self._answered)

    def silent_since(self, t: float) -> list[PeerId]:
        """Neighbours not heard from at or after time `t`, in id order."""
        return [p for p in sorted(self.neighbours) if self.liveness.last_heard(p) <= t]

    def rejections(self) -> dict[str, dict[str, int]]:
        """Rejected messages by peer (`STRANGER` for non-neighbours) and `Rejection`, in the
        plain strings final.json and the exporter write (`Rejection(kind)` reads one back)."""
        out: dict[str, dict[str, int]] = {}
        for peer, kinds in self.inbox.rejected.items():
            row = out.setdefault(STRANGER if peer is None else str(peer), {})
            row.update({str(kind): n for kind, n in kinds.items()})
        return out

    # ---- internals -----------------------------------------------------------------------

    @property
    def _round(self) -> int:
        return max(self.book.round, 0)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _send(self, peer: PeerId, msg: Message, now: float) -> Send:
        self.liveness.sent(peer, now)
        return Send(peer, msg)
