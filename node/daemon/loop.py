"""The node daemon's event loop: the only place that joins the algorithm to sockets and time.

Three concurrent activities share one uvloop event loop:
- `_receive_loop` feeds every inbound message to the sans-I/O `GossipProtocol` (it never raises
  for anything a peer sends) and wakes the round loop;
- `_tick_loop` sends heartbeats and notices silent peers;
- `_rounds` runs the rounds, each in four named steps: `_compute` (in a worker thread, so
  receiving and heartbeats go on; it ends with the spend durable), `_release` (the messages
  sent), `_collect` (wait for the neighbours until the deadline, absorb) and `_record` (metrics,
  checkpoint).

No wait is unbounded: start-up waits at most `startup_timeout`, a round at most `round_timeout`,
shutdown at most a few seconds. SIGTERM/SIGINT end the current step, send BYE, flush, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gossip.codec import encode
from gossip.liveness import PeerDown, PeerUp
from gossip.protocol import (
    Effect,
    GossipProtocol,
    PeerRejoined,
    PeerStarted,
    Send,
)
from gossip.transport import Transport, ZmqTransport
from node.core.runner import NodeRunner, RoundOutput
from node.daemon.settings import NodeConfig
from node.daemon.state import carry_results, save_state
from node.daemon.wiring import (
    compute_round,
    gossip_config,
    in_daemon_thread,
    neighbour_endpoints,
    open_transport,
    own_copy,
)
from node.outputs.files import MetricsWriter, read_metrics
from node.outputs.records import ExitReason, final_record, peak_rss
from node.outputs.runner_records import Timing, Traffic, round_record, runner_entry

if TYPE_CHECKING:  # prometheus_client is imported only when node.metrics_port is set
    from node.daemon.prometheus import Exporter

logger = logging.getLogger(__name__)
HELLO_REPEAT = 0.5  # seconds between Hellos to neighbours not heard yet at start-up


class Daemon:
    """One node: built from a NodeConfig and a ready NodeRunner; `await run()` returns the exit."""

    def __init__(self, cfg: NodeConfig, runner: NodeRunner,
                 announce: Callable[[str], None], exporter: Exporter | None = None) -> None:
        self.cfg = cfg
        self.exporter = exporter  # node.metrics_port: each record also goes to Prometheus
        self.runner = runner  # its budget keeps the ledger (None without DP)
        self.announce = announce  # prints the READY line
        self.me = cfg.node.id
        self.out = Path(cfg.node.out)
        self.neighbours = sorted(cfg.neighbours)
        self.exit_reason = ExitReason.FINISHED
        # Set by a signal, or when the run ends; every wait also watches it.
        self.stop = asyncio.Event()
        # Set whenever something arrived or time advanced; the round loop waits on it.
        self.wake = asyncio.Event()
        self.metrics = MetricsWriter(self.out)
        previous = read_metrics(self.metrics.path) if self.metrics.path.stat().st_size else []
        # Counters stay monotone across a restart: continue from the last recorded values.
        self.bytes_offset = (previous[-1]["bytes_sent"], previous[-1]["bytes_received"]) \
            if previous else (0, 0)
        # Rounds this node ran and recorded, over all its restarts: the others up to the last
        # round were skipped to rejoin or lost with a crash (final.json `rounds_skipped`).
        self.rounds_recorded = {int(r["round"]) for r in previous}
        carry_results(runner, previous)
        # Bound in run(): the socket layer, and what sends go through (the fault layer or it).
        self.zmq: ZmqTransport | None = None
        self.transport: Transport | None = None
        self.proto = GossipProtocol(self.me, self.neighbours, gossip_config(cfg),
                                    dim=runner.setup.layout.numel, now=time.monotonic(),
                                    first_round=runner.round,
                                    seq_start=time.time_ns() // 1000)
        self.started = time.monotonic()  # when HELLO went out; re-set by _startup
        # Neighbours back in step after skipping rounds; their edges are resynchronised between
        # rounds, never while a compute thread is using the algorithm.
        self.rejoined: set[int] = set()

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> ExitReason:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        self.zmq, self.transport = open_transport(self.cfg, self.runner.setup.layout.numel)
        self.announce(f"READY {self.zmq.endpoint}")
        try:
            for j, ep in (await neighbour_endpoints(self.cfg, self.stop)).items():
                self.zmq.connect(j, ep)
            async with asyncio.TaskGroup() as group:
                receiver = group.create_task(self._receive_loop(self.zmq))
                ticker = group.create_task(self._tick_loop())
                try:
                    await self._startup()
                    await self._rounds()
                finally:
                    self._apply(self.proto.bye(self.exit_reason, time.monotonic()))
                    receiver.cancel()
                    ticker.cancel()
        finally:
            self.metrics.close()
            if self.transport is not self.zmq:
                self.transport.close()
            self.zmq.close(linger_ms=500)
        return self.exit_reason

    def _request_stop(self) -> None:
        if not self.stop.is_set():
            logger.info("stop requested")
            self.exit_reason = ExitReason.STOPPED
            self.stop.set()
            self.wake.set()

    async def _startup(self) -> None:
        """Say HELLO and wait (bounded) until every neighbour has answered (saying which of our
        rounds it heard before, gossip/protocol.py) or said its own Hello."""
        self.started = time.monotonic()
        self._apply(self.proto.hello(self.started))
        deadline = time.monotonic() + self.cfg.node.startup_timeout
        hello_again = self.started + HELLO_REPEAT
        while not self.stop.is_set() and time.monotonic() < deadline:
            silent = self.proto.unanswered()
            if not silent:
                logger.info("heard every neighbour %.2f s after Hello",
                            time.monotonic() - self.started)
                return
            if time.monotonic() >= hello_again:
                # A Hello sent before our link was up was dropped (the DEALER queues only on
                # a live connection), and a restarted node's neighbours learn from it alone
                # that its round moved back. Repeat it to those not heard yet.
                self._apply(self.proto.hello(time.monotonic(), silent))
                hello_again = time.monotonic() + HELLO_REPEAT
            await self._wait_wake(min(deadline, hello_again))
        if not self.stop.is_set():
            logger.warning("starting without hearing from %s", self.proto.unanswered())

    async def _wait_wake(self, deadline: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), max(0.0, min(deadline - time.monotonic(),
                                                                  0.5)))

    async def _receive_loop(self, zmq_transport: ZmqTransport) -> None:
        while True:
            identity, frames = await zmq_transport.recv()
            try:
                effects = self.proto.receive(identity, frames, time.monotonic())
            except Exception:  # the protocol promises not to raise; never let a peer kill us
                logger.exception("unexpected error handling a message from %r", identity)
                continue
            self._apply(effects)
            self.wake.set()

    async def _tick_loop(self) -> None:
        interval = self.cfg.node.heartbeat_interval / 2
        while True:
            await asyncio.sleep(interval)
            self._apply(self.proto.tick(time.monotonic()))
            self.wake.set()

    def _apply(self, effects: Iterable[Effect]) -> None:
        assert self.transport is not None, "effects are applied only after run() opened it"
        wire = self.cfg.node.wire_dtype
        for effect in effects:
            match effect:
                case Send(peer=peer, msg=msg):
                    self.transport.send(peer, encode(msg, wire))
                case PeerDown(peer=peer, reason=reason):
                    logger.warning("neighbour %d is down (%s)", peer, reason)
                case PeerUp(peer=peer):
                    logger.info("neighbour %d is back", peer)
                case PeerRejoined(peer=peer):
                    self.rejoined.add(peer)
                case PeerStarted(peer=peer):
                    # Repeat the Heartbeat that answers its Hello: the one sent right now may
                    # find our link to it still reconnecting (up to 1 s).
                    loop = asyncio.get_running_loop()
                    for delay in (0.3, 1.1):
                        loop.call_later(delay, self._tell_round, peer)

    def _tell_round(self, peer: int) -> None:
        if not self.stop.is_set():
            self._apply([self.proto.heartbeat(peer, time.monotonic(), answer=True)])

    # ---- one round ---------------------------------------------------------------------

    async def _rounds(self) -> None:
        while self.runner.round < self.cfg.run.rounds and not self.stop.is_set():
            await self._wait_if_ahead()
            self._catch_up()
            if self.runner.round >= self.cfg.run.rounds or self.stop.is_set():
                break
            r = self.runner.round
            started = time.monotonic()
            out = await self._compute()
            if out is None:  # stopping, or the budget is spent
                return
            compute = time.monotonic() - started
            self._release(r, out)
            wait_start = time.monotonic()
            primals, heard = await self._collect()
            wait = time.monotonic() - wait_start
            await self._record(r, out.loss, compute, wait, started, primals, heard)
            pace_until = started + self.cfg.node.min_round_seconds
            while time.monotonic() < pace_until and not self.stop.is_set():
                await self._wait_wake(pace_until)

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

    async def _compute(self) -> RoundOutput | None:
        """The round's CPU work off the event loop; None when stopping or out of budget."""
        step = in_daemon_thread(functools.partial(compute_round, self.runner,
                                                  set(self.proto.alive())))
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([step, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not step.done():  # stopping: give the step a moment, then abandon it unsent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(step), 2.0)
            if not step.done():
                return None
        out = step.result()
        if out is None:
            logger.warning("the next round would exceed the privacy budget; stopping")
            self.exit_reason = ExitReason.BUDGET
        return out

    def _release(self, r: int, out: RoundOutput) -> None:
        """Send the round's messages: its spend is durable already (`NodeRunner.step` commits
        it to the budget's ledger before it returns), so nothing leaves before the ledger has
        it."""
        now = time.monotonic()
        self.proto.start_round(r, now)
        self._apply([self.proto.dual(j, y.numpy() if isinstance(y, torch.Tensor) else y, now)
                     for j, y in out.duals.items()])
        if out.primal is not None:
            self._apply(self.proto.primal(out.primal.clone().numpy(), now))

    async def _collect(self) -> tuple[dict[int, torch.Tensor], int]:
        """Wait for the neighbours (until the deadline or a stop), absorb what came; returns
        the primals received, for the consensus distance, and how many neighbours' duals
        arrived."""
        while not self.proto.ready(time.monotonic()) and not self.stop.is_set():
            await self._wait_wake(self.proto.deadline)
        result, effects = self.proto.close_round(time.monotonic())
        self._apply(effects)
        # A compressed payload is used as decoded (read-only), through the stream's own copy.
        received = {j: own_copy(y) if isinstance(y, np.ndarray) else y
                    for j, y in result.duals.items()}
        self.runner.absorb(received)
        if self.runner.sends_model:
            return self.runner.models_heard(received), len(received)
        return {j: own_copy(y) for j, y in result.primals.items()}, len(received)

    async def _record(self, r: int, loss: float, compute: float, wait: float, started: float,
                      primals: dict[int, torch.Tensor], heard: int) -> None:
        runner = self.runner
        scored = None
        if runner.due_for_evaluation(r):
            scored = await in_daemon_thread(runner.evaluate)
        sent, received = self._bytes()
        self.rounds_recorded.add(r)
        self.metrics.write(record := round_record(
            runner, r, time=time.time(), loss=loss, evaluation=scored, primals=primals,
            traffic=Traffic(sent, received, len(self.proto.alive()), heard),
            timing=Timing(time.monotonic() - started, compute, wait)))
        if self.exporter is not None:
            self.exporter.observe(record, runner.round, self.proto.rejections())
        if (r + 1) % self.cfg.node.checkpoint_every == 0 or r + 1 == self.cfg.run.rounds:
            await in_daemon_thread(lambda: save_state(self.runner, self.cfg, r))

    # ---- results -----------------------------------------------------------------------

    def _bytes(self) -> tuple[int, int]:
        stats = self.zmq.stats if self.zmq is not None else None
        sent = (stats.bytes_sent if stats else 0) + self.bytes_offset[0]
        received = (stats.bytes_received if stats else 0) + self.bytes_offset[1]
        return sent, received

    def _exit(self) -> ExitReason:
        """Why the node stopped; a node that has run every round is finished, also when it was
        stopped after a restart that found nothing left to do."""
        if self.exit_reason == ExitReason.STOPPED and self.runner.round >= self.cfg.run.rounds:
            return ExitReason.FINISHED
        return self.exit_reason

    def final(self) -> dict[str, Any]:
        runner = self.runner
        entry = runner_entry(runner, bytes_sent=self._bytes()[0], exit=self._exit())
        return final_record(entry, runner.setup.plan, self.proto.rejections(),
                            peak_rss_bytes=peak_rss(), suspects=runner.suspects(),
                            rounds_skipped=runner.round - len(self.rounds_recorded))
