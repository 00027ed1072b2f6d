"""One vocabulary of dropped messages and one reading of a peer's identity.

Every protocol error carries its `Rejection`; every way a message is dropped is counted under
one, and what a node writes (final.json `rejected_messages`, from `GossipProtocol.rejections`)
reads back into the same members. `parse_peer_id` is the only reading of a transport identity;
the receive filter refuses what it refuses.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import gossip.errors
from gossip.codec import encode
from gossip.errors import STRANGER, ProtocolError, Rejection
from gossip.inbox import Inbox
from gossip.liveness import LivenessConfig
from gossip.messages import MAX_PEER_ID, Dual, Heartbeat, parse_peer_id
from gossip.protocol import GossipConfig, GossipProtocol
from gossip.rounds import RoundConfig

DIM = 4


def subclasses(cls: type[ProtocolError]) -> list[type[ProtocolError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *subclasses(sub)]
    return out


def test_every_protocol_error_carries_its_own_kind() -> None:
    defined = [c for c in subclasses(ProtocolError) if c.__module__ == gossip.errors.__name__]
    assert len(defined) >= 4
    kinds = [c.kind for c in defined]
    assert all(isinstance(k, Rejection) for k in kinds)
    assert len(set(kinds)) == len(kinds)  # two errors under one name could not be told apart
    for cls in defined:  # an instance reports the class's kind
        assert cls("x").kind is cls.kind


def test_a_protocol_error_without_a_kind_cannot_be_defined() -> None:
    with pytest.raises(TypeError, match="must set `kind` to a Rejection"):
        type("Unnamed", (ProtocolError,), {})
    with pytest.raises(TypeError, match="must set `kind`"):
        type("Stringly", (ProtocolError,), {"kind": "PeerError"})  # a string is not a kind


def dual(sender: int, r: int, seq: int, value: float = 0.0) -> list[bytes]:
    return [bytes(f) for f in encode(Dual(sender, r, seq, np.full(DIM, value, np.float32)))]


def every_kind_of_drop() -> GossipProtocol:
    """A node 0 with neighbour 1 that drops one message of every kind."""
    cfg = GossipConfig(rounds=RoundConfig(deadline=1.0, future_window=2),
                       liveness=LivenessConfig(0.5, 1.0, 2.0, max_missed_deadlines=1),
                       max_message_rms=10.0)
    p = GossipProtocol(0, [1], cfg, dim=DIM, now=0.0)
    p.start_round(0, 0.0)
    p.receive(b"1", dual(1, 0, 1), 0.1)                          # accepted
    p.receive(b"1", dual(1, 0, 1), 0.1)                          # ReplayError
    p.receive(b"1", dual(1, 0, 2), 0.1)                          # DuplicateRound
    p.receive(b"1", [b"\x00" * 9], 0.1)                          # DecodeError
    p.receive(b"1", dual(1, 0, 3, 1e6), 0.1)                     # NormError
    p.receive(b"1", dual(2, 0, 4), 0.1)                          # PeerError (forged sender)
    p.receive(b"9", [bytes(f) for f in encode(Heartbeat(9, 0, 1))], 0.1)  # stranger
    p.close_round(0.2)
    p.start_round(1, 0.3)
    p.receive(b"1", dual(1, 0, 5), 0.4)                          # StaleRound
    p.receive(b"1", dual(1, 9, 6), 0.4)                          # TooFarAhead
    return p


def test_every_drop_is_counted_under_a_member_and_reads_back() -> None:
    p = every_kind_of_drop()
    written = json.loads(json.dumps(p.rejections()))  # as final.json holds it
    assert written == {"1": {str(k): 1 for k in Rejection}, STRANGER: {str(Rejection.PEER): 1}}
    read = {peer: {Rejection(k): n for k, n in kinds.items()} for peer, kinds in written.items()}
    assert set(read["1"]) == set(Rejection)  # the vocabulary is exactly what gets counted
    assert read == {peer: dict(p.inbox.rejected[None if peer == STRANGER else int(peer)])
                    for peer in written}


def test_the_written_names_are_the_ones_outputs_and_docs_use() -> None:
    # final.json files, the Prometheus `reason` label, docs/RELIABILITY.md and gossip/PROTOCOL.md
    # name the kinds by these strings: renaming a member must not change what is written.
    assert {str(k) for k in Rejection} == {
        "DecodeError", "PeerError", "ReplayError", "NormError",
        "StaleRound", "DuplicateRound", "TooFarAhead"}
    assert STRANGER == "stranger"


@pytest.mark.parametrize("identity, peer", [
    (b"0", 0), (b"7", 7), (b"42", 42), (str(MAX_PEER_ID).encode(), MAX_PEER_ID)])
def test_canonical_ids_are_read(identity: bytes, peer: int) -> None:
    assert parse_peer_id(identity) == peer


@pytest.mark.parametrize("identity", [
    b"", b"07", b"00", b"-1", b"+1", b" 1", b"1 ", b"1\n", b"1.0", b"x-3", b"0x1",
    str(MAX_PEER_ID + 1).encode(), b"99999999999", b"\x00k\x8bEg",  # a ZeroMQ-generated id
    "\u0663".encode(), "\uff11".encode()])                        # digits of other scripts
def test_malformed_identities_name_no_node(identity: bytes) -> None:
    assert parse_peer_id(identity) is None


@pytest.mark.parametrize("identity", [b"01", b"+1", b" 1"])
def test_the_receive_filter_refuses_what_the_parser_refuses(identity: bytes) -> None:
    # A neighbour's id in another spelling is a stranger, not that neighbour: otherwise two
    # connections would count as one peer (its replay window, its liveness).
    inbox = Inbox([1])
    assert inbox.accept(identity, [bytes(f) for f in encode(Heartbeat(1, 0, 1))], 0.0) is None
    assert inbox.rejected == {None: {Rejection.PEER: 1}}
    assert inbox.accept(b"1", [bytes(f) for f in encode(Heartbeat(1, 0, 1))], 0.0) is not None
