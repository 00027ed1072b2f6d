"""ZmqTransport's receive path: queued messages without a wait, waits that lose nothing.

`recv` takes queued messages with non-blocking calls and otherwise waits on the ROUTER's file
descriptor with its own future (not zmq.asyncio). These cases pin what that must keep: no
message lost or reordered, cancellation and concurrent waiters, close while waiting, and an
event loop that stays idle while messages sit unread. Real loopback sockets, every wait bounded.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import zmq

from gossip.codec import decode, encode
from gossip.messages import Dual, Heartbeat
from gossip.transport import TransportConfig, ZmqTransport
from tests.asyncio_helpers import LOCAL, run


async def pair(hwm: int = 8) -> tuple[ZmqTransport, ZmqTransport]:
    """Node 1 → node 0, connected (a first heartbeat has gone through, seq 0)."""
    cfg = TransportConfig(sndhwm=hwm, rcvhwm=hwm)
    a = ZmqTransport(0, LOCAL, {}, config=cfg)
    b = ZmqTransport(1, LOCAL, {0: a.endpoint}, config=cfg)
    deadline = time.monotonic() + 5.0
    while not b.send(0, encode(Heartbeat(1, 0, 0))):  # IMMEDIATE: dropped until connected
        assert time.monotonic() < deadline, "never connected"
        await asyncio.sleep(0.01)
    await asyncio.wait_for(a.recv(), 2.0)
    return a, b


def seq_of(frames: list[memoryview]) -> int:
    return decode(frames).seq


def test_a_burst_is_received_in_order_with_every_frame() -> None:
    async def scenario() -> None:
        a, b = await pair(hwm=1000)  # the whole burst fits in the queues
        try:
            x = np.linspace(-1, 1, 300, dtype=np.float32)
            for s in range(1, 201):
                assert b.send(0, encode(Dual(1, 0, s, x) if s % 2 else Heartbeat(1, 0, s)))
            got: list[int] = []
            for _ in range(200):
                identity, frames = await asyncio.wait_for(a.recv(), 2.0)
                assert identity == b"1"
                assert len(frames) == (2 if len(got) % 2 == 0 else 1)
                got.append(seq_of(frames))
            assert got == list(range(1, 201))
            # node 0 lists no neighbours, so node 1 counts as a stranger (with pair()'s heartbeat)
            assert a.stats.strangers.messages_received == 201
        finally:
            a.close()
            b.close()

    run(scenario)


def test_a_cancelled_wait_loses_nothing() -> None:
    async def scenario() -> None:
        a, b = await pair()
        try:
            for s in range(1, 6):
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(a.recv(), 0.02)  # nothing sent: cancelled waiting
                assert b.send(0, encode(Heartbeat(1, 0, s)))
                _, frames = await asyncio.wait_for(a.recv(), 2.0)
                assert seq_of(frames) == s
            assert a._waiters == []  # cancelled waiters do not pile up
        finally:
            a.close()
            b.close()

    run(scenario)


def test_concurrent_waiters_each_get_one_message() -> None:
    async def scenario() -> None:
        a, b = await pair()
        try:
            waiting = [asyncio.create_task(a.recv()) for _ in range(3)]
            await asyncio.sleep(0.05)  # all three wait on the descriptor
            for s in (1, 2, 3):
                assert b.send(0, encode(Heartbeat(1, 0, s)))
            results = await asyncio.wait_for(asyncio.gather(*waiting), 2.0)
            assert sorted(seq_of(frames) for _, frames in results) == [1, 2, 3]
        finally:
            a.close()
            b.close()

    run(scenario)


def test_close_cancels_a_pending_recv() -> None:
    async def scenario() -> None:
        a, b = await pair()
        b.close()
        waiting = asyncio.create_task(a.recv())
        await asyncio.sleep(0.05)
        a.close()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 2.0)
        with pytest.raises(zmq.ZMQError):
            await a.recv()  # a closed transport refuses, it does not hang

    run(scenario)


def test_unread_messages_do_not_spin_the_event_loop() -> None:
    """Messages that arrive while nobody waits leave the descriptor readable until libzmq
    processes its commands; the reader must do that rather than be called on every turn."""

    async def scenario() -> None:
        a, b = await pair()
        try:
            with pytest.raises(TimeoutError):  # registers the reader, then nobody waits
                await asyncio.wait_for(a.recv(), 0.02)
            for s in range(1, 6):
                assert b.send(0, encode(Heartbeat(1, 0, s)))
            cpu0 = time.thread_time()
            await asyncio.sleep(0.5)
            busy = time.thread_time() - cpu0
            assert busy < 0.1, f"the event loop used {busy:.3f} s of CPU while idle"
            got = [seq_of((await asyncio.wait_for(a.recv(), 2.0))[1]) for _ in range(5)]
            assert got == [1, 2, 3, 4, 5]
        finally:
            a.close()
            b.close()

    run(scenario)


def test_transports_on_successive_event_loops() -> None:
    """The descriptor is watched on the loop that waits; a new loop (a new test) works too."""
    for _ in range(2):

        async def scenario() -> None:
            a, b = await pair()
            try:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(a.recv(), 0.02)
                assert b.send(0, encode(Heartbeat(1, 0, 7)))
                _, frames = await asyncio.wait_for(a.recv(), 2.0)
                assert seq_of(frames) == 7
            finally:
                a.close()
                b.close()

        run(scenario)


def test_send_counts_bytes_and_refuses_an_empty_message() -> None:
    async def scenario() -> None:
        a, b = await pair()
        try:
            frames = encode(Dual(1, 0, 1, np.ones(10, np.float32)))
            sent = b.stats.links[0].bytes_sent
            assert b.send(0, frames)
            assert b.stats.links[0].bytes_sent - sent == len(frames[0]) + 40
            with pytest.raises(ValueError):
                b.send(0, [])
        finally:
            a.close()
            b.close()

    run(scenario)
