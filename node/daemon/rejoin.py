"""Rejoining, the daemon's side of it (gossip/PROTOCOL.md, "Rejoining"): between rounds a node
that came back ahead of most neighbours waits for them (`_wait_if_ahead`), and one that fell
behind skips to their round, after charging the rounds an earlier run released that its ledger
does not hold, and resynchronises the edges of neighbours that skipped (`_catch_up`). The rule
itself is the protocol's (`GossipProtocol.ahead_of`, `catch_up`); this decides and logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gossip.protocol import GossipProtocol
from node.core.runner import NodeRunner
from node.daemon.settings import NodeConfig

# The daemon loop's logger: these lines are the loop's, and keep the name they always had.
logger = logging.getLogger("node.daemon.loop")


class Rejoining:
    """The between-rounds steps of `node.daemon.loop.Daemon` that keep it in step with its
    neighbours; the daemon provides the state below."""

    cfg: NodeConfig
    runner: NodeRunner
    proto: GossipProtocol
    stop: asyncio.Event
    rejoined: set[int]
    _wait_wake: Callable[[float], Awaitable[None]]

    async def _wait_if_ahead(self) -> None:
        """Back ahead of most neighbours (a later checkpoint than theirs): wait for them to
        reach our round, for as long as they make progress (gossip/protocol.py `ahead_of`)."""
        r = self.runner.round
        behind = self.proto.ahead_of(r)
        if behind is None:
            return
        logger.info("round %d is ahead of most neighbours (at %d): waiting for them", r, behind)
        progress = time.monotonic()
        while behind is not None and not self.stop.is_set():
            if time.monotonic() - progress > self.cfg.node.round_timeout:
                logger.warning("neighbours stay at round %d, behind our %d; going on without "
                               "waiting", behind, r)
                return
            await self._wait_wake(time.monotonic() + 0.5)
            now_behind = self.proto.ahead_of(r)
            if now_behind != behind:
                progress = time.monotonic()
            behind = now_behind

    def _catch_up(self) -> None:
        """Between rounds: skip to the neighbours' round if they have left ours behind
        (gossip/protocol.py), and resynchronise the edges of neighbours that did so."""
        for peer in sorted(self.rejoined):
            self.runner.peer_rejoined(peer)
        self.rejoined.clear()
        charged = self.runner.charge_earlier_run(self.proto.heard_of_us)
        if charged:
            logger.warning("neighbours heard rounds up to %d from an earlier run that the privacy "
                           "ledger did not hold (restored from a backup?): charged rounds %d-%d "
                           "and never running them again", charged[-1], charged[0], charged[-1])
        r = self.runner.round
        target = min(self.proto.catch_up(r), self.cfg.run.rounds)
        if target > r:
            where = ", ".join(f"{j} at {self.proto.book.peer_round[j]}"
                              for j in sorted(self.proto.alive())
                              if j in self.proto.book.peer_round)
            logger.info("rejoining at round %d: skipping rounds %d-%d, which the neighbours ran "
                        "without us (%s); nothing is released for them", target, r, target - 1,
                        where)
            self.runner.skip_to(target)
