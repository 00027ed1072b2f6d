"""What the daemon's event loop (node.daemon.loop) is wired to: its sockets, its neighbours'
endpoints, the protocol's settings from the node config, and the worker thread a round's CPU
work runs in, so that receiving and heartbeats go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from gossip.faults import FaultyTransport
from gossip.keys import load_curve_keys
from gossip.liveness import LivenessConfig
from gossip.protocol import GossipConfig
from gossip.rounds import RoundConfig
from gossip.transport import Transport, TransportConfig, ZmqTransport
from node.core.runner import NodeRunner, RoundOutput
from node.daemon.settings import NodeConfig

logger = logging.getLogger("node.daemon.loop")  # one logger name for the daemon's loop
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


def gossip_config(cfg: NodeConfig) -> GossipConfig:
    n = cfg.node
    return GossipConfig(
        rounds=RoundConfig(deadline=n.round_timeout, future_window=4),
        liveness=LivenessConfig(heartbeat_interval=n.heartbeat_interval,
                                suspect_after=n.down_after / 2, down_after=n.down_after,
                                max_missed_deadlines=n.max_missed_deadlines),
        # Checked on receipt: an oversized message is not a sign of life and does not count
        # as delivered, so a peer sending only those goes down like a silent one.
        max_message_rms=n.max_message_rms)



def open_transport(cfg: NodeConfig, dim: int) -> tuple[ZmqTransport, Transport]:
    """The node's socket layer, and what its sends go through (the fault layer or it)."""
    n = cfg.node
    me, neighbours = n.id, sorted(cfg.neighbours)
    curve = load_curve_keys(Path(n.curve_keys), me, neighbours) if n.curve_keys else None
    zmq_transport = ZmqTransport(me, n.listen, {},
                                 config=TransportConfig.for_model(dim), curve=curve)
    faults = cfg.faults
    sender: Transport = FaultyTransport(zmq_transport, me, faults) \
        if faults.enabled else zmq_transport
    return zmq_transport, sender


async def neighbour_endpoints(cfg: NodeConfig, stop: asyncio.Event) -> dict[int, str]:
    """Neighbour endpoints from the config, or from the launcher's file (bounded wait)."""
    neighbours = sorted(cfg.neighbours)
    endpoints = {j: ep for j, ep in cfg.neighbours.items() if ep}
    path = Path(cfg.node.endpoints_file) if cfg.node.endpoints_file else None
    deadline = time.monotonic() + cfg.node.startup_timeout
    while path is not None and len(endpoints) < len(neighbours):
        with contextlib.suppress(OSError, ValueError):
            listed = json.loads(path.read_text())
            endpoints.update({j: listed[str(j)] for j in neighbours if str(j) in listed})
        if len(endpoints) == len(neighbours) or time.monotonic() > deadline:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
        if stop.is_set():
            break
    missing = [j for j in neighbours if j not in endpoints]
    if missing:
        logger.warning("no endpoint for neighbours %s; running without them", missing)
    return endpoints


def own_copy(payload: np.ndarray) -> torch.Tensor:
    """A received tensor as our own writable float32 copy (decoded frames are read-only views;
    oversized ones were already refused by the inbox's `max_message_rms` check)."""
    return torch.from_numpy(np.array(payload, dtype=np.float32, copy=True))


def compute_round(runner: NodeRunner, active: set[int]) -> RoundOutput | None:
    """A round's CPU work, off the event loop: budget check, step, and the new ε (the PLD
    evaluation is cached, so the metrics record reads it for free). None: budget exhausted."""
    if runner.over_budget():
        return None
    out = runner.step(active)
    runner.epsilon()
    runner.lifetime_epsilon()
    return out
