"""The gossip package's one exception hierarchy.

    GossipError                  base of everything raised by `gossip`
    ├── ProtocolError            a peer sent something we refuse; caught by the receive filter,
    │   │                        counted per peer and logged, never raised out of the receive path
    │   ├── DecodeError          malformed frames: header, version, type, dtype, shape, values
    │   ├── PeerError            not a configured neighbour, or the sender claims another identity
    │   └── ReplayError          stale or duplicate sequence number
    ├── EncodeError              we were asked to send something unsendable (our own bug)
    └── SetupError               bad local configuration, reported once at start-up
        ├── KeyFileError         a CURVE key file is missing, unreadable or malformed
        └── EndpointError        an endpoint cannot be bound or connected

Every message is one sentence that names the offending thing, so `str(error)` can be shown to a
user as is.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "EncodeError",
    "EndpointError",
    "GossipError",
    "KeyFileError",
    "NormError",
    "PeerError",
    "ProtocolError",
    "ReplayError",
    "SetupError",
]


class GossipError(Exception):
    """Base class of all errors raised by the gossip package."""


class ProtocolError(GossipError):
    """A peer violated the protocol; the message is dropped and counted."""


class DecodeError(ProtocolError):
    """The frames of a message are not a valid encoding."""


class PeerError(ProtocolError):
    """The message comes from a peer we do not talk to, or claims another peer's identity."""


class ReplayError(ProtocolError):
    """The message's sequence number was already seen or is too old to tell."""


class NormError(ProtocolError):
    """The message's tensor is larger (RMS per coordinate) than the configured bound."""


class EncodeError(GossipError):
    """A message cannot be encoded (wrong dtype or shape, non-finite or overflowing values)."""


class SetupError(GossipError):
    """Local configuration is wrong; raised at start-up, never while running."""


class KeyFileError(SetupError):
    """A CURVE key file is missing, unreadable or malformed."""


class EndpointError(SetupError):
    """A ZeroMQ endpoint cannot be bound or connected."""
