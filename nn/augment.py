"""Light data augmentation on host uint8 images."""

from __future__ import annotations

import numpy as np


def random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by (dy, dx), both drawn uniformly from [-max_shift, max_shift],
    filling the uncovered border with 0.   x: (N, H, W) -> new (N, H, W) array.

    Vectorised per shift value: (2s+1)^2 block copies, not N small ones.
    """
    if max_shift == 0:
        return x
    n = len(x)
    dy = rng.integers(-max_shift, max_shift + 1, n)
    dx = rng.integers(-max_shift, max_shift + 1, n)
    out = np.zeros_like(x)
    for a in range(-max_shift, max_shift + 1):
        for b in range(-max_shift, max_shift + 1):
            idx = np.flatnonzero((dy == a) & (dx == b))
            if idx.size:
                out[idx, max(a, 0):x.shape[1] + min(a, 0), max(b, 0):x.shape[2] + min(b, 0)] = \
                    x[idx, max(-a, 0):x.shape[1] + min(-a, 0), max(-b, 0):x.shape[2] + min(-b, 0)]
    return out
