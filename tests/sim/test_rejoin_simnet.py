"""A restarted node rejoins its neighbours, on the simulated network (virtual clock, seeded).

Node 3 of a 6-ring crashes and comes back when its neighbours are 2, 10 or 50 rounds past the
round it resumes at, or restored from an older checkpoint, or ahead of them. Whatever the gap:
it never runs a round twice, it skips to its neighbours' round (or, ahead of them, waits until
they get there) and hears a neighbour in at least 90 % of the rounds it runs afterwards, and
the others never wait a deadline for it once it is back (their median round time stays within
2x the fault-free one). One neighbour claiming a round far ahead makes nobody skip. The same
cases run as real daemons in tests/faults/test_rejoin.py. A node restored from a backup (its
ledger and checkpoint 8 rounds old) charges the rounds its neighbours heard before it came
back and never releases one of them again (real daemons: tests/faults/test_backup_restore.py).
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter

import pytest

from gossip.messages import Heartbeat
from gossip.protocol import PeerRejoined, Send
from tests.sim.simnet import SIM_CONFIG, Closed, SimNet
from topologies import build

VICTIM, ROUNDS = 3, 160
DEADLINE = SIM_CONFIG.rounds.deadline


def round_times(closes: list[Closed]) -> list[float]:
    return [b.started - a.started for a, b in itertools.pairwise(closes)]


def fault_free_median() -> float:
    net = SimNet(build("ring", 6), rounds=60)
    net.run()
    return statistics.median(t for n in net.nodes for t in round_times(net.closed[n]))


def restart_when_ahead_by(gap: int, *, rewind: int = 0) -> tuple[SimNet, float, int]:
    """Crash the victim at 2 s; restart it once the others are `gap` rounds past the round
    it resumes at (`rewind` rounds earlier than that: an older checkpoint). Returns the net,
    the restart time and the round it resumed at."""
    net = SimNet(build("ring", 6), rounds=ROUNDS)
    net.run_until(2.0)
    old = net.nodes[VICTIM]
    resume = old.next_round + (old.phase == "wait") - rewind
    net.crash(VICTIM)
    others = [n for n in net.nodes if n != VICTIM]
    while min(net.nodes[n].next_round for n in others) < resume + rewind + gap:
        net.step()
    restarted = net.clock.now
    net.restart(VICTIM, first_round=resume)
    net.run()
    return net, restarted, resume


def check_rejoin(net: SimNet, restarted: float, *, noticed: bool = True) -> None:
    mine = net.closed[VICTIM]
    rounds = [c.result.round for c in mine]
    assert rounds == sorted(set(rounds)), "a round was run twice"
    after = [c for c in mine if c.started > restarted]
    assert after and after[-1].result.round == ROUNDS - 1
    heard = sum(bool(c.result.duals) for c in after)
    assert heard >= 0.9 * len(after), f"heard a neighbour in {heard} of {len(after)} rounds"
    usual = fault_free_median()
    for n in (2, 4):
        later = [c for c in net.closed[n] if c.started > restarted]
        assert statistics.median(round_times(later)) <= 2 * usual
        # Once it said Hello it costs them no deadline: every round closes well before one.
        assert max(c.closed - c.started for c in later) < DEADLINE
        # Seen two or more rounds behind, then back in step (at a gap of 2 the Hello may land
        # while they are still one round short of that).
        seen = any(isinstance(e, PeerRejoined) and e.peer == VICTIM for _, e in net.notices[n])
        assert seen or not noticed


@pytest.mark.parametrize("gap", [2, 10, 50])
def test_a_node_restarted_behind_its_neighbours_skips_to_them(gap: int) -> None:
    net, restarted, resume = restart_when_ahead_by(gap)
    check_rejoin(net, restarted, noticed=gap > 2)
    skips = [e[3:] for e in net.log if e[0] == "skip" and e[2] == VICTIM]
    assert len(skips) == 1 and skips[0][0] == resume
    assert skips[0][1] - resume >= gap  # the others moved on while it started up


def test_a_node_restored_from_an_older_checkpoint_rejoins_too() -> None:
    net, restarted, resume = restart_when_ahead_by(2, rewind=8)
    check_rejoin(net, restarted)
    mine = [c.result.round for c in net.closed[VICTIM] if c.started > restarted]
    assert mine[0] >= resume + 8 + 2  # it never re-ran a round its neighbours had left


def test_a_node_that_comes_back_ahead_waits_for_its_neighbours() -> None:
    net = SimNet(build("ring", 6), rounds=ROUNDS)
    net.run_until(2.0)
    net.crash(VICTIM)
    net.run_until(3.0)
    ahead = max(x.next_round for x in net.nodes.values()) + 20  # a later checkpoint
    restarted = net.clock.now
    net.restart(VICTIM, first_round=ahead)
    net.run()
    for n in net.nodes:
        rounds = [c.result.round for c in net.closed[n]]
        assert rounds == sorted(set(rounds)) and rounds[-1] == ROUNDS - 1
        # Nobody waits a deadline in a round: it waits before its next round until they
        # get there (they do not skip: neither is a majority of their neighbours ahead).
        assert max(c.closed - c.started for c in net.closed[n] if c.started > restarted) \
            < DEADLINE
        later = [c for c in net.closed[n] if c.started > restarted + 1.0]
        assert sum(c.result.duals.keys() == net.adj[n] for c in later) >= 0.9 * len(later)
    assert all(r >= ahead for r in (c.result.round for c in net.closed[VICTIM]
                                    if c.started > restarted))


def test_one_neighbour_claiming_a_round_far_ahead_makes_nobody_skip() -> None:
    """A hostile node 3 says it is at round 10**6 (a Heartbeat, every half second): were the
    furthest neighbour followed, its neighbours would skip to the end of the run and theirs
    after them. A majority of each node's neighbours is needed to skip."""
    net = SimNet(build("ring", 6), rounds=60)
    net.run_until(1.0)
    for t in range(12):
        net.run_until(1.0 + 0.5 * t)
        for j in (2, 4):
            net.inject(VICTIM, Send(j, Heartbeat(VICTIM, 10**6, net.nodes[VICTIM].last_seq + 1)))
    net.run()
    assert not [e for e in net.log if e[0] == "skip"]
    for n in net.nodes:
        assert [c.result.round for c in net.closed[n]] == list(range(60))


def test_a_node_restored_from_a_backup_charges_what_its_neighbours_heard() -> None:
    """Restored at once, its neighbours are still where it left them, so nothing makes it skip:
    without being told what they heard it would release rounds it had released (fresh noise,
    one charge). Every release of every round must be charged at least once per release."""
    net = SimNet(build("ring", 6), rounds=60)
    net.run_until(2.0)
    old = net.nodes[VICTIM]
    released = old.next_round + (old.phase == "wait")  # rounds 0 .. released - 1 went out
    backup = released - 8  # the restored ledger holds the rounds before this one
    net.crash(VICTIM)
    restarted = net.clock.now
    net.restart(VICTIM, first_round=backup)
    net.run()
    runs = {(s.round, s.t >= restarted) for s in net.sends
            if s.src == VICTIM and s.kind == "Dual"}
    releases = Counter(r for r, _ in runs)  # each run that sent a round released it once
    ran = [c.result.round for c in net.closed[VICTIM] if c.started >= restarted]
    charged = Counter(range(backup)) + Counter(ran) + Counter(net.charged[VICTIM])
    assert net.charged[VICTIM] == list(range(backup, released))
    assert not set(ran) & set(range(released)), "a round was released again"
    assert all(charged[r] >= k for r, k in releases.items())
    assert ran and ran[-1] == 59
