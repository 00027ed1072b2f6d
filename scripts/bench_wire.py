"""Throughput of the full gossip path next to raw pyzmq, measured in the same run, as JSON.

Both paths move float32 tensors between two nodes over loopback TCP in this process:

- gossip: `encode(Dual)` → `ZmqTransport.send` (DEALER, NOBLOCK, zero-copy) → the peer's ROUTER
  → `ZmqTransport.recv` (zero-copy frames) → `Inbox.accept` (neighbour check, strict decode with
  the finite-values pass, sender check, replay window).
- raw: pyzmq PUSH → PULL, `send_multipart([header, payload], copy=False)` of a header-sized
  frame plus the same payload, `recv_multipart(copy=False)`, nothing else.

Fairness: each node owns its ZeroMQ context (so its own libzmq I/O thread), as two gossip nodes
always do and as two separate pyzmq programs would; both paths get the same socket options where
the semantics allow (linger, high-water marks, ZMTP heartbeats, MAXMSGSIZE on the receiver,
IMMEDIATE on the sender), the same flow-control window, and the same uvloop event loop. The two
pairs are set up once per size and warmed up, then measured in alternating batches (order
flipped every repeat) so drift in machine load hits both; the ratio is the median over repeats
of gossip/raw of *adjacent* batches, with its spread. `--shared-context` adds, for reference
only, raw pyzmq with both ends in one context (one I/O thread does both sides of the loopback,
which no pair of nodes can do).

    python scripts/bench_wire.py [--sizes 262144,5242880] [--repeat 21] [--mb-per-batch 200]
                                 [--window 4] [--shared-context]

Sizes are float32 element counts (262144 = 1 MiB, 5242880 = 20 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import uvloop
import zmq
import zmq.asyncio

from gossip.codec import encode, header_size
from gossip.inbox import Inbox
from gossip.messages import Dual
from gossip.transport import TransportConfig, ZmqTransport

WINDOW = 4  # messages in flight, for both paths
# libzmq's default high-water marks for both paths: with a tiny SNDHWM, libzmq returns write
# credit in batches and a paced NOBLOCK sender would see spurious "queue full" drops.
HWM = 1000


async def _paced(
    send_one: Callable[[int], bool | Awaitable[bool]],
    recv_one: Callable[[], Awaitable[None]],
    n: int,
    window: int = WINDOW,
) -> float:
    """Move n messages with at most `window` in flight; return the seconds it took."""
    received = 0
    room = asyncio.Event()
    room.set()

    async def receiver() -> None:
        nonlocal received
        while received < n:
            await recv_one()
            received += 1
            room.set()

    t0 = time.perf_counter()
    task = asyncio.create_task(receiver())
    for i in range(n):
        while i - received >= window:
            room.clear()
            await room.wait()
        while True:
            ok = send_one(i)
            if not isinstance(ok, bool):
                ok = await ok
            if ok:
                break
            await asyncio.sleep(0)  # queue full: yield and retry (rare with HWM >> WINDOW)
    await task
    return time.perf_counter() - t0


class GossipPair:
    """Node 1 sends Dual messages to node 0 through the complete gossip stack."""

    def __init__(self, dim: int, payload: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        cfg = TransportConfig.for_model(dim, sndhwm=HWM, rcvhwm=HWM)
        self.a = ZmqTransport(0, "tcp://127.0.0.1:0", {}, config=cfg)
        self.b = ZmqTransport(1, "tcp://127.0.0.1:0", {0: self.a.endpoint}, config=cfg)
        self.inbox = Inbox([1], expected_dim=dim)
        self.payload = payload
        self.seq = 0

    def send_one(self, i: int) -> bool:
        self.seq += 1
        return self.b.send(0, encode(Dual(1, 0, self.seq, self.payload)))

    async def recv_one(self) -> None:
        identity, frames = await self.a.recv()
        if self.inbox.accept(identity, frames, 0.0) is None:
            raise RuntimeError("the benchmark's own message was rejected")

    async def connect(self) -> None:
        while not self.send_one(0):  # IMMEDIATE: dropped until the TCP connection is up
            await asyncio.sleep(0.01)
        await self.recv_one()

    def close(self) -> None:
        self.a.close()
        self.b.close()


class RawPair:
    """Plain pyzmq PUSH → PULL with zero-copy frames; by default one context per end."""

    def __init__(
        self, dim: int, payload: np.ndarray[Any, np.dtype[np.float32]], *, shared_context: bool
    ) -> None:
        cfg = TransportConfig.for_model(dim, sndhwm=HWM, rcvhwm=HWM)
        self.ctx_pull = zmq.asyncio.Context()
        self.ctx_push = self.ctx_pull if shared_context else zmq.asyncio.Context()
        self.pull = self.ctx_pull.socket(zmq.PULL)
        self.push = self.ctx_push.socket(zmq.PUSH)
        for s in (self.pull, self.push):  # the options ZmqTransport sets, where they apply
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.HEARTBEAT_IVL, cfg.heartbeat_ivl_ms)
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, cfg.heartbeat_timeout_ms)
            s.setsockopt(zmq.HEARTBEAT_TTL, cfg.heartbeat_ttl_ms)
        self.pull.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        self.pull.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame_bytes)
        self.push.setsockopt(zmq.SNDHWM, cfg.sndhwm)
        self.push.setsockopt(zmq.IMMEDIATE, 1)
        self.pull.bind("tcp://127.0.0.1:0")
        self.push.connect(self.pull.getsockopt_string(zmq.LAST_ENDPOINT))
        self.header = bytes(len(encode(Dual(1, 0, 0, payload))[0]))
        self.payload = payload

    async def send_one(self, i: int) -> bool:
        await self.push.send_multipart([self.header, self.payload.data], copy=False)
        return True

    async def recv_one(self) -> None:
        await self.pull.recv_multipart(copy=False)

    async def connect(self) -> None:
        await self.send_one(0)
        await self.recv_one()

    def close(self) -> None:
        self.pull.close()
        self.push.close()
        self.ctx_pull.term()
        if self.ctx_push is not self.ctx_pull:
            self.ctx_push.term()


def _stats(runs: list[tuple[float, float]], n: int, nbytes: int) -> dict[str, float]:
    rates = sorted(n / wall for wall, _ in runs)
    mid = statistics.median(rates)
    return {
        "msgs_per_s": round(mid, 1),
        "mb_per_s": round(mid * nbytes / 1e6, 1),
        "mb_per_s_min": round(rates[0] * nbytes / 1e6, 1),
        "mb_per_s_max": round(rates[-1] * nbytes / 1e6, 1),
        # CPU of the whole process (event loop + libzmq I/O threads + pyzmq's gc thread) per
        # message: much less sensitive to other load on the machine than wall-clock rates.
        "cpu_us_per_msg": round(statistics.median(cpu for _, cpu in runs) / n * 1e6, 1),
    }


async def _batch(pair: Any, n: int, window: int) -> tuple[float, float]:
    cpu0 = time.process_time()
    wall = await _paced(pair.send_one, pair.recv_one, n, window)
    return wall, time.process_time() - cpu0


async def bench_size(
    dim: int, repeat: int, mb_per_batch: float, window: int, shared: bool
) -> dict[str, Any]:
    payload = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    nbytes = payload.nbytes
    n = max(10, round(mb_per_batch * 1e6 / nbytes))
    pairs: dict[str, Any] = {
        "gossip": GossipPair(dim, payload),
        "raw_pyzmq": RawPair(dim, payload, shared_context=False),
    }
    if shared:
        pairs["raw_pyzmq_shared_context"] = RawPair(dim, payload, shared_context=True)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in pairs}
    try:
        for p in pairs.values():
            await p.connect()
            await _paced(p.send_one, p.recv_one, 2 * n, window)  # warm-up: caches, allocator
        names = list(pairs)
        for r in range(repeat):
            for name in names if r % 2 == 0 else reversed(names):
                runs[name].append(await _batch(pairs[name], n, window))
    finally:
        for p in pairs.values():
            p.close()
    ratios = sorted(
        raw[0] / gossip[0] for gossip, raw in zip(runs["gossip"], runs["raw_pyzmq"], strict=True)
    )
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    return {
        "floats": dim,
        "payload_bytes": nbytes,
        "messages_per_batch": n,
        **{name: _stats(v, n, nbytes) for name, v in runs.items()},
        "ratio": round(statistics.median(ratios), 3),
        "ratio_p25": round(ratios[len(ratios) // 4], 3),
        "ratio_p75": round(ratios[(3 * len(ratios)) // 4], 3),
        "ratio_min": round(ratios[0], 3),
        "ratio_max": round(ratios[-1], 3),
        "cpu_ratio": round(cpu["raw_pyzmq"] / cpu["gossip"], 3),
        # A realistic header: a large round and a wall-clock-microseconds sequence number.
        "header_bytes": header_size(Dual(1, 10**6, int(time.time() * 1e6), payload)),
    }


async def bench(
    sizes: list[int], repeat: int, mb_per_batch: float, window: int, shared: bool
) -> dict[str, Any]:
    results = [await bench_size(d, repeat, mb_per_batch, window, shared) for d in sizes]
    return {
        "what": "gossip (encode+send+recv+validate+decode) vs raw pyzmq PUSH/PULL, copy=False",
        "ratio": "gossip throughput / raw throughput, median over adjacent batch pairs",
        "cpu_ratio": "raw CPU per message / gossip CPU per message (medians)",
        "loop": "uvloop",
        "contexts": "one per node, both paths",
        "window": window,
        "hwm": HWM,
        "repeat": repeat,
        "zmq": zmq.zmq_version(),
        "pyzmq": zmq.__version__,
        "target_ratio": 0.9,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="262144,5242880", help="float32 element counts")
    parser.add_argument("--repeat", type=int, default=21, help="measured batches per path")
    parser.add_argument("--mb-per-batch", type=float, default=200.0, help="payload per batch")
    parser.add_argument("--window", type=int, default=WINDOW, help="messages in flight")
    parser.add_argument(
        "--shared-context",
        action="store_true",
        help="also report raw pyzmq with both ends in one context (reference only)",
    )
    args = parser.parse_args()
    logging.getLogger("gossip.transport").setLevel(logging.ERROR)  # plaintext warning is moot
    sizes = [int(s) for s in args.sizes.split(",")]
    out = uvloop.run(bench(sizes, args.repeat, args.mb_per_batch, args.window, args.shared_context))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
