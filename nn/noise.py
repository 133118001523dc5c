"""Dropout noise from a counter-based generator: the same bits on the CPU and a GPU.

The noise is NumPy's `Philox` bit generator (Philox4x64-10, Salmon et al. 2011),
read as a stream of 16-bit numbers: number k of stream s is 16-bit part k % 4 of
64-bit word (k // 4) % 4 of the block computed from the counter
(k // 16 + 1, s, 0, 0) under a 128-bit key. Any number can be computed on its
own, so a GPU kernel computes each one where it is needed (nn/kernels.py) and the
CPU draws a batch's numbers with `numpy.random.Philox` - the same bits, with no
per-epoch upload of masks. The key is drawn once per epoch from the run's seeded
`numpy.random.Generator`; s is the dropout layer's index in the model; k counts
the layer's values in epoch order (sample position * units + unit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def draw_key(rng: np.random.Generator) -> np.ndarray:
    """A fresh 128-bit Philox key (2 uint64) from the run's seeded generator."""
    return rng.integers(0, 2 ** 64, size=2, dtype=np.uint64)


def uint16_stream(key, stream: int, start: int, count: int) -> np.ndarray:
    """Numbers start .. start + count - 1 of `stream` under `key`, as uint16 (host)."""
    block, offset = divmod(start, 16)
    blocks = -(-(offset + count) // 16)
    words = np.random.Philox(key=np.asarray(key, dtype=np.uint64), counter=[block, stream, 0, 0])
    return words.random_raw(4 * blocks).astype("<u8", copy=False).view("<u2")[offset:offset + count]


@dataclass
class Noise:
    """Where a training step's dropout bits come from.

    key: (2,) uint64, step: (1,) int32 - arrays of the backend (on the device for
    a GPU, so that a captured step reads the current values); the step's first
    sample is at position step * rows_per_step of the epoch. A shard of the step
    (nn/shards.py) starts `first_row` rows further, so its samples get the bits
    they get in the whole batch.
    """

    key: object
    step: object
    rows_per_step: int
    first_row: int = 0

    @classmethod
    def from_rng(cls, backend, rng: np.random.Generator) -> Noise:
        """One-off noise for a standalone forward pass (a fresh key, position 0)."""
        return cls(backend.to_device(draw_key(rng)), backend.xp.zeros(1, dtype=np.int32), 0)

    def host_bits(self, stream: int, rows: int, units: int) -> np.ndarray:
        """The (rows, units) uint16 numbers of this step's samples (CPU arrays)."""
        start = (int(self.step[0]) * self.rows_per_step + self.first_row) * units
        return uint16_stream(self.key, stream, start, rows * units).reshape(rows, units)
