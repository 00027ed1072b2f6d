"""CURVE admission for the ZeroMQ transport: the ZAP handler of a node's ROUTER admits only its
neighbours' public keys and names each connection by the admitted key's node id (the ZMQ
User-Id `gossip.transport.ZmqTransport.recv` returns), so that under CURVE the sender's
identity is authenticated, not claimed. Refusals are counted and logged by the transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from gossip.keys import CurveKeys

if TYPE_CHECKING:
    from gossip.transport import ZmqTransport

__all__ = ["ZAP_DOMAIN", "NeighbourAuthenticator"]

ZAP_DOMAIN = "dpnorm"


class NeighbourAuthenticator(AsyncioAuthenticator):
    """ZAP handler: admits the neighbours' keys and names each by its node id."""

    def __init__(self, owner: ZmqTransport, curve: CurveKeys) -> None:
        super().__init__(owner._ctx)
        self._owner = owner
        self._ids = {bytes(key): peer for peer, key in curve.peers.items()}
        self.configure_curve_callback(ZAP_DOMAIN, self)

    def callback(self, domain: str, key: bytes) -> bool:
        """Credentials-provider hook: `key` is the client's Z85 public key."""
        if key in self._ids:
            return True
        self._owner._auth_denied(key)
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The admitted key's node id becomes the connection's ZMQ User-Id."""
        return str(self._ids[z85.encode(client_public_key)])
