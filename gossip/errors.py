"""The gossip package's one exception hierarchy.

    GossipError                  base of everything raised by `gossip`
    ├── ProtocolError            a peer sent something we refuse; caught by the receive filter,
    │   │                        counted per peer and logged, never raised out of the receive path
    │   ├── DecodeError          malformed frames: header, version, type, dtype, shape, values
    │   ├── PeerError            not a configured neighbour, or the sender claims another identity
    │   ├── ReplayError          stale or duplicate sequence number
    │   └── NormError            a tensor above the configured RMS bound
    ├── EncodeError              we were asked to send something unsendable (our own bug)
    └── SetupError               bad local configuration, reported once at start-up
        ├── KeyFileError         a CURVE key file is missing, unreadable or malformed
        └── EndpointError        an endpoint cannot be bound or connected

Every message is one sentence that names the offending thing, so `str(error)` can be shown to a
user as is.

`Rejection` is the one vocabulary of dropped messages: every `ProtocolError` carries its kind,
the round book's drops (a valid message for the wrong round) have theirs, and the per-peer
counts a node keeps, writes to final.json (`rejected_messages`) and exports to Prometheus (the
`reason` label) are keyed by it. The values are the strings those files have always held;
`STRANGER` is the peer key under which messages from non-neighbours are counted.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final

__all__ = [
    "STRANGER",
    "DecodeError",
    "EncodeError",
    "EndpointError",
    "GossipError",
    "KeyFileError",
    "NormError",
    "PeerError",
    "ProtocolError",
    "Rejection",
    "ReplayError",
    "SetupError",
]

# The peer name non-neighbours are counted under (final.json, Prometheus): strangers share one
# row, so they cannot grow our tables.
STRANGER: Final = "stranger"


class Rejection(enum.StrEnum):
    """Why a received message was dropped, as the per-peer counts name it."""

    DECODE = "DecodeError"              # the frames are not a valid encoding
    PEER = "PeerError"                  # not a neighbour, or it speaks for another node
    REPLAY = "ReplayError"              # a sequence number seen already or too old to tell
    NORM = "NormError"                  # a tensor above the RMS bound
    STALE_ROUND = "StaleRound"          # for a round already closed (late, or re-sent)
    DUPLICATE_ROUND = "DuplicateRound"  # a second message of one kind for the same round
    TOO_FAR_AHEAD = "TooFarAhead"       # for a round too far ahead to buffer


class GossipError(Exception):
    """Base class of all errors raised by the gossip package."""


class ProtocolError(GossipError):
    """A peer violated the protocol; the message is dropped and counted under `kind`."""

    kind: ClassVar[Rejection]

    def __init_subclass__(cls, **kwargs: object) -> None:
        # A refusal nobody can count is a refusal nobody sees: every kind of protocol error
        # has a Rejection (its own, or the one of the error it refines).
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "kind", None), Rejection):
            raise TypeError(f"{cls.__name__} must set `kind` to a Rejection.")


class DecodeError(ProtocolError):
    """The frames of a message are not a valid encoding."""

    kind = Rejection.DECODE


class PeerError(ProtocolError):
    """The message comes from a peer we do not talk to, or claims another peer's identity."""

    kind = Rejection.PEER


class ReplayError(ProtocolError):
    """The message's sequence number was already seen or is too old to tell."""

    kind = Rejection.REPLAY


class NormError(ProtocolError):
    """The message's tensor is larger (RMS per coordinate) than the configured bound."""

    kind = Rejection.NORM


class EncodeError(GossipError):
    """A message cannot be encoded (wrong dtype or shape, non-finite or overflowing values)."""


class SetupError(GossipError):
    """Local configuration is wrong; raised at start-up, never while running."""


class KeyFileError(SetupError):
    """A CURVE key file is missing, unreadable or malformed."""


class EndpointError(SetupError):
    """A ZeroMQ endpoint cannot be bound or connected."""
