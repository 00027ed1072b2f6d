"""The ZeroMQ transport: one ROUTER bound for inbound messages, one DEALER per neighbour.

    neighbour j's DEALER (IDENTITY=b"j") ──tcp──▶ our ROUTER ──recv()──▶ (b"j", frames)
    send(j, frames) ──▶ our DEALER for j (IDENTITY=b"<me>") ──tcp──▶ j's ROUTER
    (under CURVE no IDENTITY is set: the key, not the routing id, names the peer)

Guarantees and choices:
- Sending never blocks the event loop: DEALERs are plain (synchronous) sockets used with
  NOBLOCK and IMMEDIATE=1, so a full queue (SNDHWM) or a neighbour that is not connected makes
  `send` return False and count a drop instead of queueing for a dead peer or waiting.
- Frames go out with copy=False: a float32 tensor is handed to libzmq without a copy, so it must
  not be modified after `send` (the codec contract). Received frames are memoryviews of the
  libzmq messages, also without a copy.
- Receiving costs one event-loop hop only when nothing is queued: `recv` takes a queued message
  with non-blocking calls, and otherwise waits on the ROUTER's file descriptor with a bare
  future (no zmq.asyncio machinery, which cost more Python per message than the strict decoder).
- libzmq guards the socket: MAXMSGSIZE (per frame) on the ROUTER disconnects a peer that sends
  an oversized frame before we allocate it; RCVHWM bounds what waits in memory; ZMTP
  heartbeats drop dead TCP connections. The protocol's own liveness is `gossip.liveness`.
- CURVE (optional): every socket encrypts; our ROUTER's ZAP handler admits only the neighbours'
  public keys and reports the admitted key's node id as the ZMQ User-Id, which `recv` returns
  instead of the claimed routing identity. So with CURVE the identity is authenticated, and
  without it (a warning is logged) it is only the peer's claim.
- Each transport owns its ZeroMQ context, because the ZAP handler is per context; several nodes
  can therefore share one process (tests, the in-process launcher).

The transport's protocol, options and counters are `gossip.links`; the CURVE admission (ZAP
handler) is `gossip.zap`. This module, `gossip.zap` and `gossip.faults` are the only ones in
`gossip` that touch zmq or asyncio. A transport must be created while the event loop runs (the
ZAP handler is a task on it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import zmq
import zmq.asyncio

from gossip.codec import Frame
from gossip.errors import EndpointError, KeyFileError
from gossip.keys import CurveKeys
from gossip.links import LinkStats, Transport, TransportConfig, TransportStats
from gossip.messages import PeerId, parse_peer_id
from gossip.zap import ZAP_DOMAIN, NeighbourAuthenticator

__all__ = ["LinkStats", "Transport", "TransportConfig", "TransportStats", "ZmqTransport"]

logger = logging.getLogger(__name__)

# Plain ints: pyzmq's flag enums cost microseconds per `|` on the per-message path.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class ZmqTransport:
    """ROUTER-in, DEALER-per-neighbour ZeroMQ transport; see the module docstring."""

    def __init__(
        self,
        me: PeerId,
        listen: str,
        peers: Mapping[PeerId, str],
        *,
        config: TransportConfig | None = None,
        curve: CurveKeys | None = None,
    ) -> None:
        """Bind `listen` and connect to every neighbour.

        Args:
            me: our node id, sent as the DEALERs' routing identity.
            listen: endpoint to bind, e.g. "tcp://0.0.0.0:5555" or "tcp://127.0.0.1:0".
            peers: neighbour id -> its listen endpoint.
            config: socket options.
            curve: our keys and the neighbours' public keys; None runs in plaintext.

        Raises:
            EndpointError: `listen` cannot be bound or a neighbour endpoint is invalid.
            KeyFileError: CURVE is on and a neighbour has no public key.
        """
        self.me = me
        self.config = cfg = config or TransportConfig()
        self.curve = curve
        self.stats = TransportStats({p: LinkStats() for p in peers})
        self._ctx = zmq.asyncio.Context()
        self._auth: NeighbourAuthenticator | None = None
        self._dealers: dict[PeerId, zmq.Socket[bytes]] = {}
        # A plain socket: `recv` polls it itself (see there), so zmq.asyncio never touches it.
        self._router: zmq.Socket[bytes] = zmq.Socket(self._ctx, zmq.ROUTER)
        self._router_fd = int(self._router.getsockopt(zmq.FD))
        self._waiters: list[asyncio.Future[None]] = []
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._last_denial_log = float("-inf")
        try:
            self._setup_router(listen, cfg, curve)
            for peer, endpoint in peers.items():
                self.connect(peer, endpoint)
        except BaseException:
            self.close()
            raise
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        if curve is None:
            logger.warning(
                "node %d runs without CURVE: traffic is unencrypted and a peer's node id is only "
                "its claim",
                me,
            )

    def _setup_router(self, listen: str, cfg: TransportConfig, curve: CurveKeys | None) -> None:
        r = self._router
        _set_common(r, cfg)
        r.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        r.setsockopt(zmq.MAXMSGSIZE, cfg.max_frame_bytes)
        if curve is None:
            # A restarted neighbour reconnects with the same identity before its old connection
            # has timed out; without handover the ROUTER would ignore the new connection.
            # (Plaintext authenticates nobody: whoever reaches the port can claim any id.)
            r.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            # Under CURVE the key names the peer and the ROUTER gives every connection its own
            # random routing id: a neighbour claiming another's id cannot take its link over,
            # and a restarted neighbour simply opens a second connection.
            self._auth = NeighbourAuthenticator(self, curve)
            self._auth.start()
            r.setsockopt(zmq.CURVE_SERVER, 1)
            r.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
            r.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
            r.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        try:
            r.bind(listen)
        except zmq.ZMQError as exc:
            raise EndpointError(
                f"cannot listen on {listen!r} ({exc.strerror}); give a free tcp://HOST:PORT."
            ) from exc

    def connect(self, peer: PeerId, endpoint: str) -> None:
        """Open (or replace) the DEALER towards `peer` at `endpoint`."""
        self.disconnect(peer)
        d: zmq.Socket[bytes] = zmq.Socket(self._ctx, zmq.DEALER)
        cfg = self.config
        _set_common(d, cfg)
        if self.curve is None:  # under CURVE our key says who we are (see _setup_router)
            d.setsockopt(zmq.IDENTITY, str(self.me).encode())
        d.setsockopt(zmq.SNDHWM, cfg.sndhwm)
        # IMMEDIATE: queue only on a live connection, so a dead peer costs a counted drop
        # rather than a backlog that floods it when it returns.
        d.setsockopt(zmq.IMMEDIATE, 1)
        d.setsockopt(zmq.RECONNECT_IVL, cfg.reconnect_ivl_ms)
        d.setsockopt(zmq.RECONNECT_IVL_MAX, cfg.reconnect_ivl_max_ms)
        if self.curve is not None:
            server_key = self.curve.peers.get(peer)
            if server_key is None:
                d.close(linger=0)
                raise KeyFileError(f"CURVE is on but no public key was loaded for node {peer}.")
            d.setsockopt(zmq.CURVE_SECRETKEY, self.curve.secret)
            d.setsockopt(zmq.CURVE_PUBLICKEY, self.curve.public)
            d.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        try:
            d.connect(endpoint)
        except zmq.ZMQError as exc:
            d.close(linger=0)
            raise EndpointError(
                f"cannot connect to node {peer} at {endpoint!r} ({exc.strerror}); "
                "give a tcp://HOST:PORT."
            ) from exc
        self._dealers[peer] = d
        self.stats.links.setdefault(peer, LinkStats())

    def disconnect(self, peer: PeerId) -> None:
        """Close the DEALER towards `peer`, dropping what is queued for it."""
        d = self._dealers.pop(peer, None)
        if d is not None:
            d.close(linger=0)

    # ---- data path -----------------------------------------------------------------------

    def send(self, peer: PeerId, frames: Sequence[Frame]) -> bool:
        """Queue one message for `peer` without blocking; False (and counted) if dropped."""
        d = self._dealers.get(peer)
        link = self.stats.links.get(peer)
        if d is None or link is None:
            return False
        if not frames:
            raise ValueError("a message has at least one frame (the header).")
        # Frame by frame rather than send_multipart, whose per-call type checks and per-frame
        # wrappers are Python. libzmq queues a multipart message atomically: once the first
        # frame is accepted the others are too (the high-water mark counts whole messages).
        last = len(frames) - 1
        nbytes = 0
        try:
            for i, f in enumerate(frames):
                d.send(f, _NOBLOCK_MORE if i < last else _NOBLOCK, copy=False)
                nbytes += f.nbytes if isinstance(f, memoryview) else len(f)
        except zmq.Again:
            link.dropped += 1
            return False
        link.messages_sent += 1
        link.bytes_sent += nbytes
        return True

    async def recv(self) -> tuple[bytes, list[memoryview]]:
        """Wait for the next inbound message.

        Returns:
            (identity, frames): identity is the authenticated node id (ASCII) with CURVE, the
            peer's routing identity otherwise; frames are zero-copy views.

        Raises:
            asyncio.CancelledError: the transport was closed while we waited (as zmq.asyncio).
        """
        router = self._router
        while True:
            try:
                part = router.recv(_NOBLOCK, copy=False)
            except zmq.Again:
                pass
            else:
                break
            # Nothing queued. The failed call also made libzmq process its pending commands,
            # which re-arms the socket's file descriptor, so waiting for the descriptor cannot
            # miss a message that arrives from now on.
            await self._readable()
        # The rest of a multipart message is delivered with its first frame: no waiting.
        # `more` is read by the recv itself; getsockopt(RCVMORE) would cost an enum per frame.
        parts = [part]
        while part.more:
            part = router.recv(_NOBLOCK, copy=False)
            parts.append(part)
        identity = parts[0].bytes
        if self.curve is not None:
            # ZAP made the User-Id the node id bound to the peer's key; the routing identity
            # is the peer's own claim and is ignored.
            user = parts[-1].get("User-Id")
            identity = user.encode() if isinstance(user, str) else b""
        frames = []
        nbytes = 0
        for p in parts[1:]:
            view = p.buffer  # zero-copy
            nbytes += view.nbytes
            frames.append(view)
        peer = parse_peer_id(identity)
        link = self.stats.strangers if peer is None else \
            self.stats.links.get(peer, self.stats.strangers)
        link.messages_received += 1
        link.bytes_received += nbytes
        return identity, frames

    async def _readable(self) -> None:
        """Return once the ROUTER's descriptor fires (maybe spuriously: callers re-check)."""
        loop = asyncio.get_running_loop()
        if self._reader_loop is not loop:
            self._unwatch()
            loop.add_reader(self._router_fd, self._on_readable)
            self._reader_loop = loop
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _on_readable(self) -> None:
        # ZMQ_FD only says that the socket's state may have changed, and stays readable until
        # the socket processes its pending commands. Reading EVENTS does that (so a descriptor
        # nobody waits on cannot spin the event loop) and tells whether a message is queued,
        # so waiters are woken only for one; without waiters it stays queued for the next recv.
        if self._router.closed or not cast(int, self._router.getsockopt(_EVENTS)) & _POLLIN:
            return
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _unwatch(self) -> None:
        loop, self._reader_loop = self._reader_loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._router_fd)

    def close(self, *, linger_ms: int = 0) -> None:
        """Close all sockets; queued outbound messages get at most `linger_ms` to leave."""
        for d in self._dealers.values():
            d.close(linger=linger_ms)
        self._dealers.clear()
        self._unwatch()  # before the descriptor goes away with the socket
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.cancel()
        self._router.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        # Every socket has a finite linger, so term returns within linger_ms.
        self._ctx.term()

    def _auth_denied(self, key: bytes) -> None:
        self.stats.auth_denied += 1
        now = time.monotonic()
        if now - self._last_denial_log >= 10.0:  # one line per 10 s: a scanner cannot flood logs
            self._last_denial_log = now
            logger.warning(
                "node %d refused a CURVE client with unknown key %s (%d refused so far)",
                self.me,
                key.decode(),
                self.stats.auth_denied,
            )



def _set_common(sock: zmq.Socket[Any], cfg: TransportConfig) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, cfg.heartbeat_ivl_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, cfg.heartbeat_timeout_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, cfg.heartbeat_ttl_ms)
