"""ZmqTransport on 127.0.0.1 (ports bound to 0, every wait bounded), under uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from gossip.codec import MAX_HEADER_BYTES, WireDtype, encode
from gossip.errors import EndpointError, KeyFileError
from gossip.inbox import Inbox
from gossip.keys import CurveKeys, generate_topology_keys, load_curve_keys
from gossip.messages import Dual, Heartbeat, Message
from gossip.transport import TransportConfig, ZmqTransport
from tests.asyncio_helpers import LOCAL, run


async def deliver(
    src: ZmqTransport, peer: int, dst: ZmqTransport, msg: Message, wire: WireDtype = "float32"
) -> tuple[bytes, list[memoryview]]:
    """Send until `dst` receives (sends are dropped until the connection is up)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        src.send(peer, encode(msg, wire))
        try:
            return await asyncio.wait_for(dst.recv(), 0.05)
        except TimeoutError:
            continue
    raise AssertionError("message never arrived")


async def nothing_arrives(t: ZmqTransport, seconds: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(t.recv(), seconds)
    except TimeoutError:
        return True
    return False


def dual(sender: int, n: int = 1000, seq: int = 1) -> Dual:
    return Dual(sender, 0, seq, np.linspace(-1, 1, n, dtype=np.float32))


def test_three_nodes_exchange_messages() -> None:
    async def scenario() -> None:
        a = ZmqTransport(0, LOCAL, {})
        b = ZmqTransport(1, LOCAL, {0: a.endpoint})
        c = ZmqTransport(2, LOCAL, {0: a.endpoint, 1: b.endpoint})
        a.connect(1, b.endpoint)
        a.connect(2, c.endpoint)
        try:
            assert a.endpoint.startswith("tcp://127.0.0.1:") and not a.endpoint.endswith(":0")
            inbox = Inbox([1, 2], expected_dim=1000)
            for src, sid in ((b, 1), (c, 2)):
                identity, frames = await deliver(src, 0, a, dual(sid, seq=sid))
                assert inbox.accept(identity, frames, 0.0) == dual(sid, seq=sid)
            identity, frames = await deliver(a, 2, c, Heartbeat(0, 0, 1))
            assert identity == b"0"
            assert a.stats.links[1].bytes_received == len(encode(dual(1))[0]) + 4000
            assert c.stats.links[0].bytes_received == sum(f.nbytes for f in frames)
        finally:
            for t in (a, b, c):
                t.close()

    run(scenario)


def test_sending_to_a_dead_or_stuck_peer_never_blocks() -> None:
    async def scenario() -> None:
        ghost = ZmqTransport(9, LOCAL, {})
        dead_endpoint = ghost.endpoint
        ghost.close()  # nothing listens there any more
        stuck = ZmqTransport(2, LOCAL, {})  # listens, but never reads
        a = ZmqTransport(0, LOCAL, {1: dead_endpoint, 2: stuck.endpoint})
        try:
            await deliver(a, 2, stuck, Heartbeat(0, 0, 0))  # connected
            frames = encode(dual(0, n=250_000))  # 1 MB
            t0 = time.perf_counter()
            dead = [a.send(1, frames) for _ in range(2000)]
            full = [a.send(2, frames) for _ in range(2000)]
            elapsed = time.perf_counter() - t0
            assert not any(dead) and a.stats.links[1].dropped == 2000
            assert a.stats.links[2].dropped > 1500  # hwm + TCP buffers fill, then drops
            assert sum(full) == a.stats.links[2].messages_sent - 1
            assert elapsed < 2.0
        finally:
            a.close()
            stuck.close()

    run(scenario)


def test_garbage_and_oversized_input_do_not_hurt_the_receiver() -> None:
    async def scenario() -> None:
        dim = 1000
        a = ZmqTransport(0, LOCAL, {}, config=TransportConfig.for_model(dim))
        b = ZmqTransport(1, LOCAL, {0: a.endpoint})
        host, port = a.endpoint.removeprefix("tcp://").rsplit(":", 1)
        inbox = Inbox([1], expected_dim=dim)
        try:
            # 22 bytes of garbage straight onto the TCP port (not even ZMTP).
            with socket.create_connection((host, int(port)), timeout=2) as raw:
                raw.sendall(bytes(range(22)))
                await asyncio.sleep(0.1)
            # 22 bytes of garbage as a well-formed ZeroMQ message: refused by the decoder.
            identity, frames = await deliver(b, 0, a, dual(1))
            assert inbox.accept(identity, frames, 0.0) is not None
            b.send(0, [bytes(22)])
            identity, frames = await asyncio.wait_for(a.recv(), 2)
            assert inbox.accept(identity, frames, 0.0) is None
            assert inbox.rejected[1]["DecodeError"] == 1
            # A frame larger than MAXMSGSIZE: libzmq drops the connection, we never see it.
            big = Dual(1, 0, 99, np.zeros(2 * dim + MAX_HEADER_BYTES, np.float32))
            b.send(0, encode(big))
            assert await nothing_arrives(a)
            # ... and the node still works: the sender reconnects and gets through.
            identity, frames = await deliver(b, 0, a, dual(1, seq=100))
            assert inbox.accept(identity, frames, 0.0) == dual(1, seq=100)
        finally:
            a.close()
            b.close()

    run(scenario)


@pytest.mark.parametrize("wire", ["float16", "bfloat16"])
def test_half_precision_halves_the_bytes_on_the_wire(wire: WireDtype) -> None:
    async def scenario() -> tuple[int, int]:
        a = ZmqTransport(0, LOCAL, {})
        b = ZmqTransport(1, LOCAL, {0: a.endpoint})
        a.connect(1, b.endpoint)  # makes 1 a neighbour of 0, with its own counters
        try:
            await deliver(b, 0, a, Heartbeat(1, 0, 0))
            before = b.stats.links[0].bytes_sent
            await deliver(b, 0, a, dual(1, n=100_000), "float32")
            full = b.stats.links[0].bytes_sent - before
            before_rx = a.stats.links[1].bytes_received
            await deliver(b, 0, a, dual(1, n=100_000, seq=2), wire)
            half = a.stats.links[1].bytes_received - before_rx
            return full, half
        finally:
            a.close()
            b.close()

    full, half = run(scenario)
    assert full > 400_000 and half <= full / 2 + 64


def test_a_bad_endpoint_is_a_one_sentence_setup_error() -> None:
    async def scenario() -> None:
        with pytest.raises(EndpointError, match=r"cannot listen on 'tcp://256\.0\.0\.1:1'"):
            ZmqTransport(0, "tcp://256.0.0.1:1", {})
        with pytest.raises(EndpointError, match="cannot connect to node 1"):
            ZmqTransport(0, LOCAL, {1: "nonsense"})

    run(scenario)


# ---- CURVE -------------------------------------------------------------------------------


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    generate_topology_keys(tmp_path, range(4))  # node 3 has keys but is nobody's neighbour
    return tmp_path


def curve_node(keydir: Path, me: int, peers: dict[int, str]) -> ZmqTransport:
    return ZmqTransport(me, LOCAL, peers, curve=load_curve_keys(keydir, me, peers or [1, 2]))


def test_curve_admits_neighbours_and_binds_their_identity(keydir: Path) -> None:
    async def scenario() -> None:
        a = curve_node(keydir, 0, {})  # admits 1 and 2
        b = curve_node(keydir, 1, {0: a.endpoint})
        c = curve_node(keydir, 2, {0: a.endpoint})
        inbox = Inbox([1, 2], expected_dim=1000)
        try:
            identity, frames = await deliver(b, 0, a, dual(1))
            assert identity == b"1" and inbox.accept(identity, frames, 0.0) == dual(1)
            # Node 2 is a neighbour, but it claims to be node 1: the key says otherwise.
            identity, frames = await deliver(c, 0, a, dual(1, seq=5))
            assert identity == b"2"
            assert inbox.accept(identity, frames, 0.0) is None
            assert inbox.rejected[2]["PeerError"] == 1
        finally:
            for t in (a, b, c):
                t.close()

    run(scenario)


def test_curve_refuses_unknown_keys_and_plaintext(keydir: Path) -> None:
    async def scenario() -> None:
        a = curve_node(keydir, 0, {})
        server_key = load_curve_keys(keydir, 0, []).public
        # Node 3 has a real key pair and a copy of our public key, but is not our neighbour.
        own = load_curve_keys(keydir, 3, [])
        stranger = ZmqTransport(
            3, LOCAL, {0: a.endpoint}, curve=CurveKeys(own.public, own.secret, {0: server_key})
        )
        # An impostor reuses node 1's id but not its key.
        pub, sec = zmq.curve_keypair()
        impostor = ZmqTransport(
            1, LOCAL, {0: a.endpoint}, curve=CurveKeys(pub, sec, {0: server_key})
        )
        plain = ZmqTransport(1, LOCAL, {0: a.endpoint})
        try:
            for _ in range(20):
                for t, sid in ((stranger, 3), (impostor, 1), (plain, 1)):
                    t.send(0, encode(dual(sid)))
                if await nothing_arrives(a, 0.05) is False:
                    raise AssertionError("a refused client got a message through")
            assert a.stats.auth_denied >= 2
            assert not any(s.messages_received for s in a.stats.links.values())
            assert a.stats.strangers.messages_received == 0
        finally:
            for t in (a, stranger, impostor, plain):
                t.close()

    run(scenario)


def test_curve_without_a_neighbour_key_is_a_setup_error(keydir: Path) -> None:
    async def scenario() -> None:
        keys = load_curve_keys(keydir, 0, [1])
        with pytest.raises(KeyFileError, match="node 2"):
            ZmqTransport(0, LOCAL, {2: "tcp://127.0.0.1:1"}, curve=keys)

    run(scenario)


def test_curve_neighbour_cannot_take_over_another_neighbours_link(keydir: Path) -> None:
    """Node 2 holds an admitted key and connects claiming node 1's routing id: node 1's own
    link must keep delivering (routing ids are not identities under CURVE)."""

    async def scenario() -> None:
        a = curve_node(keydir, 0, {})  # admits 1 and 2
        b = curve_node(keydir, 1, {0: a.endpoint})
        keys2 = load_curve_keys(keydir, 2, [0])
        squatter = zmq.Context()
        s = squatter.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, b"1")
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.CURVE_SECRETKEY, keys2.secret)
        s.setsockopt(zmq.CURVE_PUBLICKEY, keys2.public)
        s.setsockopt(zmq.CURVE_SERVERKEY, keys2.peers[0])
        try:
            await deliver(b, 0, a, dual(1))  # b's link is up
            s.connect(a.endpoint)
            s.send_multipart(encode(dual(2, seq=1)))  # the squatter's connection is live
            for seq in range(2, 52):
                assert b.send(0, encode(dual(1, seq=seq)))
                await asyncio.sleep(0.01)
            seen: dict[bytes, int] = {}
            with contextlib.suppress(TimeoutError):
                while sum(seen.values()) < 51:
                    identity, _ = await asyncio.wait_for(a.recv(), 1.0)
                    seen[identity] = seen.get(identity, 0) + 1
            # every message of node 1 arrived, and the squatter got in only as node 2
            assert seen == {b"1": 50, b"2": 1}, seen
        finally:
            s.close(linger=0)
            squatter.term()
            for t in (a, b):
                t.close()

    run(scenario)
