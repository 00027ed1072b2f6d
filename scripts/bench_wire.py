"""Throughput of the full gossip path next to raw pyzmq, measured in the same run, as JSON.

Both paths move float32 tensors between two nodes over loopback TCP in this process:

- gossip: `encode(Dual)` → `ZmqTransport.send` (DEALER, NOBLOCK, zero-copy) → the peer's ROUTER
  → `ZmqTransport.recv` (zero-copy frames) → `Inbox.accept` (neighbour check, strict decode with
  the finite-values pass, sender check, replay window, RMS bound `--max-rms`).
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

Where the time goes, per path and size:

- `cpu_us_per_msg` splits into `main_thread_cpu_us_per_msg` (the event loop: everything in
  Python, the codec and the checks) and `other_threads_cpu_us_per_msg` (libzmq's I/O threads
  copying through the kernel, pyzmq's zero-copy garbage collector), medians over the batches.
- `stages_cpu_us_per_msg`: the event loop's CPU per message by stage, from `--stage-batches`
  extra paced batches with per-stage CPU timers (the throughput batches carry none): gossip
  `encode`, `send`, `recv` (with the event-loop hop of a wait), `decode_check` (all of
  `Inbox.accept`); raw `send`, `recv`; `other` is the pacing loop and the timers themselves.
  `raw.payload_pass` is one `np.vdot` over what raw pyzmq received, not counted in its total:
  the floor for any check that reads every value once, i.e. the part of `decode_check` that no
  change to the code can remove.

    python scripts/bench_wire.py [--sizes 262144,5242880] [--repeat 21] [--mb-per-batch 200]
                                 [--window 4] [--max-rms 10] [--stage-batches 5]
                                 [--shared-context]

Sizes are float32 element counts (262144 = 1 MiB, 5242880 = 20 MiB). On a loaded machine read
the ratio and the CPU figures, not the absolute rates; `load_avg` says what the load was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

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
MAX_RMS = 10.0  # the payload is standard normal (RMS 1), so the bound is checked, never hit

_cpu = time.thread_time  # the event loop's own CPU time (a syscall: instrumented batches only)


class Stages:
    """CPU seconds of the event loop per stage, summed over the messages of instrumented batches.

    `recv` is the CPU time spent inside `await recv()`, less the CPU of the sender's stages that
    ran while it was suspended, so it includes the event-loop hop that a wait costs.
    """

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.sender_cpu = 0.0  # encode + send so far, to take out of a suspended recv

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] = self.total.get(stage, 0.0) + seconds


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

    def __init__(
        self, dim: int, payload: np.ndarray[Any, np.dtype[np.float32]], max_rms: float
    ) -> None:
        cfg = TransportConfig.for_model(dim, sndhwm=HWM, rcvhwm=HWM)
        self.a = ZmqTransport(0, "tcp://127.0.0.1:0", {}, config=cfg)
        self.b = ZmqTransport(1, "tcp://127.0.0.1:0", {0: self.a.endpoint}, config=cfg)
        self.inbox = Inbox([1], expected_dim=dim, max_rms=max_rms)
        self.payload = payload
        self.seq = 0
        self.stages: Stages | None = None  # set only for the instrumented batches

    def send_one(self, i: int) -> bool:
        self.seq += 1
        st = self.stages
        if st is None:
            return self.b.send(0, encode(Dual(1, 0, self.seq, self.payload)))
        t0 = _cpu()
        frames = encode(Dual(1, 0, self.seq, self.payload))
        t1 = _cpu()
        ok = self.b.send(0, frames)
        t2 = _cpu()
        st.add("encode", t1 - t0)
        st.add("send", t2 - t1)
        st.sender_cpu += t2 - t0
        return ok

    async def recv_one(self) -> None:
        st = self.stages
        if st is None:
            identity, frames = await self.a.recv()
            if self.inbox.accept(identity, frames, 0.0) is None:
                raise RuntimeError("the benchmark's own message was rejected")
            return
        t0, sender0 = _cpu(), st.sender_cpu
        identity, frames = await self.a.recv()
        t1 = _cpu()
        if self.inbox.accept(identity, frames, 0.0) is None:
            raise RuntimeError("the benchmark's own message was rejected")
        t2 = _cpu()
        st.add("recv", (t1 - t0) - (st.sender_cpu - sender0))
        st.add("decode_check", t2 - t1)

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
        self.stages: Stages | None = None  # set only for the instrumented batches

    async def send_one(self, i: int) -> bool:
        st = self.stages
        if st is None:
            await self.push.send_multipart([self.header, self.payload.data], copy=False)
            return True
        t0 = _cpu()
        await self.push.send_multipart([self.header, self.payload.data], copy=False)
        dt = _cpu() - t0
        st.add("send", dt)
        st.sender_cpu += dt
        return True

    async def recv_one(self) -> None:
        st = self.stages
        if st is None:
            await self.pull.recv_multipart(copy=False)
            return
        t0, sender0 = _cpu(), st.sender_cpu
        parts = await self.pull.recv_multipart(copy=False)
        t1 = _cpu()
        # Reference, not part of raw's cost: one read of every value, the floor of any check.
        x = np.frombuffer(parts[1].buffer, np.float32)
        np.vdot(x, x)
        t2 = _cpu()
        st.add("recv", (t1 - t0) - (st.sender_cpu - sender0))
        st.add("payload_pass", t2 - t1)

    async def connect(self) -> None:
        await self.send_one(0)
        await self.recv_one()

    def close(self) -> None:
        self.pull.close()
        self.push.close()
        self.ctx_pull.term()
        if self.ctx_push is not self.ctx_pull:
            self.ctx_push.term()


Run = tuple[float, float, float]  # wall seconds, process CPU seconds, main-thread CPU seconds


def _stats(runs: list[Run], n: int, nbytes: int) -> dict[str, float]:
    rates = sorted(n / wall for wall, _, _ in runs)
    mid = statistics.median(rates)

    def per_msg(values: list[float]) -> float:
        return round(statistics.median(values) / n * 1e6, 1)

    return {
        "msgs_per_s": round(mid, 1),
        "mb_per_s": round(mid * nbytes / 1e6, 1),
        "mb_per_s_min": round(rates[0] * nbytes / 1e6, 1),
        "mb_per_s_max": round(rates[-1] * nbytes / 1e6, 1),
        # CPU of the whole process (event loop + libzmq I/O threads + pyzmq's gc thread) per
        # message: much less sensitive to other load on the machine than wall-clock rates.
        "cpu_us_per_msg": per_msg([cpu for _, cpu, _ in runs]),
        "main_thread_cpu_us_per_msg": per_msg([main for _, _, main in runs]),
        "other_threads_cpu_us_per_msg": per_msg([cpu - main for _, cpu, main in runs]),
    }


async def _batch(pair: Any, n: int, window: int) -> Run:
    cpu0, main0 = time.process_time(), time.thread_time()
    wall = await _paced(pair.send_one, pair.recv_one, n, window)
    return wall, time.process_time() - cpu0, time.thread_time() - main0


async def _instrumented(pair: Any, n: int, window: int, batches: int) -> dict[str, float]:
    """Per-message CPU µs of the event loop by stage, over `batches` extra paced batches."""
    st = pair.stages = Stages()
    main0 = time.thread_time()
    for _ in range(batches):
        await _paced(pair.send_one, pair.recv_one, n, window)
    main = time.thread_time() - main0
    pair.stages = None
    msgs = n * batches
    out = {k: round(v / msgs * 1e6, 1) for k, v in st.total.items()}
    # The rest: the pacing loop and clock reads, shared by both paths.
    staged = sum(v for k, v in st.total.items() if k != "payload_pass")
    reference = st.total.get("payload_pass", 0.0)
    out["other"] = round((main - reference - staged) / msgs * 1e6, 1)
    out["total"] = round((main - reference) / msgs * 1e6, 1)
    return out


async def bench_size(
    dim: int,
    repeat: int,
    mb_per_batch: float,
    window: int,
    shared: bool,
    max_rms: float,
    stage_batches: int,
) -> dict[str, Any]:
    payload = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    nbytes = payload.nbytes
    n = max(10, round(mb_per_batch * 1e6 / nbytes))
    gossip = GossipPair(dim, payload, max_rms)
    pairs: dict[str, Any] = {
        "gossip": gossip,
        "raw_pyzmq": RawPair(dim, payload, shared_context=False),
    }
    if shared:
        pairs["raw_pyzmq_shared_context"] = RawPair(dim, payload, shared_context=True)
    runs: dict[str, list[Run]] = {k: [] for k in pairs}
    stages: dict[str, dict[str, float]] = {}
    try:
        for p in pairs.values():
            await p.connect()
            await _paced(p.send_one, p.recv_one, 2 * n, window)  # warm-up: caches, allocator
        names = list(pairs)
        for r in range(repeat):
            for name in names if r % 2 == 0 else reversed(names):
                runs[name].append(await _batch(pairs[name], n, window))
        for name in ("gossip", "raw_pyzmq"):
            stages[name] = await _instrumented(pairs[name], n, window, stage_batches)
    finally:
        for p in pairs.values():
            p.close()
    ratios = sorted(
        raw[0] / g[0] for g, raw in zip(runs["gossip"], runs["raw_pyzmq"], strict=True)
    )
    cpu = {k: statistics.median(c for _, c, _ in v) for k, v in runs.items()}
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
        "stages_cpu_us_per_msg": stages,
        # The bottom line of the stages: what gossip's event loop spends beyond raw's, and how
        # much of that one read of the payload alone costs (the floor of the finite check).
        "gossip_extra_cpu_us_per_msg": round(stages["gossip"]["total"]
                                             - stages["raw_pyzmq"]["total"], 1),
        "of_which_one_payload_pass_us": stages["raw_pyzmq"].get("payload_pass"),
        # A realistic header: a large round and a wall-clock-microseconds sequence number.
        "header_bytes": header_size(Dual(1, 10**6, int(time.time() * 1e6), payload)),
    }


async def bench(
    sizes: list[int],
    repeat: int,
    mb_per_batch: float,
    window: int,
    shared: bool,
    max_rms: float,
    stage_batches: int,
) -> dict[str, Any]:
    load_before = os.getloadavg()
    results = [
        await bench_size(d, repeat, mb_per_batch, window, shared, max_rms, stage_batches)
        for d in sizes
    ]
    return {
        "what": "gossip (encode+send+recv+validate+decode) vs raw pyzmq PUSH/PULL, copy=False",
        "ratio": "gossip throughput / raw throughput, median over adjacent batch pairs",
        "cpu_ratio": "raw CPU per message / gossip CPU per message (medians)",
        "stages_cpu_us_per_msg": "the event loop's CPU per message by stage, in extra paced "
        "batches with timers; recv includes the event-loop hop; other = pacing loop and timers; "
        "raw.payload_pass (one vdot over what raw received) is a reference, not in its total",
        "loop": "uvloop",
        "contexts": "one per node, both paths",
        "window": window,
        "hwm": HWM,
        "repeat": repeat,
        "max_rms": max_rms if math.isfinite(max_rms) else None,
        "cpus": os.cpu_count(),
        "load_avg": {"before": [round(x, 2) for x in load_before],
                     "after": [round(x, 2) for x in os.getloadavg()]},
        "zmq": zmq.zmq_version(),
        "pyzmq": zmq.__version__,
        "numpy": np.__version__,
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
        "--max-rms", type=float, default=MAX_RMS, help="the inbox's RMS bound (inf: none)"
    )
    parser.add_argument(
        "--stage-batches", type=int, default=5, help="instrumented batches per path and size"
    )
    parser.add_argument(
        "--shared-context",
        action="store_true",
        help="also report raw pyzmq with both ends in one context (reference only)",
    )
    args = parser.parse_args()
    logging.getLogger("gossip.transport").setLevel(logging.ERROR)  # plaintext warning is moot
    sizes = [int(s) for s in args.sizes.split(",")]
    out = uvloop.run(
        bench(
            sizes,
            args.repeat,
            args.mb_per_batch,
            args.window,
            args.shared_context,
            args.max_rms,
            args.stage_batches,
        )
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
