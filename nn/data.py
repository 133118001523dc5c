"""The idx file format (as MNIST ships) - read and write, with strict checks.

Layout: 2 zero bytes, a type code (0x08 = uint8), the number of dims, then each
dim as a big-endian int32, then the data in C order.
"""

from __future__ import annotations

import math
import struct

import numpy as np

UINT8 = 0x08
HEADER_MAX = 4 + 4 * 255  # the longest idx header: 255 dims

# The largest idx file (header + data) this project takes: 1 GiB. MNIST's largest is
# 47 MB, EMNIST's about 700 MB; a file - or a header declaring one - above it is refused
# before its bytes are held (sources/origins.py), as a damaged file or a decompression bomb.
MAX_IDX_BYTES = 2 ** 30


# A stack of images is (N, H, W): grey levels, drawn dark-on-light like MNIST's digits, or
# (N, H, W, C): C channels (1 grey, 3 RGB) of pictures shown as they are. Pixels are uint8.
MAX_CHANNELS = 4


def images_problem(shape) -> str | None:
    """What is wrong with `shape` for a stack of images, or None: (N, H, W) or (N, H, W, C),
    1 <= C <= MAX_CHANNELS, no side 0."""
    shape = tuple(shape)
    if len(shape) not in (3, 4) or 0 in shape[1:]:
        return f"must be images (N, H, W) or (N, H, W, C), not shape {shape}"
    if len(shape) == 4 and shape[3] > MAX_CHANNELS:
        return f"has {shape[3]} channels per pixel (shape {shape}); at most {MAX_CHANNELS} are taken"
    return None


# Where a digit sits in its frame, and how large: MNIST's digits were scaled to a 20x20 box and
# centred by mass in a 28x28 frame (their mass at pixel 14.0), scikit-learn's 8x8 digits fill
# the frame's height (their mass at 3.5). predict frames your image's ink as the training
# images' ink is, measured the same way on both: the bounding box of the pixels brighter than
# INK of the image's brightest, and the centre of mass of the grey levels.
INK = 0.15
INK_SAMPLE = 10_000  # images measured (the first ones): the median of more would not move


def ink_frame(x: np.ndarray) -> dict:
    """Where the ink sits in the median image of a stack of (N, H, W) grey images, ink bright on
    black: {"extent": the longer side of its bounding box in pixels (MNIST 20, digits 8),
    "centre": [row, column] of its centre of mass (MNIST [14.0, 14.0], digits [3.5, 3.5])}."""
    x = x[:INK_SAMPLE]
    ink = x > np.floor(INK * x.max(axis=(1, 2))).astype(x.dtype)[:, None, None]
    sides = []
    for axis in (2, 1):  # rows with ink, then columns with ink
        line = ink.any(axis=axis)
        first, last = line.argmax(axis=1), line.shape[1] - 1 - line[:, ::-1].argmax(axis=1)
        sides.append(np.where(line.any(axis=1), last - first + 1, 0))
    height, width = x.shape[1:]
    lit = x[x.any(axis=(1, 2))]  # blank images have no centre
    centre = [height / 2, width / 2]
    if len(lit):
        mass = lit.sum(axis=(1, 2), dtype=np.float64)
        rows = lit.sum(axis=2, dtype=np.float64) @ np.arange(height) / mass
        cols = lit.sum(axis=1, dtype=np.float64) @ np.arange(width) / mass
        centre = [float(np.median(rows)), float(np.median(cols))]
    return {"extent": max(1, int(np.median(np.maximum(*sides)))), "centre": [round(c, 2) for c in centre]}


class IdxError(ValueError):
    """A byte string is not a well-formed uint8 idx file."""


def to_idx(array: np.ndarray) -> bytes:
    """uint8 array (any number of dims) -> idx bytes."""
    if array.dtype != np.uint8:
        raise ValueError(f"idx writer takes uint8 arrays (got {array.dtype})")
    header = struct.pack(">BBBB", 0, 0, UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def idx_header(data: bytes, name: str = "idx data") -> tuple[tuple[int, ...], int]:
    """The header at the start of `data` -> (shape, its length in bytes); IdxError if none.
    The whole file is that length + math.prod(shape) bytes (Python ints: no wrap-around)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: not an idx file " + (f"(bad magic number {data[:4].hex()})" if data else "(empty)"))
    if data[2] != UINT8:
        raise IdxError(f"{name}: idx type code 0x{data[2]:02x} is not uint8 (0x08)")
    ndim = data[3]
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise IdxError(f"{name}: idx header is truncated or has {ndim} dims")
    return struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim]), 4 + 4 * ndim


def from_idx(data: bytes, name: str = "idx data") -> np.ndarray:
    """idx bytes -> uint8 array; IdxError naming `name` if the bytes do not fit the header."""
    shape, offset = idx_header(data, name)
    expected = offset + math.prod(shape)
    if len(data) != expected:
        raise IdxError(f"{name}: header says shape {shape} ({expected} bytes) but the file has {len(data)} bytes")
    if math.prod(d for d in shape if d) > MAX_IDX_BYTES:  # found by fuzzing: (0, 2**32 - 1, 2**32 - 1) holds
        # no bytes, but NumPy refuses to make its shape ("array is too big"), in words that name no file
        raise IdxError(f"{name}: header says shape {shape}: empty, but with sides no idx file of at most "
                       f"{MAX_IDX_BYTES >> 30} GiB has")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)
