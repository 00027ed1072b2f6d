"""Liveness with a simulated clock: suspect, down, up again; heartbeats only when idle."""

from __future__ import annotations

import itertools

import pytest

from gossip.liveness import Liveness, LivenessConfig, PeerDown, PeerState, PeerUp, SendHeartbeat

CFG = LivenessConfig(
    heartbeat_interval=1.0, suspect_after=3.0, down_after=6.0, max_missed_deadlines=3
)


def run(live: Liveness, start: float, end: float, step: float = 0.1) -> list[tuple[float, object]]:
    """Tick from start to end; return (time, effect) pairs."""
    out: list[tuple[float, object]] = []
    n = round((end - start) / step)
    for i in range(n + 1):
        t = start + i * step
        out += [(t, e) for e in live.tick(t)]
    return out


def test_a_silent_peer_is_suspect_then_down_within_the_bound_and_up_when_heard() -> None:
    live = Liveness([1, 2], CFG, now=0.0)
    for t in range(0, 20):
        live.heard(2, float(t))  # peer 2 keeps talking, peer 1 falls silent at 0
        effects = live.tick(float(t) + 0.5)
        if t + 0.5 < 3.0:
            assert live.state(1) is PeerState.UP
        elif t + 0.5 < 6.0:
            assert live.state(1) is PeerState.SUSPECT
            assert live.alive() == {1, 2}  # still waited for
        if t + 0.5 >= 6.0:
            assert live.state(1) is PeerState.DOWN
        downs = [e for e in effects if isinstance(e, PeerDown)]
        assert downs == ([PeerDown(1, "silent")] if t == 6 else [])
    assert live.alive() == {2}
    assert live.state(2) is PeerState.UP
    assert live.heard(1, 20.0) == [PeerUp(1)]
    assert live.state(1) is PeerState.UP and live.alive() == {1, 2}
    assert live.heard(1, 20.1) == []  # only the DOWN -> UP transition is an effect


def test_suspect_comes_back_up_silently() -> None:
    live = Liveness([1], CFG, now=0.0)
    live.tick(4.0)
    assert live.state(1) is PeerState.SUSPECT
    assert live.heard(1, 4.5) == []
    assert live.state(1) is PeerState.UP


def test_heartbeats_only_when_idle() -> None:
    live = Liveness([1, 2], CFG, now=0.0)
    for i in range(1, 51):  # we send peer 1 a message every 0.1 s for 5 s
        live.sent(1, i * 0.1)
        for e in live.tick(i * 0.1):
            assert e != SendHeartbeat(1)
    beats = [t for t, e in run(live, 5.0, 10.0) if e == SendHeartbeat(2)]
    # Idle towards peer 2 from the start: one heartbeat per interval, never two.
    assert len(beats) == 5
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(beats))


def test_missed_deadlines_take_a_peer_down_and_on_time_delivery_resets() -> None:
    live = Liveness([1], CFG, now=0.0)
    assert live.missed_deadline(1, 1.0) == []
    assert live.missed_deadline(1, 2.0) == []
    live.delivered_on_time(1)
    assert live.missed_deadline(1, 3.0) == []
    assert live.missed_deadline(1, 4.0) == []
    assert live.missed_deadline(1, 5.0) == [PeerDown(1, "deadlines")]
    assert live.missed_deadline(1, 6.0) == []  # already down: no second effect
    assert live.heard(1, 6.5) == [PeerUp(1)]
    # Alive but still always late: one more miss and it is down again.
    assert live.missed_deadline(1, 7.0) == [PeerDown(1, "deadlines")]


def test_bye_takes_a_peer_down_at_once() -> None:
    live = Liveness([1], CFG, now=0.0)
    assert live.said_bye(1) == [PeerDown(1, "bye")]
    assert live.alive() == frozenset()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        LivenessConfig(heartbeat_interval=2.0, suspect_after=1.0, down_after=3.0)
    with pytest.raises(ValueError):
        LivenessConfig(max_missed_deadlines=0)
