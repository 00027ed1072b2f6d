"""GossipProtocol end to end without sockets: two nodes wired through the codec by hand."""

from __future__ import annotations

import numpy as np

from gossip.codec import decode, encode
from gossip.liveness import LivenessConfig, PeerDown, PeerUp
from gossip.messages import Bye, Dual, Heartbeat, Hello
from gossip.protocol import (
    GossipConfig,
    GossipProtocol,
    PeerRejoined,
    PeerStarted,
    Send,
)
from gossip.rounds import RoundConfig

CFG = GossipConfig(
    rounds=RoundConfig(deadline=1.0),
    liveness=LivenessConfig(
        heartbeat_interval=0.5, suspect_after=2.0, down_after=4.0, max_missed_deadlines=2
    ),
)


def deliver(dst: GossipProtocol, sends: list[Send], now: float) -> list[object]:
    effects: list[object] = []
    for s in sends:
        assert s.peer == dst.me
        effects += dst.receive(str(s.msg.sender).encode(), encode(s.msg, "float16"), now)
    return effects


def test_two_nodes_exchange_a_round() -> None:
    a = GossipProtocol(0, [1], CFG, dim=3, now=0.0, seq_start=1000)
    b = GossipProtocol(1, [0], CFG, dim=3, now=0.0)
    deliver(b, a.hello(0.0), 0.0)
    a.start_round(0, 0.0)
    b.start_round(0, 0.0)
    send = a.dual(1, np.array([1, 2, 3], np.float32), 0.1)
    assert isinstance(send.msg, Dual) and send.msg.seq == 1002 and send.msg.round == 0
    deliver(b, [send], 0.1)
    assert b.ready(0.1)
    result, effects = b.close_round(0.1)
    np.testing.assert_array_equal(result.duals[0], [1, 2, 3])
    assert effects == []
    assert not a.ready(0.5) and a.ready(1.0)  # nobody sent to a: it waits for the deadline


def test_heartbeats_missed_deadlines_and_bye() -> None:
    a = GossipProtocol(0, [1, 2], CFG, dim=3, now=0.0)
    beats = [e for e in a.tick(0.6) if isinstance(e, Send)]
    assert sorted(s.peer for s in beats) == [1, 2]
    assert all(isinstance(s.msg, Heartbeat) for s in beats)
    assert isinstance(decode(encode(beats[0].msg)), Heartbeat)
    # Peer 1 never delivers; peer 2 does (as a hello and a dual each round).
    down: list[object] = []
    for r in range(3):
        a.start_round(r, r * 1.0)
        a.receive(b"2", encode(Dual(2, r, 10 + r, np.zeros(3, np.float32))), r * 1.0)
        if r == 0:
            a.receive(b"1", encode(Heartbeat(1, r, 10 + r)), r * 1.0)  # alive, but no dual
        assert a.ready(r * 1.0 + 1.0)
        _, effects = a.close_round(r * 1.0 + 1.0)
        down += effects
    assert down == [PeerDown(1, "deadlines")]
    # Once 1 is down, a round completes as soon as 2 delivered.
    a.start_round(3, 3.0)
    a.receive(b"2", encode(Dual(2, 3, 20, np.zeros(3, np.float32))), 3.0)
    assert a.ready(3.0)
    a.close_round(3.0)
    # A (re)started neighbour is up again and told our round at once, not at a heartbeat.
    assert a.receive(b"1", encode(Hello(1, 3, 30, 3)), 3.1) == [
        PeerUp(1), PeerStarted(1, 3), Send(1, Heartbeat(0, 3, a._seq, 0))]
    assert a.receive(b"2", encode(Bye(2, 3, 31, "done")), 3.2) == [PeerDown(2, "bye")]
    assert a.liveness.alive() == {1}


def test_hostile_input_never_raises() -> None:
    a = GossipProtocol(0, [1], CFG, dim=3, now=0.0)
    a.start_round(0, 0.0)
    for frames in ([b""], [b"\xff" * 22], [], encode(Dual(1, 0, 1, np.zeros(4, np.float32)))):
        assert a.receive(b"1", frames, 0.0) == []
    assert a.receive(b"5", encode(Heartbeat(5, 0, 1)), 0.0) == []
    assert a.inbox.rejections(1) == 4 and a.inbox.rejections(None) == 1
    assert not a.book.complete()


def test_a_neighbour_already_past_the_round_is_not_counted_as_missing_its_deadline() -> None:
    cfg = GossipConfig(rounds=RoundConfig(deadline=1.0),
                       liveness=LivenessConfig(heartbeat_interval=1.0, suspect_after=5.0,
                                               down_after=10.0, max_missed_deadlines=3))
    a = GossipProtocol(0, [1, 2], cfg, dim=1, now=0.0)
    x = np.zeros(1, np.float32)
    a.receive(b"1", encode(Dual(1, 3, 100, x)), 0.0)  # node 1 is already in round 3
    effects = []
    for r in range(3):  # each round closes at once: 2 delivered, 1 is ahead and never will
        a.start_round(r, 0.1 * r)
        a.receive(b"2", encode(Dual(2, r, 200 + r, x)), 0.1 * r)
        assert a.ready(0.1 * r)
        result, more = a.close_round(0.1 * r)
        assert set(result.duals) == {2}
        effects += more
    assert effects == [] and a.alive() == {1, 2}


def test_a_node_behind_skips_to_where_most_alive_neighbours_are() -> None:
    a = GossipProtocol(0, [1, 2, 3], CFG, dim=3, now=0.0, first_round=30)
    assert a.catch_up(30) == 30  # nobody heard yet: nothing to catch up with
    a.receive(b"1", encode(Heartbeat(1, 10**9, 1)), 0.1)  # one claim, however far: outvoted
    assert a.catch_up(30) == 30
    a.receive(b"2", encode(Heartbeat(2, 31, 1)), 0.1)
    assert a.catch_up(30) == 30  # a majority one round ahead is ordinary lockstep
    a.receive(b"3", encode(Heartbeat(3, 44, 1)), 0.1)
    a.receive(b"2", encode(Heartbeat(2, 45, 2)), 0.1)
    assert a.catch_up(30) == 45 and a.catch_up(50) == 50  # most are at 45 or later; never back
    a.receive(b"3", encode(Bye(3, 44, 2, "done")), 0.2)
    assert a.catch_up(30) == 45  # of the two alive, the lower median: min(45, 10**9)


def test_a_node_ahead_of_most_neighbours_waits_for_them() -> None:
    a = GossipProtocol(0, [1, 2], CFG, dim=3, now=0.0, first_round=60)
    a.receive(b"1", encode(Heartbeat(1, 40, 1)), 0.1)
    assert a.ahead_of(60) is None  # one far behind; the other, not heard, counts as in step
    a.receive(b"2", encode(Heartbeat(2, 59, 1)), 0.1)
    assert a.ahead_of(60) is None  # one of two in step: no majority behind, go on
    a.receive(b"2", encode(Hello(2, 45, 2, 3)), 0.1)  # it restarted further back
    assert a.ahead_of(60) == 45


def test_a_hello_from_behind_is_answered_with_our_round_and_the_rejoin_is_seen() -> None:
    a = GossipProtocol(0, [1], CFG, dim=3, now=0.0, first_round=40)
    a.start_round(44, 0.0)
    # The neighbour restarted from round 30 (a Hello moves its round back, from 43 here).
    a.receive(b"1", encode(Dual(1, 43, 1, np.zeros(3, np.float32))), 0.0)
    effects = a.receive(b"1", encode(Hello(1, 30, 100, 3)), 0.1)
    reply = effects[-1]
    assert effects[0] == PeerStarted(1, 30)
    assert isinstance(reply, Send) and isinstance(reply.msg, Heartbeat) and reply.msg.round == 44
    assert a.book.peer_round[1] == 30
    # The restarted node learns from that reply where to run, and its first message back in
    # step is noticed: the edge's compressed streams, if any, restart there.
    b = GossipProtocol(1, [0], CFG, dim=3, now=0.0, first_round=30, seq_start=1000)
    deliver(b, [reply], 0.1)
    assert b.catch_up(30) == 44
    b.start_round(44, 0.2)
    back = a.receive(b"1", encode(b.dual(0, np.ones(3, np.float32), 0.2).msg), 0.2)
    assert back == [PeerRejoined(1, 44)]
    assert a.ready(0.2)  # and it completes the round the neighbour waited in


def test_a_restored_node_is_told_which_of_its_rounds_were_heard_before_its_hello() -> None:
    """A node restored from a backup resumes at round 2 after releasing rounds 0-4: the
    neighbour's answer to its Hello says so, and what the node releases afterwards does not
    move that number (it would otherwise be charged twice at every restart)."""
    old = GossipProtocol(0, [1], CFG, dim=3, now=0.0, seq_start=1000)
    b = GossipProtocol(1, [0], CFG, dim=3, now=0.0)
    deliver(b, old.hello(0.0), 0.0)
    x = np.zeros(3, np.float32)
    for r in range(5):
        old.start_round(r, 0.1 * r)
        b.start_round(r, 0.1 * r)
        deliver(b, [old.dual(1, x, 0.1 * r)], 0.1 * r)
        b.close_round(0.1 * r)
    assert b.heartbeat(0, 0.5).msg == Heartbeat(1, 4, b._seq)  # a plain one tells nothing
    assert b.heartbeat(0, 0.5, answer=True).msg == Heartbeat(1, 4, b._seq, 0)  # Hello first

    restored = GossipProtocol(0, [1], CFG, dim=3, now=1.0, first_round=2, seq_start=5000)
    assert restored.unanswered() == [1] and restored.heard_of_us == -1
    answer = [e for e in deliver(b, restored.hello(1.0), 1.0) if isinstance(e, Send)]
    assert [s.msg for s in answer] == [Heartbeat(1, 4, b._seq, 5)]
    deliver(restored, answer, 1.0)
    assert restored.unanswered() == [] and restored.heard_of_us == 4
    # Its releases after the Hello are not "earlier runs": the answer's repeats carry the
    # number as it stood at the Hello.
    restored.start_round(5, 1.1)
    deliver(b, [restored.dual(1, x, 1.1)], 1.1)
    assert b.heartbeat(0, 1.2, answer=True).msg == Heartbeat(1, 4, b._seq, 5)


def test_a_neighbours_own_hello_answers_too_and_tells_nothing() -> None:
    a = GossipProtocol(0, [1, 2], CFG, dim=3, now=0.0)
    a.receive(b"1", encode(Hello(1, 0, 10, 3)), 0.0)  # restarted itself: remembers nothing
    assert a.unanswered() == [2]
    a.receive(b"2", encode(Dual(2, 0, 10, np.zeros(3, np.float32))), 0.0)
    a.receive(b"2", encode(Heartbeat(2, 0, 11)), 0.0)
    assert a.unanswered() == [2]  # a dual or a plain heartbeat says nothing of our rounds
    a.receive(b"2", encode(Heartbeat(2, 0, 12, 0)), 0.0)
    assert a.unanswered() == [] and a.heard_of_us == -1
    a.receive(b"2", encode(Heartbeat(2, 0, 13, 8)), 0.0)
    a.receive(b"1", encode(Heartbeat(1, 0, 14, 3)), 0.0)  # the highest any neighbour heard
    assert a.heard_of_us == 7
