"""IDX files (the MNIST family's format, optionally gzipped), read whole or only some rows.

A daemon needs only its own shard of the training images, so `IdxFile.take` streams the file
from the start in chunks of about a megabyte, copies the requested rows and stops after the last
one: peak memory is those rows plus one chunk, not the whole split. A gzipped file cannot be
indexed, so it is decompressed as it is read (about 0.2 s for Fashion-MNIST's 47 MB of train
images); a plain file is read only where requested rows lie. Both beat `numpy.memmap` on an
uncompressed copy for peak RSS: a memmap counts every touched page (and the kernel's fault-around
neighbours) in each process's RSS, and it would need a cache written to disk first.

Errors: `DataError`, one sentence naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from node.errors import DataError

__all__ = ["IdxFile", "read_idx"]

# IDX type byte → big-endian numpy dtype (the IDX format stores every number big-endian).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CHUNK_BYTES = 1 << 20
# What a damaged file raises while it is read: gzip's BadGzipFile is an OSError, a file cut
# short an EOFError, corrupt deflate data a zlib.error.
_READ_ERRORS = (OSError, EOFError, zlib.error)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz), checking the header against its size."""
    return IdxFile(path).read()


class IdxFile:
    """One IDX file whose header has been read and checked against the file's size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._reading() as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES:
                raise DataError(f"{path} is not an IDX file (bad magic number {magic.hex()})")
            dims = f.read(4 * magic[3])
        self.dtype = np.dtype(_IDX_DTYPES[magic[2]])
        self.offset = 4 + 4 * magic[3]
        self.shape = tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4))
        expected = self.offset + math.prod(self.shape) * self.dtype.itemsize
        size = self._size(expected) if len(dims) == 4 * magic[3] else len(magic) + len(dims)
        if len(dims) != 4 * magic[3] or size != expected:
            raise DataError(f"{path} is truncated or padded: header says {self.shape}, "
                            f"size is {size}")

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    def _open(self) -> io.BufferedIOBase:
        return gzip.open(self.path, "rb") if self.path.suffix == ".gz" else self.path.open("rb")

    def _size(self, expected: int) -> int:
        """The file's size once decompressed. A gzip member's trailer holds it modulo 2³², so
        only when that disagrees (or the file has several members) is the file read through."""
        try:
            if self.path.suffix != ".gz":
                return self.path.stat().st_size
            with self.path.open("rb") as raw:
                raw.seek(-4, 2)
                if int.from_bytes(raw.read(4), "little") == expected % 2**32:
                    return expected
            size = 0
            with self._open() as f:
                while chunk := f.read(_CHUNK_BYTES):
                    size += len(chunk)
            return size
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read IDX file {self.path}: {exc}") from exc

    def read(self) -> np.ndarray:
        """Every row, decompressed straight into one array (no second copy of the file)."""
        out = np.empty(self.shape, self.dtype)
        with self._reading() as f:
            f.seek(self.offset)
            self._fill(f, out.reshape(-1).view(np.uint8))
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (ascending, distinct, within the file), in that order, reading the
        file only up to the last of them."""
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        for at, block in self.blocks(rows):
            out[at : at + len(block)] = block
        return out

    def blocks(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """`take` in pieces of about a megabyte: (position in `rows`, those rows' values), so
        that a caller converting the rows never holds more than one piece unconverted."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self) or np.any(np.diff(rows) <= 0)):
            raise ValueError(f"rows of {self.path} must be ascending, distinct and below "
                             f"{len(self)}")
        if not len(rows):
            return
        per_chunk = max(1, _CHUNK_BYTES // self.row_bytes)
        buffer = np.empty((per_chunk, self.row_bytes), np.uint8)
        done = 0
        with self._reading() as f:
            while done < len(rows):
                # The next chunk starts at the first row still wanted: a plain file skips what
                # lies between, a gzipped one decompresses through it (seek reads forward).
                start = int(rows[done])
                count = min(per_chunk, len(self) - start)
                f.seek(self.offset + start * self.row_bytes)
                self._fill(f, buffer[:count].reshape(-1))
                end = done + int(np.searchsorted(rows[done:], start + count))
                wanted = buffer[rows[done:end] - start]
                yield done, wanted.view(self.dtype).reshape(end - done, *self.row_shape)
                done = end

    @contextlib.contextmanager
    def _reading(self) -> Iterator[io.BufferedIOBase]:
        """The open file, its read errors turned into one sentence naming it."""
        try:
            with self._open() as f:
                yield f
        except _READ_ERRORS as exc:
            raise DataError(f"cannot read IDX file {self.path}: {exc}") from exc

    def _fill(self, f: io.BufferedIOBase, target: np.ndarray) -> None:
        view, filled = target.data, 0  # target is one contiguous run of bytes
        while filled < len(view):
            got = f.readinto(view[filled:])
            if not got:
                raise DataError(f"{self.path} ended early; it is truncated")
            filled += got
