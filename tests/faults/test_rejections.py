"""In-process checks of the two receive-side rules the hostile-peer scenario relies on
(bound: < 1 s): a tensor above the RMS bound is rejected as NormError before it counts as a
sign of life or a delivery, and tensor messages the round book drops (an old round re-sent
with a fresh sequence number, a second copy for a round, a round too far ahead) are counted
per peer."""

from __future__ import annotations

import numpy as np

from gossip.codec import encode
from gossip.liveness import LivenessConfig
from gossip.messages import Dual
from gossip.protocol import GossipConfig, GossipProtocol
from gossip.rounds import RoundConfig

DIM = 8


def proto(max_rms: float = float("inf")) -> GossipProtocol:
    cfg = GossipConfig(rounds=RoundConfig(deadline=1.0, future_window=2),
                       liveness=LivenessConfig(0.5, 1.0, 2.0, max_missed_deadlines=1),
                       max_message_rms=max_rms)
    return GossipProtocol(0, [1], cfg, dim=DIM, now=0.0)


def dual(r: int, seq: int, value: float) -> list[bytes]:
    return [bytes(f) for f in encode(Dual(1, r, seq, np.full(DIM, value, np.float32)))]


def test_a_tensor_above_the_bound_is_rejected_and_is_no_sign_of_life() -> None:
    p = proto(max_rms=10.0)
    p.start_round(0, 0.0)
    assert p.receive(b"1", dual(0, 1, 1e6), 0.1) == []
    assert p.inbox.rejected[1] == {"NormError": 1}
    assert p.liveness.last_heard(1) == 0.0  # not heard
    result, effects = p.close_round(1.5)
    assert 1 not in result.duals and effects  # a missed deadline: the peer goes down
    p.receive(b"1", dual(1, 2, 10.0), 1.6)  # exactly at the bound: accepted
    assert p.inbox.accepted[1] == 1


def test_dropped_round_messages_are_counted_per_peer() -> None:
    p = proto()
    p.start_round(0, 0.0)
    p.receive(b"1", dual(0, 1, 0.0), 0.1)
    p.receive(b"1", dual(0, 2, 0.0), 0.1)  # a second dual for round 0
    p.close_round(0.2)
    p.start_round(1, 0.3)
    p.receive(b"1", dual(0, 3, 0.0), 0.4)  # round 0 again, fresh sequence number
    p.receive(b"1", dual(9, 4, 0.0), 0.4)  # beyond the future window
    assert p.inbox.rejected[1] == {"DuplicateRound": 1, "StaleRound": 1, "TooFarAhead": 1}
