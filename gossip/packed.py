"""Compressed duals on the wire: the `Sparse`, `Seeded` and `Quantized` payloads as frames.

A compressed Dual's header has one more key than a dense one, "c", which says what follows:

    "c"                           frames                          manifest "f"
    ["topk", dim, reset]          u32[k] indices, k values        [["u32", [k]], [vd, [k]]]
    ["randk", dim, reset, seed]   k values                        [[vd, [k]]]
    ["int8", dim, reset, scale]   dim int8 codes                  [["i8", [dim]]]
    ["int4", dim, reset, scale]   ceil(dim/2) bytes of codes      [["i4", [dim]]]

vd is float32, float16 or bfloat16; an int4 byte holds code 2i in its low and 2i+1 in its high
nibble (two's complement), and an odd `dim` leaves the last high nibble zero.

Decoding is as strict as for dense tensors and raises only `DecodeError`: `dim` in range and
equal to the model size, indices strictly increasing (so no duplicates) and below `dim`, the
count in the manifest equal to the frames' lengths, codes within [-L, L] (L = 127 or 7), the
scale a finite float32 >= 0, every value finite. The sum of squares returned is that of the
vector the payload stands for, for the inbox's norm bound.
"""

from __future__ import annotations

import sys
from typing import Any, Final, Literal, TypeGuard

import numpy as np
import numpy.typing as npt

from gossip.errors import DecodeError, EncodeError
from gossip.floats import ITEMSIZE, MAX_DIM, floats_from_wire, floats_to_wire
from gossip.messages import Packed, Quantized, Seeded, Sparse, Tensor

__all__ = ["LEVELS", "PACKED_KEY", "decode_packed", "encode_packed", "is_packed"]

PACKED_KEY: Final = "c"
LEVELS: Final[dict[int, int]] = {8: 127, 4: 7}  # largest |code| for each bit width
_MAX_SEED: Final = 2**64 - 1
_ARITY: Final = {"topk": 3, "randk": 4, "int8": 4, "int4": 4}
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_U32: Final = np.dtype("<u4")
_F32_MAX: Final = float(np.finfo(np.float32).max)  # larger scales are not float32 (nor finite)


def is_packed(payload: object) -> TypeGuard[Packed]:
    return isinstance(payload, Sparse | Seeded | Quantized)


# --------------------------------------------------------------------------------------------
# encoding


def encode_packed(p: Packed) -> tuple[list[Any], list[list[Any]], list[memoryview]]:
    """(descriptor "c", manifest "f", frames) of a compressed payload; EncodeError if invalid."""
    if not (type(p.dim) is int and 1 <= p.dim <= MAX_DIM):
        raise EncodeError(f"a compressed tensor's dim must be in [1, {MAX_DIM}], got {p.dim!r}.")
    if isinstance(p, Sparse):
        idx = p.indices
        if not (isinstance(idx, np.ndarray) and idx.dtype == np.uint32 and idx.ndim == 1):
            raise EncodeError("top-k indices must be a 1-D uint32 numpy array.")
        k = len(idx)
        _check_count(k, len(p.values), p.dim)
        if k and (int(idx[-1]) >= p.dim or bool(np.any(np.diff(idx.astype(np.int64)) <= 0))):
            raise EncodeError("top-k indices must be strictly increasing and below dim.")
        values = floats_to_wire(p.values, p.value_dtype)
        manifest: list[list[Any]] = [["u32", [k]], [p.value_dtype, [k]]]
        raw = np.ascontiguousarray(idx, dtype=_U32)
        return ["topk", p.dim, bool(p.reset)], manifest, [raw.data.cast("B"), values]
    if isinstance(p, Seeded):
        if not (type(p.seed) is int and 0 <= p.seed <= _MAX_SEED):
            raise EncodeError(f"a random-k seed must be an int in [0, 2^64), got {p.seed!r}.")
        k = len(p.values)
        _check_count(k, k, p.dim)
        values = floats_to_wire(p.values, p.value_dtype)
        manifest = [[p.value_dtype, [k]]]
        return ["randk", p.dim, bool(p.reset), p.seed], manifest, [values]
    return _encode_quantized(p)


def _check_count(k: int, values: int, dim: int) -> None:
    if k != values or k > dim:
        raise EncodeError(f"a compressed tensor has {k} positions, {values} values, dim {dim}.")


def _encode_quantized(p: Quantized) -> tuple[list[Any], list[list[Any]], list[memoryview]]:
    if p.bits not in LEVELS:
        raise EncodeError(f"quantisation has 8 or 4 bits, not {p.bits!r}.")
    scale = float(p.scale)
    if not (0 <= scale <= _F32_MAX and float(np.float32(scale)) == scale):
        raise EncodeError(f"a quantisation scale must be a finite float32 >= 0, got {scale!r}.")
    codes = p.codes
    if not (isinstance(codes, np.ndarray) and codes.dtype == np.int8 and codes.shape == (p.dim,)):
        raise EncodeError("quantised codes must be a 1-D int8 numpy array of length dim.")
    level = LEVELS[p.bits]
    if codes.size and int(np.abs(codes.astype(np.int16)).max()) > level:
        raise EncodeError(f"a {p.bits}-bit code lies outside [-{level}, {level}].")
    desc = [f"int{p.bits}", p.dim, bool(p.reset), scale]
    if p.bits == 8:
        return desc, [["i8", [p.dim]]], [np.ascontiguousarray(codes).data.cast("B")]
    nibbles = (codes.astype(np.uint8) & np.uint8(0x0F))
    if p.dim % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    packed = nibbles[0::2] | (nibbles[1::2] << np.uint8(4))
    return desc, [["i4", [p.dim]]], [packed.data.cast("B")]


# --------------------------------------------------------------------------------------------
# decoding


def decode_packed(desc: object, manifest: list[Any], frames: list[memoryview],
                  expected_dim: int | None) -> tuple[Packed, float]:
    """The compressed payload and the sum of squares of the vector it stands for."""
    if not isinstance(desc, list) or not desc or not isinstance(desc[0], str) \
            or _ARITY.get(desc[0]) != len(desc):
        raise DecodeError(f"compression descriptor {desc!r} is not one of the known forms.")
    kind, dim, reset = desc[0], desc[1], desc[2]
    if type(dim) is not int or not 1 <= dim <= MAX_DIM:
        raise DecodeError(f"a compressed tensor's dim {dim!r} is not an int in [1, {MAX_DIM}].")
    if expected_dim is not None and dim != expected_dim:
        raise DecodeError(f"a compressed tensor has dim {dim}, expected {expected_dim}.")
    if type(reset) is not bool:
        raise DecodeError("a compressed tensor's reset flag must be a boolean.")
    entries = [_entry(e) for e in manifest]
    if kind == "topk":
        return _decode_topk(dim, reset, entries, frames)
    if kind == "randk":
        seed = desc[3]
        if type(seed) is not int or not 0 <= seed <= _MAX_SEED:
            raise DecodeError(f"a random-k seed {seed!r} is not an int in [0, 2^64).")
        (vd, k), = _shape(entries, 1)
        values, sum_sq = _values(vd, k, dim, frames[0])
        return Seeded(dim, seed, values, vd, reset), sum_sq  # type: ignore[arg-type]
    return _decode_quantized(kind, dim, reset, desc[3], entries, frames)


def _entry(entry: object) -> tuple[str, int]:
    if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
            or not isinstance(entry[1], list) or len(entry[1]) != 1
            or type(entry[1][0]) is not int or not 0 <= entry[1][0] <= MAX_DIM):
        raise DecodeError("a manifest entry must be [dtype, [length]].")
    return entry[0], entry[1][0]


def _shape(entries: list[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    if len(entries) != n:
        raise DecodeError(f"a compressed tensor of this kind has {n} frames, not {len(entries)}.")
    return entries


def _values(vd: str, k: int, dim: int, frame: memoryview) -> tuple[Tensor, float]:
    if vd not in ITEMSIZE:
        raise DecodeError(f"dtype {vd!r} is not allowed for values.")
    if k > dim:
        raise DecodeError(f"a compressed tensor has {k} values for dim {dim}.")
    if frame.nbytes != k * ITEMSIZE[vd]:
        raise DecodeError(f"{k} {vd} values arrived in a frame of {frame.nbytes} bytes.")
    return floats_from_wire(frame, vd)


def _decode_topk(dim: int, reset: bool, entries: list[tuple[str, int]],
                 frames: list[memoryview]) -> tuple[Sparse, float]:
    (idx_dtype, k), (vd, count) = _shape(entries, 2)
    if idx_dtype != "u32":
        raise DecodeError(f"top-k indices must be u32, not {idx_dtype!r}.")
    if count != k:
        raise DecodeError(f"top-k lists {k} indices but {count} values.")
    if frames[0].nbytes != 4 * k:
        raise DecodeError(f"{k} u32 indices arrived in a frame of {frames[0].nbytes} bytes.")
    idx: npt.NDArray[np.uint32] = np.frombuffer(frames[0], dtype=_U32)
    if not _LITTLE_ENDIAN:
        idx = idx.astype(np.uint32)
    if k and int(idx.max()) >= dim:
        raise DecodeError(f"a top-k index {int(idx.max())} is out of range for dim {dim}.")
    if k > 1 and bool(np.any(np.diff(idx.astype(np.int64)) <= 0)):
        raise DecodeError("top-k indices are not strictly increasing (duplicates or disorder).")
    values, sum_sq = _values(vd, k, dim, frames[1])
    idx.setflags(write=False)
    return Sparse(dim, idx, values, vd, reset), sum_sq  # type: ignore[arg-type]


def _decode_quantized(kind: str, dim: int, reset: bool, scale: object,
                      entries: list[tuple[str, int]],
                      frames: list[memoryview]) -> tuple[Quantized, float]:
    bits: Literal[8, 4] = 8 if kind == "int8" else 4
    if type(scale) is not float or not 0 <= scale <= _F32_MAX \
            or float(np.float32(scale)) != scale:
        raise DecodeError(f"a quantisation scale {scale!r} is not a finite float32 >= 0.")
    (code_dtype, n), = _shape(entries, 1)
    if code_dtype != ("i8" if bits == 8 else "i4") or n != dim:
        raise DecodeError(f"an {kind} tensor of dim {dim} lists {code_dtype!r}[{n}] codes.")
    expected = dim if bits == 8 else (dim + 1) // 2
    if frames[0].nbytes != expected:
        raise DecodeError(f"{dim} {kind} codes arrived in a frame of {frames[0].nbytes} bytes.")
    if bits == 8:
        codes = np.frombuffer(frames[0], dtype=np.int8)
        if bool(np.any(codes == -128)):
            raise DecodeError("an int8 code is -128, outside [-127, 127].")
    else:
        raw = np.frombuffer(frames[0], dtype=np.uint8)
        nibbles = np.empty(2 * len(raw), dtype=np.uint8)
        nibbles[0::2] = raw & np.uint8(0x0F)
        nibbles[1::2] = raw >> np.uint8(4)
        if bool(np.any(nibbles == 8)):
            raise DecodeError("an int4 code is -8, outside [-7, 7].")
        if dim % 2 and nibbles[-1] != 0:
            raise DecodeError("the padding nibble of an odd-length int4 tensor is not zero.")
        codes = ((nibbles[:dim].astype(np.int8) ^ np.int8(8)) - np.int8(8)).astype(np.int8)
    codes.setflags(write=False)
    wide = codes.astype(np.int64)
    sum_sq = scale * scale * float(np.dot(wide, wide))
    return Quantized(dim, bits, scale, codes, reset), sum_sq
