"""The idx file format (as MNIST ships) - read and write, with strict checks.

Layout: 2 zero bytes, a type code (0x08 = uint8), the number of dims, then each
dim as a big-endian int32, then the data in C order.
"""

from __future__ import annotations

import struct

import numpy as np

UINT8 = 0x08


class IdxError(ValueError):
    """A byte string is not a well-formed uint8 idx file."""


def to_idx(array: np.ndarray) -> bytes:
    """uint8 array (any number of dims) -> idx bytes."""
    if array.dtype != np.uint8:
        raise ValueError(f"idx writer takes uint8 arrays (got {array.dtype})")
    header = struct.pack(">BBBB", 0, 0, UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def from_idx(data: bytes, name: str = "idx data") -> np.ndarray:
    """idx bytes -> uint8 array; IdxError naming `name` if the bytes do not fit the header."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: not an idx file (bad magic number {data[:4].hex() or 'empty'})")
    if data[2] != UINT8:
        raise IdxError(f"{name}: idx type code 0x{data[2]:02x} is not uint8 (0x08)")
    ndim = data[3]
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise IdxError(f"{name}: idx header is truncated or has {ndim} dims")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise IdxError(f"{name}: header says shape {shape} ({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
