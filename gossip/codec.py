"""The wire format: the only module that knows how a `Message` becomes ZeroMQ frames.

A message is one multipart ZeroMQ message, `[header, *tensor_frames]` (full spec in
`gossip/PROTOCOL.md`):

    header   msgpack map, at most MAX_HEADER_BYTES, exactly these keys:
             "v"    protocol version, int (PROTOCOL_VERSION)
             "t"    type: "hello" | "dual" | "primal" | "hb" | "bye"
             "src"  sender node id, int
             "r"    round, int >= 0
             "seq"  per-sender sequence number, int >= 0
             "f"    manifest: one [dtype, [length]] per tensor frame, in frame order
             "dim"  (hello only) model size, int >= 1
             "why"  (bye only) reason, str of at most MAX_REASON_CHARS
             "hw"   (hb answering a hello only) 1 + the highest round of the receiver's
                    heard before its latest hello, int >= 0 (0: none); new in version 2
    tensors  raw little-endian buffers, one per manifest entry; dtype is one of
             "float32" | "float16" | "bfloat16" (bfloat16 = the upper 16 bits of a float32)

Dual and Primal carry exactly one 1-D tensor; the other types carry none. A compressed Dual
(`Sparse`, `Seeded`, `Quantized`; `gossip.packed`) has one more key, "c", and its own frames:

    "c"      ["topk", dim, reset]          frames: u32[k] indices, then k values
             ["randk", dim, reset, seed]   frames: k values (positions follow from the seed)
             ["int8", dim, reset, scale]   frames: i8[dim] codes in [-127, 127]
             ["int4", dim, reset, scale]   frames: i4[dim] codes in [-7, 7], two per byte

Design choices:
- Zero-copy: a float32 payload goes out as a memoryview of the array and comes back as a numpy
  view of the received frame. float16/bfloat16 halve the bytes at the cost of one conversion
  each way; decoded tensors are always float32. Decoded arrays are read-only.
- Strict: `decode` checks everything it can without knowing who sent the message (size, version,
  type, keys, types and ranges, dtype allow-list, shape × itemsize = frame length, `dim`, finite
  values) and raises only `DecodeError`. Who may send what is `gossip.inbox`'s job.
- One pass over a payload: the finite-values check is a sum of squares (one BLAS read, no
  temporary), which `decode_with_sum_sq` hands to the inbox for its norm bound.
- msgpack and raw buffers only: nothing here can execute peer bytes (no pickle, ever).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import msgpack
import numpy as np  # noqa: F401  (tests count payload reads by patching codec.np.vdot)

from gossip.errors import DecodeError, EncodeError
from gossip.floats import ITEMSIZE as _ITEMSIZE
from gossip.floats import MAX_DIM, WIRE_DTYPES, WireDtype, floats_from_wire
from gossip.floats import floats_to_wire as _tensor_to_wire
from gossip.messages import (
    MAX_PEER_ID,
    Bye,
    Dual,
    Heartbeat,
    Hello,
    Message,
    Primal,
    Quantized,
    Seeded,
    Sparse,
    Tensor,
)
from gossip.packed import PACKED_KEY, decode_packed, encode_packed, is_packed

__all__ = [
    "MAX_HEADER_BYTES",
    "PROTOCOL_VERSION",
    "WIRE_DTYPES",
    "Frame",
    "WireDtype",
    "decode",
    "decode_with_sum_sq",
    "encode",
    "header_size",
]

# Version 2 added "hw" to the "hb" answering a hello. A node refuses every other version (and
# a version-1 node refuses ours): a peer that cannot say what it heard of a restored node must
# not pass for one that heard nothing.
PROTOCOL_VERSION: Final = 2
MAX_HEADER_BYTES: Final = 512
MAX_REASON_CHARS: Final = 200
_MAX_ROUND: Final = 2**53
_MAX_SEQ: Final = 2**64 - 1


# Anything supporting the buffer protocol; zmq Frames are turned into memoryviews by the transport.
Frame: TypeAlias = bytes | bytearray | memoryview

_TAGS: Final[dict[type, str]] = {
    Hello: "hello",
    Dual: "dual",
    Primal: "primal",
    Heartbeat: "hb",
    Bye: "bye",
}
_COMMON_KEYS: Final = frozenset({"v", "t", "src", "r", "seq", "f"})
_PACKED_DUAL_KEYS: Final = _COMMON_KEYS | {PACKED_KEY}
_ANSWER_KEYS: Final = _COMMON_KEYS | {"hw"}  # a hb answering a hello
_KEYS: Final[dict[str, frozenset[str]]] = {
    "hello": _COMMON_KEYS | {"dim"},
    "dual": _COMMON_KEYS,
    "primal": _COMMON_KEYS,
    "hb": _COMMON_KEYS,
    "bye": _COMMON_KEYS | {"why"},
}
# msgpack limits: a header is a small flat map, so anything bigger is hostile or broken.
_MAX_HEADER_STR: Final = 4 * MAX_REASON_CHARS
_MAX_HEADER_CONTAINER: Final = 8  # entries of a map or an array


# --------------------------------------------------------------------------------------------
# encoding


def encode(msg: Message, wire_dtype: WireDtype = "float32") -> list[Frame]:
    """Encode a message into the frames of one multipart ZeroMQ message.

    Args:
        msg: the message; a tensor payload must be a 1-D float32 array and must not be modified
            afterwards, since a float32 payload is shared with the transport without a copy.
        wire_dtype: how tensors travel; float16 and bfloat16 halve the bytes.

    Returns:
        `[header, *tensor_frames]`, ready for `send_multipart(..., copy=False)`.

    Raises:
        EncodeError: wrong payload type/shape, an unknown wire dtype, or values that overflow
            the wire dtype.
    """
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "t": _TAGS[type(msg)],
        "src": msg.sender,
        "r": msg.round,
        "seq": msg.seq,
        "f": [],
    }
    # isinstance rather than `match`: this runs for every message and class patterns cost more.
    if isinstance(msg, Dual) and is_packed(msg.payload):
        # A compressed payload travels in its own dtypes: the wire dtype is for dense tensors.
        header[PACKED_KEY], header["f"], frames = encode_packed(msg.payload)
        return [msgpack.packb(header, use_bin_type=True), *frames]
    if isinstance(msg, Dual | Primal):
        payload = msg.payload
        if isinstance(payload, Sparse | Seeded | Quantized):  # a Primal is always dense
            raise EncodeError("a primal payload must be a dense tensor.")
        frame = _tensor_to_wire(payload, wire_dtype)
        header["f"] = [[wire_dtype, [len(payload)]]]
        return [msgpack.packb(header, use_bin_type=True), frame]
    if isinstance(msg, Hello):
        header["dim"] = msg.dim
    elif isinstance(msg, Bye):
        header["why"] = msg.reason[:MAX_REASON_CHARS]
    elif isinstance(msg, Heartbeat) and msg.high_water is not None:
        header["hw"] = msg.high_water
    return [msgpack.packb(header, use_bin_type=True)]


def header_size(msg: Message, wire_dtype: WireDtype = "float32") -> int:
    """Bytes of the header frame for this message (to report the protocol's overhead)."""
    return len(encode(msg, wire_dtype)[0])


# --------------------------------------------------------------------------------------------
# decoding


def decode(frames: Sequence[Frame], *, expected_dim: int | None = None) -> Message:
    """Decode and validate the frames of one multipart message.

    Args:
        frames: `[header, *tensor_frames]` as received (routing identity already removed).
        expected_dim: if given, tensors and `Hello.dim` must have exactly this many elements.

    Returns:
        The message; tensors are float32 and, for float32 on the wire, views of the frames.

    Raises:
        DecodeError: for anything that is not a valid encoding; nothing else.
    """
    return decode_with_sum_sq(frames, expected_dim=expected_dim)[0]


def decode_with_sum_sq(
    frames: Sequence[Frame], *, expected_dim: int | None = None
) -> tuple[Message, float]:
    """`decode`, also returning the tensor's sum of squares (0.0 for a message without one).

    The sum comes from the same pass over the payload that proves every value finite, so a
    receiver that bounds the tensor's norm (`gossip.inbox`) need not read the payload again.
    It is accumulated in float32 like `np.dot`; if that overflows (finite values whose squares
    sum beyond 3.4e38) it is recomputed in float64, so it is always finite and never makes a
    norm bound reject a tensor that is in fact below it.

    Raises:
        DecodeError: exactly when `decode` does.
    """
    if not frames:
        raise DecodeError("the message has no frames.")
    header = _unpack_header(frames[0])
    n_tensors = len(frames) - 1
    version = header.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise DecodeError(f"unsupported protocol version {version!r}.")
    tag = header.get("t")
    if not isinstance(tag, str) or tag not in _KEYS:
        raise DecodeError(f"unknown message type {tag!r}.")
    packed = tag == "dual" and header.keys() == _PACKED_DUAL_KEYS
    answer = tag == "hb" and header.keys() == _ANSWER_KEYS
    if header.keys() != _KEYS[tag] and not (packed or answer):
        raise DecodeError(f"a {tag} header has keys {sorted(header)}, not {sorted(_KEYS[tag])}.")
    sender = _int(header, "src", 0, MAX_PEER_ID)
    rnd = _int(header, "r", 0, _MAX_ROUND)
    seq = _int(header, "seq", 0, _MAX_SEQ)
    manifest = header["f"]
    if not isinstance(manifest, list) or len(manifest) != n_tensors:
        raise DecodeError("the manifest does not list exactly one entry per tensor frame.")
    if packed:
        views = [_as_bytes_view(f) for f in frames[1:]]
        compressed, sum_sq = decode_packed(header[PACKED_KEY], manifest, views, expected_dim)
        return Dual(sender, rnd, seq, compressed), sum_sq
    if tag == "dual" or tag == "primal":
        if n_tensors != 1:
            raise DecodeError(f"a {tag} message has {n_tensors} tensor frames.")
        payload, sum_sq = _tensor_from_wire(manifest[0], frames[1], expected_dim)
        if tag == "dual":
            return Dual(sender, rnd, seq, payload), sum_sq
        return Primal(sender, rnd, seq, payload), sum_sq
    if n_tensors:
        raise DecodeError(f"a {tag} message has {n_tensors} tensor frames.")
    if tag == "hello":
        dim = _int(header, "dim", 1, MAX_DIM)
        if expected_dim is not None and dim != expected_dim:
            raise DecodeError(f"the peer's model has {dim} parameters, ours {expected_dim}.")
        return Hello(sender, rnd, seq, dim), 0.0
    if tag == "hb":
        high_water = _int(header, "hw", 0, _MAX_ROUND + 1) if answer else None
        return Heartbeat(sender, rnd, seq, high_water), 0.0
    reason = header["why"]  # the one tag left is "bye"
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise DecodeError("a bye reason must be a short string.")
    return Bye(sender, rnd, seq, reason), 0.0


def _unpack_header(frame: Frame) -> dict[str, Any]:
    raw = _as_bytes_view(frame)
    if raw.nbytes > MAX_HEADER_BYTES:
        raise DecodeError(f"the header has {raw.nbytes} bytes, more than {MAX_HEADER_BYTES}.")
    try:
        # Keywords spelled out: expanding a **dict of limits costs as much as the parse itself.
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_str_len=_MAX_HEADER_STR,
            max_bin_len=0,
            max_array_len=_MAX_HEADER_CONTAINER,
            max_map_len=_MAX_HEADER_CONTAINER,
            max_ext_len=0,
        )
    # msgpack signals malformed input with these (ExtraData, FormatError, StackError and
    # UnicodeDecodeError are ValueErrors); they are the parser's boundary, not our bugs.
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"the header is not valid msgpack ({type(exc).__name__}).") from exc
    if not isinstance(header, dict):
        raise DecodeError("the header is not a msgpack map.")
    return header


def _int(header: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = header[key]
    # `type(...) is int` rather than isinstance: msgpack booleans are ints to isinstance.
    if type(value) is not int or not lo <= value <= hi:
        raise DecodeError(f"header field {key!r} is {value!r}, not an int in [{lo}, {hi}].")
    return value


def _tensor_from_wire(
    entry: object, frame: Frame, expected_dim: int | None
) -> tuple[Tensor, float]:
    if (
        not isinstance(entry, list)
        or len(entry) != 2
        or not isinstance(entry[0], str)
        or not isinstance(entry[1], list)
    ):
        raise DecodeError("a manifest entry must be [dtype, [length]].")
    dtype, shape = entry
    if dtype not in _ITEMSIZE:
        raise DecodeError(f"dtype {dtype!r} is not allowed.")
    if len(shape) != 1 or type(shape[0]) is not int or not 0 <= shape[0] <= MAX_DIM:
        raise DecodeError(f"shape {shape!r} is not a 1-D length.")
    (n,) = shape
    if expected_dim is not None and n != expected_dim:
        raise DecodeError(f"a tensor has {n} elements, expected {expected_dim}.")
    buf = _as_bytes_view(frame)
    if buf.nbytes != n * _ITEMSIZE[dtype]:
        raise DecodeError(f"a {dtype}[{n}] tensor arrived in a frame of {buf.nbytes} bytes.")
    return floats_from_wire(buf, dtype)


def _as_bytes_view(frame: Frame) -> memoryview:
    try:
        view = memoryview(frame)
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except TypeError as exc:  # not a buffer, or a non-contiguous one
        raise DecodeError("a frame is not a contiguous byte buffer.") from exc
