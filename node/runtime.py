"""The node daemon's event loop: the only place that joins the algorithm to sockets and time.

Three concurrent activities share one uvloop event loop:
- `_receive_loop` feeds every inbound message to the sans-I/O `GossipProtocol` (it never raises
  for anything a peer sends) and wakes the round loop;
- `_tick_loop` sends heartbeats and notices silent peers;
- `_rounds` runs the rounds: compute in a worker thread (so receiving and heartbeats go on),
  record the privacy spend durably, send, wait for the neighbours until the deadline, absorb.

No wait is unbounded: start-up waits at most `startup_timeout`, a round at most `round_timeout`,
shutdown at most a few seconds. SIGTERM/SIGINT end the current step, send BYE, flush, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from gossip.codec import encode
from gossip.faults import FaultyTransport
from gossip.keys import load_curve_keys
from gossip.liveness import LivenessConfig, PeerDown, PeerUp
from gossip.protocol import GossipConfig, GossipProtocol, Send
from gossip.rounds import RoundConfig
from gossip.transport import Transport, TransportConfig, ZmqTransport
from node.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from node.daemon_config import NodeConfig
from node.faults_config import fault_config
from node.metrics import MetricsWriter, read_metrics, write_json_atomic
from node.runner import NodeRunner, RoundOutput
from privacy.ledger import Ledger

logger = logging.getLogger(__name__)
T = TypeVar("T")


def in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run `fn` in a daemon thread: a step abandoned at shutdown cannot hold the process."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def body() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the awaiting coroutine, not lost
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=body, daemon=True, name="compute").start()
    return future


class Daemon:
    """One node: built from a NodeConfig and a ready NodeRunner; `await run()` returns the exit."""

    def __init__(self, cfg: NodeConfig, runner: NodeRunner, ledger: Ledger | None,
                 announce: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.runner = runner
        self.ledger = ledger
        self.announce = announce
        self.me = cfg.node.id
        self.out = Path(cfg.node.out)
        self.neighbours = sorted(cfg.neighbours)
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.exit_reason = "finished"
        self.metrics = MetricsWriter(self.out)
        previous = read_metrics(self.metrics.path) if self.metrics.path.stat().st_size else []
        # Counters stay monotone across a restart: continue from the last recorded values.
        self.bytes_offset = (previous[-1]["bytes_sent"], previous[-1]["bytes_received"]) \
            if previous else (0, 0)

    # ---- set-up ------------------------------------------------------------------------

    def _open_transport(self) -> tuple[ZmqTransport, Transport]:
        n = self.cfg.node
        curve = load_curve_keys(Path(n.curve_keys), self.me, self.neighbours) \
            if n.curve_keys else None
        dim = self.runner.setup.layout.numel
        zmq_transport = ZmqTransport(self.me, n.listen, {},
                                     config=TransportConfig.for_model(dim), curve=curve)
        faults = fault_config(self.cfg.faults)
        sender: Transport = zmq_transport if faults is None else \
            FaultyTransport(zmq_transport, self.me, faults)
        return zmq_transport, sender

    async def _endpoints(self) -> dict[int, str]:
        """Neighbour endpoints from the config, or from the launcher's file (bounded wait)."""
        endpoints = {j: ep for j, ep in self.cfg.neighbours.items() if ep}
        path = Path(self.cfg.node.endpoints_file) if self.cfg.node.endpoints_file else None
        deadline = time.monotonic() + self.cfg.node.startup_timeout
        while path is not None and len(endpoints) < len(self.neighbours):
            with contextlib.suppress(OSError, ValueError):
                listed = json.loads(path.read_text())
                endpoints.update({j: listed[str(j)] for j in self.neighbours if str(j) in listed})
            if len(endpoints) == len(self.neighbours) or time.monotonic() > deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.1)
            if self.stop.is_set():
                break
        missing = [j for j in self.neighbours if j not in endpoints]
        if missing:
            logger.warning("no endpoint for neighbours %s; running without them", missing)
        return endpoints

    # ---- the loop ----------------------------------------------------------------------

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop)
        zmq_transport, transport = self._open_transport()
        self.zmq = zmq_transport
        self.transport = transport
        self.announce(f"READY {zmq_transport.endpoint}")
        try:
            for j, ep in (await self._endpoints()).items():
                zmq_transport.connect(j, ep)
            n = self.cfg.node
            gossip_cfg = GossipConfig(
                rounds=RoundConfig(deadline=n.round_timeout, future_window=4),
                liveness=LivenessConfig(heartbeat_interval=n.heartbeat_interval,
                                        suspect_after=n.down_after / 2, down_after=n.down_after,
                                        max_missed_deadlines=n.max_missed_deadlines),
                # Checked on receipt: an oversized message is not a sign of life and does not
                # count as delivered, so a peer sending only those goes down like a silent one.
                max_message_rms=n.max_message_norm)
            self.proto = GossipProtocol(self.me, self.neighbours, gossip_cfg,
                                        dim=self.runner.setup.layout.numel,
                                        now=time.monotonic(), first_round=self.runner.round,
                                        seq_start=time.time_ns() // 1000)
            self.started = time.monotonic()
            async with asyncio.TaskGroup() as group:
                receiver = group.create_task(self._receive_loop())
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
            transport.close() if transport is not zmq_transport else None
            zmq_transport.close(linger_ms=500)
        return self.exit_reason

    def _request_stop(self) -> None:
        if not self.stop.is_set():
            logger.info("stop requested")
            self.exit_reason = "stopped"
            self.stop.set()
            self.wake.set()

    async def _startup(self) -> None:
        """Say HELLO and wait (bounded) until every neighbour has been heard from once."""
        self._apply(self.proto.hello(time.monotonic()))
        deadline = time.monotonic() + self.cfg.node.startup_timeout
        while not self.stop.is_set() and time.monotonic() < deadline:
            if all(self.proto.liveness.last_heard(j) > self.started for j in self.neighbours):
                return
            await self._wait_wake(deadline)
        if not self.stop.is_set():
            silent = [j for j in self.neighbours
                      if self.proto.liveness.last_heard(j) <= self.started]
            logger.warning("starting without hearing from %s", silent)

    async def _wait_wake(self, deadline: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), max(0.0, min(deadline - time.monotonic(),
                                                                  0.5)))

    async def _receive_loop(self) -> None:
        while True:
            identity, frames = await self.zmq.recv()
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

    def _apply(self, effects: Iterable[Send | PeerDown | PeerUp]) -> None:
        wire = self.cfg.node.wire_dtype
        for effect in effects:
            match effect:
                case Send(peer=peer, msg=msg):
                    self.transport.send(peer, encode(msg, wire))
                case PeerDown(peer=peer, reason=reason):
                    logger.warning("neighbour %d is down (%s)", peer, reason)
                case PeerUp(peer=peer):
                    logger.info("neighbour %d is back", peer)

    async def _rounds(self) -> None:
        runner, cfg = self.runner, self.cfg.run
        while runner.round < cfg.rounds and not self.stop.is_set():
            r = runner.round
            started = time.monotonic()
            active = set(self.proto.liveness.alive())
            step = in_daemon_thread(functools.partial(compute_round, runner, active))
            stopping: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
            pending: list[asyncio.Future[Any]] = [step, stopping]
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not step.done():  # stopping: give the step a moment, then abandon it unsent
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(step), 2.0)
                if not step.done():
                    return
            out = step.result()
            if out is None:
                logger.warning("the next round would exceed the privacy budget; stopping")
                self.exit_reason = "budget"
                return
            compute = time.monotonic() - started
            if self.ledger is not None:
                self.ledger.record(r, out.events)  # durable before anything leaves the node
            now = time.monotonic()
            self.proto.start_round(r, now)
            self._apply([self.proto.dual(j, y.numpy(), now) for j, y in out.duals.items()])
            if out.primal is not None:
                self._apply(self.proto.primal(out.primal.clone().numpy(), now))
            wait_start = time.monotonic()
            while not self.proto.ready(time.monotonic()) and not self.stop.is_set():
                await self._wait_wake(self.proto.book.deadline)
            result, effects = self.proto.close_round(time.monotonic())
            self._apply(effects)
            wait = time.monotonic() - wait_start
            received = {j: own_copy(y) for j, y in result.duals.items()}
            runner.setup.algorithm.absorb(received)
            primals = (dict(received) if cfg.algorithm == "dpsgd"
                       else {j: own_copy(y) for j, y in result.primals.items()})
            await self._finish_round(r, out.loss, compute, wait, started, primals)
            pace_until = started + self.cfg.node.min_round_seconds
            while time.monotonic() < pace_until and not self.stop.is_set():
                await self._wait_wake(pace_until)

    async def _finish_round(self, r: int, loss: float, compute: float, wait: float,
                            started: float, primals: dict[int, torch.Tensor]) -> None:
        runner = self.runner
        accuracy = None
        if runner.due_for_evaluation(r):
            accuracy = await in_daemon_thread(runner.evaluate)
        stats = self.zmq.stats
        record = runner.metrics_record(
            r, time=time.time(), accuracy=accuracy, consensus=runner.consensus_distance(primals),
            epsilon=runner.epsilon(), bytes_sent=stats.bytes_sent + self.bytes_offset[0],
            bytes_received=stats.bytes_received + self.bytes_offset[1],
            peers_alive=len(self.proto.liveness.alive()),
            round_seconds=time.monotonic() - started, compute_seconds=compute,
            wait_seconds=wait, loss=loss)
        self.metrics.write(record)
        if (r + 1) % self.cfg.node.checkpoint_every == 0 or r + 1 == self.cfg.run.rounds:
            await in_daemon_thread(lambda: self.checkpoint(r))

    def checkpoint(self, completed_round: int) -> None:
        setup = self.runner.setup
        save_checkpoint(self.out / "checkpoint.npz", Checkpoint(
            completed_round, setup.algorithm.state_dict(),
            setup.trainer.data_generator.get_state(), checkpoint_identity(self.cfg)))

    def final(self) -> dict[str, Any]:
        runner = self.runner
        stats = self.zmq.stats if hasattr(self, "zmq") else None
        plan = runner.setup.plan
        return {
            "accuracy": runner.last_accuracy, "loss": runner.last_loss,
            "epsilon": runner.epsilon(),
            "bytes_sent": (stats.bytes_sent if stats else 0) + self.bytes_offset[0],
            "rounds_completed": runner.round, "exit": self.exit_reason,
            "rejected_messages": self._rejections(),
            "privacy": {"mode": plan.mode, "noise_multiplier": plan.noise_multiplier,
                        "sample_rate": plan.sample_rate, "steps_per_node": plan.steps_per_node,
                        "sigma": plan.sigma, "delta": plan.delta, "formal": plan.formal},
        }

    def _rejections(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        proto = getattr(self, "proto", None)
        if proto is not None:
            for peer, kinds in proto.inbox.rejected.items():
                out.setdefault("stranger" if peer is None else str(peer), {}).update(kinds)
        return out


def own_copy(payload: np.ndarray) -> torch.Tensor:
    """A received tensor as our own writable float32 copy (decoded frames are read-only views;
    oversized ones were already refused by the inbox's `max_message_norm` check)."""
    return torch.from_numpy(np.array(payload, dtype=np.float32, copy=True))


def compute_round(runner: NodeRunner, active: set[int]) -> RoundOutput | None:
    """A round's CPU work, off the event loop: budget check, step, and the new ε (the PLD
    evaluation is cached, so the metrics record reads it for free). None: budget exhausted."""
    if runner.over_budget(active):
        return None
    out = runner.step({}, active)
    runner.epsilon()
    return out


def checkpoint_identity(cfg: NodeConfig) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed: same node, same computation."""
    run = cfg.run.to_dict()
    for volatile in ("rounds", "threads", "eval_every", "test_examples", "noise_seed"):
        run.pop(volatile, None)
    return {"node": cfg.node.id, "run": run}


def resume(runner: NodeRunner, cfg: NodeConfig, ledger: Ledger | None) -> None:
    """Continue from the checkpoint, after every round the ledger says was released."""
    ckpt = load_checkpoint(Path(cfg.node.out) / "checkpoint.npz", checkpoint_identity(cfg))
    if ckpt is not None:
        runner.setup.algorithm.load_state_dict(ckpt.state)
        if ckpt.data_rng is not None:
            runner.setup.trainer.data_generator.set_state(ckpt.data_rng)
        runner.round = ckpt.round + 1
    if ledger is not None:
        runner.accountant.history = list(ledger.accountant.history)
        if ledger.rounds:
            # Rounds after the checkpoint were released already; re-running them would send a
            # second, differently noised release of the same round.
            runner.round = max(runner.round, ledger.rounds[-1] + 1)
    if ckpt is not None or (ledger is not None and ledger.rounds):
        logger.info("resuming at round %d", runner.round)
        seed = cfg.run.noise_seed
        if seed is not None:
            # A fixed experiment seed would otherwise replay round 0's noise after a restart.
            fresh = (seed * 1_000_003 + cfg.node.id) * 1_000_033 + runner.round
            runner.setup.trainer.noise_generator_reseed(fresh)


def write_final(cfg: NodeConfig, data: dict[str, Any]) -> None:
    write_json_atomic(Path(cfg.node.out) / "final.json", data)
