"""Light data augmentation: random pixel shifts of uint8 images."""

from __future__ import annotations

import numpy as np


def draw_shifts(n: int, max_shift: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) for n images, each drawn uniformly from [-max_shift, max_shift]."""
    return rng.integers(-max_shift, max_shift + 1, n), rng.integers(-max_shift, max_shift + 1, n)


def shift_images(x: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Shift image i down by dy[i] and right by dx[i] pixels, filling the uncovered
    border with 0.   x: (N, H, W, ...) -> new array of the same shape.

    Vectorised per shift value: (2s+1)^2 block copies, not N small ones. On a GPU
    the same shifts are applied per batch inside `nn.kernels.gather`.
    """
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    for a in np.unique(dy):
        for b in np.unique(dx):
            idx = np.flatnonzero((dy == a) & (dx == b))
            if idx.size:
                out[idx, max(a, 0):h + min(a, 0), max(b, 0):w + min(b, 0)] = \
                    x[idx, max(-a, 0):h + min(-a, 0), max(-b, 0):w + min(-b, 0)]
    return out
