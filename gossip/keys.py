"""CURVE key files for a whole topology: generate once, load per node.

Layout of a key directory (one pair per node id, Z85 text, one line each):

    <dir>/<id>.public    the node's public key, readable by anyone (40 Z85 characters)
    <dir>/<id>.secret    the node's secret key, mode 0600

Each node needs its own pair plus its neighbours' `.public` files; ship nothing else to it.
Every failure is a `KeyFileError` whose message names the file.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from gossip.errors import KeyFileError
from gossip.messages import PeerId

__all__ = [
    "CurveKeys",
    "generate_topology_keys",
    "load_curve_keys",
    "public_key_path",
    "secret_key_path",
]

logger = logging.getLogger(__name__)

_Z85_KEY_CHARS = 40


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """One node's CURVE material (all keys Z85-encoded bytes).

    Attributes:
        public: our public key.
        secret: our secret key.
        peers: neighbour id -> that neighbour's public key; only these are admitted.
    """

    public: bytes
    secret: bytes
    peers: Mapping[PeerId, bytes]

    def __repr__(self) -> str:  # never print a secret key into a log
        return f"CurveKeys(public={self.public!r}, secret=<hidden>, peers={sorted(self.peers)})"


def public_key_path(directory: Path, node: PeerId) -> Path:
    """Where node `node`'s public key lives."""
    return Path(directory) / f"{node}.public"


def secret_key_path(directory: Path, node: PeerId) -> Path:
    """Where node `node`'s secret key lives."""
    return Path(directory) / f"{node}.secret"


def generate_topology_keys(
    directory: Path, nodes: Iterable[PeerId], *, overwrite: bool = False
) -> None:
    """Write a fresh key pair for every node that does not have a valid one yet.

    Args:
        directory: created if missing.
        nodes: node ids.
        overwrite: replace existing pairs too.

    Raises:
        KeyFileError: a file cannot be written.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create the key directory {directory}: {exc.strerror}.") from exc
    for node in nodes:
        if not overwrite:
            try:
                _load_pair(directory, node)
                continue
            except KeyFileError:
                pass  # missing or broken: write a new pair
        public, secret = zmq.curve_keypair()
        _write(public_key_path(directory, node), public, mode=0o644)
        _write(secret_key_path(directory, node), secret, mode=0o600)


def load_curve_keys(directory: Path, me: PeerId, neighbours: Iterable[PeerId]) -> CurveKeys:
    """Load our key pair and our neighbours' public keys from `directory`.

    Raises:
        KeyFileError: a file is missing, unreadable, malformed, or our pair does not match.
    """
    directory = Path(directory)
    public, secret = _load_pair(directory, me)
    peers = {p: _read_key(public_key_path(directory, p)) for p in neighbours}
    return CurveKeys(public, secret, peers)


def _load_pair(directory: Path, node: PeerId) -> tuple[bytes, bytes]:
    public_path, secret_path = public_key_path(directory, node), secret_key_path(directory, node)
    public, secret = _read_key(public_path), _read_key(secret_path)
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"the secret key {secret_path} does not belong to {public_path}.")
    mode = secret_path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "secret key %s is readable by others; run: chmod 600 %s", secret_path, secret_path
        )
    return public, secret


def _read_key(path: Path) -> bytes:
    try:
        text = path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise KeyFileError(f"the CURVE key file {path} does not exist.") from exc
    except OSError as exc:
        raise KeyFileError(f"the CURVE key file {path} cannot be read: {exc.strerror}.") from exc
    if len(text) != _Z85_KEY_CHARS:
        raise KeyFileError(f"the CURVE key file {path} does not hold one 40-character Z85 key.")
    try:
        z85.decode(text)
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise KeyFileError(f"the CURVE key file {path} is not valid Z85.") from exc
    return text


def _write(path: Path, key: bytes, *, mode: int) -> None:
    try:
        # Create with the final mode so a secret is never world-readable, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # O_CREAT's mode is ignored for existing files
            f.write(key + b"\n")
    except OSError as exc:
        raise KeyFileError(f"cannot write the CURVE key file {path}: {exc.strerror}.") from exc
