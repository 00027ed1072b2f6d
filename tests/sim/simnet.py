"""A deterministic simulated network for `GossipProtocol`: no sockets, no real clock.

Why it exists: drops, partitions and dead peers were only exercised over real ZeroMQ sockets
and processes, which is slow and timing-dependent. Here N real protocol objects (each with its
real Inbox, RoundBook and Liveness) exchange frames made by the real codec through a seeded
fake network on a virtual clock, so a minute of protocol time runs in milliseconds and a
failing scenario replays exactly from its seed. The shape follows trio's `_fake_net.py` and
`MockClock` (time only moves when the test says so) and h11's test helpers.

    net = SimNet(topologies.build("ring", 6), rounds=20, drop=0.2, seed=1)
    net.run()
    net.closed[3]      # that node's rounds: start, close time and the real RoundResult
    net.log            # everything that happened, as plain tuples (same seed, same log)
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from gossip.codec import Frame, encode
from gossip.faults import Cut
from gossip.liveness import LivenessConfig, PeerDown, PeerUp
from gossip.messages import PeerId, Tensor
from gossip.protocol import (
    Effect,
    GossipConfig,
    GossipProtocol,
    PeerRejoined,
    PeerStarted,
    Send,
)
from gossip.rounds import RoundConfig, RoundResult

__all__ = ["SIM_CONFIG", "Closed", "SimNet", "SimNode", "Transmission", "VirtualClock"]

Payload = Callable[[PeerId, int, PeerId], Tensor]

SIM_CONFIG = GossipConfig(
    rounds=RoundConfig(deadline=1.0, future_window=4),  # the daemon's window
    liveness=LivenessConfig(
        heartbeat_interval=0.5, suspect_after=1.5, down_after=3.0, max_missed_deadlines=3
    ),
)
_EPS = 1e-9  # float sums of dt land a hair either side of a scheduled instant
HELLO_REPEAT = 0.5  # the daemon's (node.daemon.loop)


class VirtualClock:
    """Time that moves only when `advance` is called."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError("the virtual clock does not run backwards.")
        self.now += dt


@dataclass(frozen=True, slots=True)
class Transmission:
    """One message a node handed to the network, and what the network did with it."""

    t: float
    src: PeerId
    dst: PeerId
    kind: str  # the message class name
    round: int
    seq: int
    fate: str  # "ok", "dup" (delivered twice), "drop" or "cut"


@dataclass(frozen=True, slots=True)
class Closed:
    """One round a node closed."""

    started: float
    deadline: float  # as the protocol set it when the round opened
    closed: float
    result: RoundResult


@dataclass(slots=True)
class SimNode:
    """A node's protocol plus the state of its round driver (the daemon's `_rounds` loop)."""

    id: PeerId
    proto: GossipProtocol
    boot: float
    next_round: int
    phase: str = "startup"  # startup -> compute -> wait -> compute ... -> done
    wake: float = 0.0
    started: float = 0.0
    deadline: float = 0.0
    next_tick: float = 0.0
    crashed: bool = False
    frozen_until: float = float("-inf")
    incarnation: int = 0
    last_seq: int = 0
    waiting_for: int | None = None  # ahead of its neighbours: where they were, and since when
    waiting_since: float = 0.0
    accounted_before: int = 0  # rounds before it are in its "ledger" (NodeRunner's field)
    hello_again: float = 0.0  # when start-up repeats its Hello to neighbours yet to answer


def fill_payload(dim: int) -> Payload:
    """Default payload: every coordinate is sender + round, so a dual shows which round it is."""
    return lambda node, r, peer: np.full(dim, node + r, dtype=np.float32)


@dataclass
class SimNet:
    """N protocols on a graph (dict node -> neighbours, or a networkx graph) and a fake net."""

    graph: Mapping[PeerId, Iterable[PeerId]] | nx.Graph
    rounds: int = 10
    seed: int = 0
    cfg: GossipConfig = SIM_CONFIG
    dim: int = 4
    drop: float = 0.0
    duplicate: float = 0.0
    latency: float = 0.01
    jitter: float = 0.0  # uniform extra delay in [0, jitter): enough of it reorders messages
    cuts: tuple[Cut, ...] = ()
    compute: float = 0.05  # virtual seconds a round's step takes before its duals go out
    dt: float = 0.01  # the clock's step; round closes and deliveries are this coarse
    startup_timeout: float = 1.0
    seq_start: int = 1_000_000  # the daemon starts at wall-clock microseconds, far above 0
    payload: Payload | None = None
    clock: VirtualClock = field(default_factory=VirtualClock)
    log: list[tuple[object, ...]] = field(default_factory=list)
    sends: list[Transmission] = field(default_factory=list)
    delivered: list[tuple[float, Transmission]] = field(default_factory=list)  # (when, what)
    closed: dict[PeerId, list[Closed]] = field(default_factory=dict)
    peer_events: dict[PeerId, list[tuple[float, PeerDown | PeerUp]]] = field(default_factory=dict)
    notices: dict[PeerId, list[tuple[float, PeerStarted | PeerRejoined]]] = field(
        default_factory=dict)
    # Rounds charged as heard from an earlier run (NodeRunner.charge_earlier_run), in order.
    charged: dict[PeerId, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.adj = {n: frozenset(self.graph[n]) for n in sorted(self.graph)}
        for n, ps in self.adj.items():
            if any(n not in self.adj.get(p, ()) for p in ps):
                raise ValueError(f"the graph is not symmetric at node {n}.")
        self._payload = self.payload or fill_payload(self.dim)
        self._rng = random.Random(self.seed)
        self._tick_every = self.cfg.liveness.heartbeat_interval / 2  # the daemon's tick cadence
        self._queue: list[tuple[float, int, int, Transmission, list[Frame]]] = []
        self._order = 0
        self.nodes: dict[PeerId, SimNode] = {}
        for n in self.adj:
            self.closed[n], self.peer_events[n], self.notices[n] = [], [], []
            self.charged[n] = []
            self._boot(n, first_round=0, seq_start=self.seq_start, incarnation=0)
        for node in self.nodes.values():  # only once every node exists to be addressed
            self._apply(node, node.proto.hello(0.0), 0.0)

    # ---- scenario controls ---------------------------------------------------------------

    def crash(self, n: PeerId) -> None:
        """Kill node `n` without a Bye; what is in flight to it is lost."""
        self.nodes[n].crashed = True
        self.log.append(("crash", self.clock.now, n))

    def restart(self, n: PeerId, *, seq_start: int | None = None,
                first_round: int | None = None) -> None:
        """A fresh protocol for `n`, as a restarted daemon builds: by default it resumes after
        the last round it released (the ledger's rule: never send a round twice) with a counter
        above the old one."""
        old = self.nodes[n]
        resume = old.next_round + (old.phase == "wait")
        self._boot(n, first_round=resume if first_round is None else first_round,
                   seq_start=old.last_seq + 1000 if seq_start is None else seq_start,
                   incarnation=old.incarnation + 1)
        self.log.append(("restart", self.clock.now, n))
        self._apply(self.nodes[n], self.nodes[n].proto.hello(self.clock.now), self.clock.now)

    def inject(self, n: PeerId, send: Send) -> None:
        """Send from `n` behind its driver's back (a retransmission, a misbehaving peer)."""
        self._send(self.nodes[n], send, self.clock.now)

    def freeze(self, n: PeerId, seconds: float) -> None:
        """Stop `n` (as SIGSTOP would) for `seconds`; what arrives meanwhile waits for it."""
        self.nodes[n].frozen_until = self.clock.now + seconds
        self.log.append(("freeze", self.clock.now, n, seconds))

    # ---- running -------------------------------------------------------------------------

    def step(self) -> None:
        """Advance the clock by `dt`, deliver what is due, then let every node act."""
        self.clock.advance(self.dt)
        now = self.clock.now
        while self._queue and self._queue[0][0] <= now + _EPS:
            _, order, inc, sent, frames = heapq.heappop(self._queue)
            node = self.nodes[sent.dst]
            if node.crashed or node.incarnation != inc:  # its connections died with it
                self.log.append(("lost", now, sent.src, sent.dst, sent.seq))
            elif node.frozen_until > now + _EPS:  # the kernel buffers it for the frozen process
                heapq.heappush(self._queue, (node.frozen_until, order, inc, sent, frames))
            else:
                self._deliver(node, sent, frames, now)
        for n in self.adj:
            self._drive(self.nodes[n], now)

    def run_until(self, t: float) -> None:
        """Step until the clock reaches `t`."""
        while self.clock.now < t - _EPS:
            self.step()

    def run(self, limit: float | None = None) -> None:
        """Step until every running node has closed all its rounds; raise at virtual time
        `limit` (default: later than if every round from now on hit its deadline), a hang."""
        if limit is None:
            worst = self.cfg.rounds.deadline + self.compute + 2 * self.dt
            frozen = max(x.frozen_until for x in self.nodes.values())
            limit = max(self.clock.now, frozen) + self.startup_timeout + self.rounds * worst + 1
        while any(not x.crashed and x.phase != "done" for x in self.nodes.values()):
            if self.clock.now >= limit:
                raise TimeoutError(f"rounds still open at t={self.clock.now:.2f}")
            self.step()

    # ---- what tests read -----------------------------------------------------------------

    def results(self, n: PeerId) -> list[RoundResult]:
        return [c.result for c in self.closed[n]]

    def downs(self, n: PeerId) -> list[tuple[float, PeerDown]]:
        return [(t, e) for t, e in self.peer_events[n] if isinstance(e, PeerDown)]

    def ups(self, n: PeerId) -> list[tuple[float, PeerUp]]:
        return [(t, e) for t, e in self.peer_events[n] if isinstance(e, PeerUp)]

    def dual_fates(self, src: PeerId, dst: PeerId, r: int) -> list[str]:
        return [s.fate for s in self.sends
                if (s.src, s.dst, s.round, s.kind) == (src, dst, r, "Dual")]

    # ---- internals -----------------------------------------------------------------------

    def _boot(self, n: PeerId, *, first_round: int, seq_start: int, incarnation: int) -> None:
        now = self.clock.now
        proto = GossipProtocol(n, self.adj[n], self.cfg, dim=self.dim, now=now,
                               first_round=first_round, seq_start=seq_start)
        self.nodes[n] = SimNode(n, proto, boot=now, next_round=first_round,
                                incarnation=incarnation, last_seq=seq_start,
                                next_tick=now + self._tick_every, accounted_before=first_round,
                                hello_again=now + HELLO_REPEAT)

    def _deliver(self, node: SimNode, sent: Transmission, frames: list[Frame], now: float) -> None:
        # The identity a ROUTER reports for a DEALER that set its node id, as the transport does.
        effects = node.proto.receive(str(sent.src).encode(), frames, now)
        self.delivered.append((now, sent))
        self.log.append(("recv", now, sent.src, sent.dst, sent.seq))
        self._apply(node, effects, now)

    def _drive(self, node: SimNode, now: float) -> None:
        if node.crashed or node.frozen_until > now + _EPS:
            return
        proto = node.proto
        if now + _EPS >= node.next_tick:
            self._apply(node, proto.tick(now), now)
            node.next_tick = max(node.next_tick + self._tick_every, now)  # no burst after a freeze
        if node.phase == "startup" and (
            not proto.unanswered() or now + _EPS >= node.boot + self.startup_timeout
        ):
            node.phase, node.wake = "compute", now + self.compute
        elif node.phase == "startup" and now + _EPS >= node.hello_again:
            # As the daemon: a Hello or its answer may have been lost; ask those yet to answer.
            self._apply(node, proto.hello(now, proto.unanswered()), now)
            node.hello_again = now + HELLO_REPEAT
        while True:  # a round can start and close in one step when its messages are buffered
            if node.phase == "compute" and now + _EPS >= node.wake:
                behind = proto.ahead_of(node.next_round)  # as the daemon: wait for neighbours
                if behind is not None:                   # that make progress towards us
                    if behind != node.waiting_for:
                        node.waiting_for, node.waiting_since = behind, now
                    if now - node.waiting_since <= self.cfg.rounds.deadline:
                        return
                self._charge_earlier_run(node, now)
                target = proto.catch_up(node.next_round)  # and never run a round
                if target > node.next_round:              # the neighbours have left behind
                    self.log.append(("skip", now, node.id, node.next_round, target))
                    node.next_round = target
                if node.next_round >= self.rounds:
                    node.phase = "done"
                    return
                proto.start_round(node.next_round, now)
                node.phase, node.started, node.deadline = "wait", now, proto.deadline
                sends = [proto.dual(p, self._payload(node.id, node.next_round, p), now)
                         for p in sorted(proto.alive())]
                self._apply(node, sends, now)
            if node.phase != "wait" or not proto.ready(now):
                return
            result, effects = proto.close_round(now)
            self.closed[node.id].append(Closed(node.started, node.deadline, now, result))
            self.log.append(("close", now, node.id, result.round, tuple(sorted(result.duals)),
                             tuple(float(v[0]) for _, v in sorted(result.duals.items())),
                             result.timed_out))
            self._apply(node, effects, now)
            node.next_round += 1
            node.phase, node.wake = "compute", now + self.compute

    def _charge_earlier_run(self, node: SimNode, now: float) -> None:
        """As the daemon before each round: charge and skip the rounds up to the highest one
        the neighbours heard from an earlier run (NodeRunner.charge_earlier_run)."""
        heard = min(node.proto.heard_of_us, self.rounds - 1)
        if heard >= node.accounted_before:
            self.charged[node.id] += range(node.accounted_before, heard + 1)
            self.log.append(("charge", now, node.id, node.accounted_before, heard))
            node.accounted_before = heard + 1
            node.next_round = max(node.next_round, heard + 1)

    def _apply(self, node: SimNode, effects: Collection[Effect], now: float) -> None:
        for e in effects:
            if isinstance(e, Send):
                self._send(node, e, now)
                continue
            if isinstance(e, PeerDown | PeerUp):
                self.peer_events[node.id].append((now, e))
            else:  # PeerStarted, PeerRejoined: what it noticed of its neighbours' rounds
                self.notices[node.id].append((now, e))
            self.log.append((type(e).__name__, now, node.id, e.peer,
                             getattr(e, "reason", getattr(e, "round", ""))))

    def _send(self, node: SimNode, send: Send, now: float) -> None:
        msg, src, dst = send.msg, node.id, send.peer
        node.last_seq = max(node.last_seq, msg.seq)
        # Bytes, as off a socket: a receiver must never share the sender's array.
        frames: list[Frame] = [bytes(f) for f in encode(msg, "float32")]
        # Always four draws, so one message's fate never shifts the stream for the next.
        u_drop, u_dup, u_j1, u_j2 = (self._rng.random() for _ in range(4))
        if any(c.cuts(src, dst, now) for c in self.cuts):
            fate = "cut"
        elif u_drop < self.drop:
            fate = "drop"
        else:
            fate = "dup" if u_dup < self.duplicate else "ok"
        record = Transmission(now, src, dst, type(msg).__name__, msg.round, msg.seq, fate)
        self.sends.append(record)
        self.log.append(("send", now, src, dst, record.kind, msg.round, msg.seq, fate))
        for u in ((u_j1, u_j2) if fate == "dup" else (u_j1,) if fate == "ok" else ()):
            self._order += 1
            heapq.heappush(self._queue, (now + self.latency + u * self.jitter, self._order,
                                         self.nodes[dst].incarnation, record, frames))
