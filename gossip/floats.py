"""Float tensors on the wire: float32, float16 or bfloat16 bytes and back, with the one-pass
finite-values check (`gossip.codec` for dense tensors, `gossip.packed` for compressed values).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Final, Literal, TypeAlias

import numpy as np

from gossip.errors import DecodeError, EncodeError
from gossip.messages import Tensor

__all__ = ["ITEMSIZE", "MAX_DIM", "WIRE_DTYPES", "WireDtype", "finite_sum_sq",
           "floats_from_wire", "floats_to_wire", "round_to"]

MAX_DIM: Final = 2**31 - 1
WireDtype: TypeAlias = Literal["float32", "float16", "bfloat16"]
WIRE_DTYPES: Final[tuple[WireDtype, ...]] = ("float32", "float16", "bfloat16")
ITEMSIZE: Final[dict[str, int]] = {"float32": 4, "float16": 2, "bfloat16": 2}
_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_F32: Final = np.dtype("<f4")
_F16: Final = np.dtype("<f2")
_U16: Final = np.dtype("<u2")


def floats_to_wire(payload: Tensor, wire_dtype: str) -> memoryview:
    """The little-endian bytes of float32 `payload` in `wire_dtype` (a view for float32)."""
    if not isinstance(payload, np.ndarray) or payload.dtype != np.float32 or payload.ndim != 1:
        raise EncodeError("a tensor payload must be a 1-D float32 numpy array.")
    if len(payload) > MAX_DIM:
        raise EncodeError(f"a tensor of {len(payload)} elements exceeds the protocol limit.")
    # Wire order is little-endian; on the usual little-endian host this is a no-op view.
    x = np.ascontiguousarray(payload, dtype=_F32)
    if wire_dtype == "float32":
        return x.data.cast("B")
    if wire_dtype == "float16":
        with np.errstate(over="ignore"):  # overflow becomes inf, refused just below
            half = x.astype("<f2")
        if not np.isfinite(half).all():
            raise EncodeError("a tensor has values that overflow float16 (|x| > 65504) or NaN.")
        return half.data.cast("B")
    if wire_dtype == "bfloat16":
        return to_bfloat16_bits(x).data.cast("B")
    raise EncodeError(f"unknown wire dtype {wire_dtype!r}; use one of {', '.join(WIRE_DTYPES)}.")


def to_bfloat16_bits(x: Tensor) -> np.ndarray[Any, np.dtype[np.uint16]]:
    """Round float32 to the nearest bfloat16 (ties to even) and return the 16-bit patterns."""
    bits = x.view(np.uint32)
    # Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even, before truncating.
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))
    out = (rounded >> 16).astype("<u2")
    if np.any((out & 0x7F80) == 0x7F80):  # exponent all ones: inf or NaN after rounding
        raise EncodeError("a tensor has values that are NaN or overflow bfloat16.")
    return out


def floats_from_wire(buf: memoryview, dtype: str) -> tuple[Tensor, float]:
    """Read-only float32 values from a frame whose size the caller checked, and their sum of
    squares; DecodeError if any value is not finite."""
    if dtype == "float32":
        x = np.frombuffer(buf, dtype=_F32)
        if not _LITTLE_ENDIAN:
            x = x.astype(np.float32)
    elif dtype == "float16":
        x = np.frombuffer(buf, dtype=_F16).astype(np.float32)
    else:
        widened = np.frombuffer(buf, dtype=_U16).astype(np.uint32)
        widened <<= 16
        x = widened.view(np.float32)
    sum_sq = finite_sum_sq(x)
    if sum_sq is None:
        raise DecodeError("a tensor contains NaN or infinite values.")
    x.setflags(write=False)
    return x, sum_sq


def round_to(x: Tensor, dtype: str) -> Tensor:
    """float32 `x` rounded to the nearest `dtype` value, as float32: what the wire delivers.
    Values that overflow become inf (the encoder then refuses them)."""
    if dtype == "float32":
        return x
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype("<f2").astype(np.float32)
    bits = np.ascontiguousarray(x, dtype=_F32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))
    return (rounded & np.uint32(0xFFFF0000)).view(np.float32)


def finite_sum_sq(x: Tensor) -> float | None:
    """The sum of squares of float32 `x` if every element is finite, else None; exact.

    One pass: `vdot(x, x)` (BLAS sdot, memory speed, no temporary). Every term is a square, so
    an inf element makes the sum +inf (nothing negative can cancel it) and a NaN makes it NaN;
    hence a finite sum proves every element finite. The converse fails only when huge but
    finite values overflow the float32 sum; then the exact element-wise check decides, and the
    sum is redone in float64, where it cannot overflow ((3.4e38)^2 * 2^31 < 1.8e308).

    `vdot` rather than `dot`: for 1-D float32 both run the same sdot, but `dot` goes through
    the matrix-product setup and checks the floating-point flags afterwards, so its overflow
    needs an `np.errstate` around it: a few µs per message that `vdot` does not spend. Should
    a future numpy warn or raise from `vdot` too, that only sends us to the exact path (at
    worst with a warning printed).
    """
    try:
        sum_sq = float(np.vdot(x, x))
    except (FloatingPointError, RuntimeWarning):
        sum_sq = math.inf
    if math.isfinite(sum_sq):
        return sum_sq
    if not np.isfinite(x).all():
        return None
    wide = x.astype(np.float64)
    return float(np.vdot(wide, wide))
