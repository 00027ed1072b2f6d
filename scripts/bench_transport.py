"""Throughput of the full gossip path versus raw pyzmq, in one process, printed as JSON.

Gossip path: encode → ZmqTransport.send (DEALER, NOBLOCK, zero-copy) → ROUTER → Inbox.accept
(identity check, strict decode incl. the finite-values pass, replay check). Baseline: raw pyzmq
PUSH/PULL with send_multipart(copy=False) of the same header-sized frame plus payload. Both run
on uvloop with the same flow-control window, so the ratio isolates our per-message overhead.

    python scripts/bench_transport.py [--sizes 100000,262144,1000000,5242880] [--repeat 3]

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
from pathlib import Path

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
TARGET_BYTES = 1.5e9  # per measurement, so each takes a fraction of a second


async def _paced(send_one: object, recv_one: object, n: int) -> float:
    """Run n messages through send/recv with at most WINDOW in flight; return seconds."""
    received = 0
    room = asyncio.Event()
    room.set()

    async def receiver() -> None:
        nonlocal received
        while received < n:
            await recv_one()  # type: ignore[operator]
            received += 1
            room.set()

    t0 = time.perf_counter()
    task = asyncio.create_task(receiver())
    for i in range(n):
        while i - received >= WINDOW:
            room.clear()
            await room.wait()
        while not await send_one(i):  # type: ignore[operator]
            await asyncio.sleep(0)  # queue full: yield and retry (never happens with WINDOW)
    await task
    return time.perf_counter() - t0


async def gossip_path(dim: int, n: int) -> float:
    # libzmq's default high-water marks, as in the raw baseline: with a tiny SNDHWM, libzmq
    # returns write credit in batches and a paced sender sees spurious "queue full" drops.
    cfg = TransportConfig.for_model(dim, sndhwm=1000, rcvhwm=1000)
    a = ZmqTransport(0, "tcp://127.0.0.1:0", {}, config=cfg)
    b = ZmqTransport(1, "tcp://127.0.0.1:0", {0: a.endpoint}, config=cfg)
    a.connect(1, b.endpoint)
    inbox = Inbox([1], expected_dim=dim)
    payload = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    try:
        while not b.send(0, encode(Dual(1, 0, 0, payload))):  # wait for the connection
            await asyncio.sleep(0.01)
        await a.recv()

        async def send_one(i: int) -> bool:
            return b.send(0, encode(Dual(1, 0, i + 1, payload)))

        async def recv_one() -> None:
            identity, frames = await a.recv()
            if inbox.accept(identity, frames, 0.0) is None:
                raise RuntimeError("the benchmark's own message was rejected")

        return await _paced(send_one, recv_one, n)
    finally:
        a.close()
        b.close()


async def raw_path(dim: int, n: int) -> float:
    ctx = zmq.asyncio.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for s in (pull, push):
        s.linger = 0
    pull.bind("tcp://127.0.0.1:0")
    push.connect(pull.last_endpoint)
    payload = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    header = bytes(len(encode(Dual(1, 0, 0, payload))[0]))
    try:
        await push.send_multipart([header, payload.data], copy=False)
        await pull.recv_multipart(copy=False)

        async def send_one(i: int) -> bool:
            await push.send_multipart([header, payload.data], copy=False)
            return True

        async def recv_one() -> None:
            await pull.recv_multipart(copy=False)

        return await _paced(send_one, recv_one, n)
    finally:
        ctx.destroy(linger=0)


async def bench(sizes: list[int], repeat: int) -> dict[str, object]:
    results = []
    for dim in sizes:
        n = max(20, int(TARGET_BYTES / (4 * dim)))
        g, r = [], []
        for _ in range(repeat):  # interleaved, so drift in machine load hits both alike
            r.append(await raw_path(dim, n))
            g.append(await gossip_path(dim, n))
        mb = 4 * dim * n / 1e6
        tg, tr = statistics.median(g), statistics.median(r)
        results.append(
            {
                "floats": dim,
                "payload_mb": round(4 * dim / 1e6, 3),
                "messages": n,
                "gossip": {"msgs_per_s": round(n / tg, 1), "mb_per_s": round(mb / tg, 1)},
                "raw_pyzmq": {"msgs_per_s": round(n / tr, 1), "mb_per_s": round(mb / tr, 1)},
                "ratio": round(tr / tg, 3),
                "header_bytes": header_size(Dual(1, 10**6, 10**15, np.zeros(dim, np.float32))),
            }
        )
    return {
        "what": "gossip (encode+send+recv+validate+decode) vs raw pyzmq PUSH/PULL copy=False",
        "loop": "uvloop",
        "window": WINDOW,
        "repeat": repeat,
        "zmq": zmq.zmq_version(),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,262144,1000000,5242880")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("gossip.transport").setLevel(logging.ERROR)  # plaintext warning is moot
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(uvloop.run(bench(sizes, args.repeat)), indent=2))


if __name__ == "__main__":
    main()
