"""From a person's image file to the model's input, as its training images were made.

A model of pictures - trained on images with a channel axis (H, W, C), as fetch.dataset
folder makes them - gets each image as fetch read its training images (sources/images.py).

A model of digits - trained on (H, W) grey images like MNIST - gets each image turned into an
input like its training digits, the way MNIST itself was made: uneven lighting removed (the
ink is measured against a smooth surface fitted to the paper, see paper_surface); inverted
when the ink is darker than the paper; cropped to the ink (the pixels that stand out from the
paper's noise, see ink_and_box); scaled and placed as the training digits' ink is (the model's
"ink", measured by train: nn.data.ink_frame).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from harness.errors import StageError
from nn.data import INK
from sources.images import read_pixels, resize

# A pixel is ink when it stands out by INK (nn/data.py, which measures the training images' ink
# alike) of the strongest ink...
NOISE = 5.0  # ... and by this many standard deviations of the paper's noise...
EMPTY = 16  # ... and the strongest ink stands out by at least this many grey levels


def _quadratic_terms(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The terms 1, x, y, x^2, xy, y^2 at the pixels (ys, xs), coordinates scaled to -1..1: (n, 6)."""
    y = ys / max(shape[0] - 1, 1) * 2 - 1
    x = xs / max(shape[1] - 1, 1) * 2 - 1
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def paper_surface(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """The paper's brightness under uneven lighting, and the standard deviation of its noise.

    A quadratic surface (a constant below 16 px) is fitted by least squares to a grid of about
    200x200 samples: first to the samples on the image's border (almost always paper), starting
    from their median, then to every sample close to that surface - never the ink, however much
    of it there is. Each fit is repeated without the samples more than 3 noise deviations off
    it. Returns (surface float32 (H, W), sigma).
    """
    h, w = gray.shape
    step = max(1, max(h, w) // 200)
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    ys, xs = ys.ravel(), xs.ravel()
    samples = gray[ys, xs].astype(np.float64)
    terms = _quadratic_terms(ys, xs, gray.shape)
    if min(h, w) < 16:  # too small to have lighting, or to pin a surface down: a constant
        terms[:, 1:] = 0
    margin = max(1, min(h, w) // 20)
    keep = border = (ys < margin) | (ys >= h - margin) | (xs < margin) | (xs >= w - margin)
    resid = samples - np.median(samples[border])
    for region in (border, np.ones_like(border)):
        for _ in range(3):
            sigma = 1.4826 * float(np.median(np.abs(resid[keep])))  # robust: outliers do not inflate it
            keep = region & (np.abs(resid) <= 3 * max(sigma, 0.5))
            coef = np.linalg.lstsq(terms[keep], samples[keep], rcond=None)[0]
            resid = samples - terms @ coef
    sigma = 1.4826 * float(np.median(np.abs(resid[keep])))
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None] if h > 1 else np.full((1, 1), -1, np.float32)
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :] if w > 1 else np.full((1, 1), -1, np.float32)
    c = coef.astype(np.float32)
    surface = c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y
    return surface, sigma


def _box3(a: np.ndarray) -> np.ndarray:
    """The mean over each pixel's 3x3 neighbourhood (edges repeated)."""
    p = np.pad(a, 1, mode="edge")
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / np.float32(9)


def ink_and_box(gray: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Grey levels -> (ink: float32, bright on 0, the paper's grain removed; the ink's bounding
    box), or None when nothing stands out from the paper.

    The ink is the side of the paper surface with the larger excursion (dark ink on light paper
    is inverted), measured as a fraction of the paper's brightness so that the ink in a shadow
    is as strong as the ink in the light. A pixel counts as ink when it stands out by more than
    INK of the strongest ink and NOISE noise deviations, and its 3x3 neighbourhood agrees (a lone
    noisy pixel does not).
    """
    surface, sigma = paper_surface(gray)
    diff = gray - surface
    smooth = _box3(diff)
    if -smooth.min() > smooth.max():  # dark ink on light paper -> light ink on black, as in MNIST
        paper, diff, smooth = surface, -diff, -smooth
    else:
        paper = 255 - surface
    gain = np.float32(255) / np.clip(paper, 8, None)  # ink relative to its paper: the lighting cancels
    ink, smooth, noise = diff * gain, smooth * gain, np.float32(sigma) * gain
    peak = float(ink.max())
    threshold = np.maximum(np.float32(INK * peak), NOISE * noise)
    mask = (ink > threshold) & (smooth > threshold / 3)
    if peak < EMPTY or not mask.any():
        return None
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return np.clip(ink - 3 * noise, 0, None), box


def to_frame(ink: np.ndarray, size: tuple[int, int], frame: dict | None = None) -> np.ndarray:
    """Cropped ink -> uint8 `size`, framed as the training digits are (`frame`: nn.data.ink_frame;
    without it MNIST's way): the longer side scaled to frame["extent"] pixels (MNIST: 20 of 28),
    the centre of mass put at frame["centre"] (MNIST: the frame's middle) - but never pushed out
    of the frame."""
    height, width = size
    frame = frame or {"extent": max(1, round(min(height, width) * 20 / 28)), "centre": [height / 2, width / 2]}
    scale = min(frame["extent"], height, width) / max(ink.shape)
    new = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    small = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(new, Image.Resampling.LANCZOS))
    small = np.clip(small, 0, None)
    if small.max() <= 0:  # a sliver of ink vanished in the scaling: keep it as one pixel
        small = np.ones((1, 1), np.float32)
    com = np.array([(np.arange(small.shape[i]) * small.sum(axis=1 - i)).sum() for i in (0, 1)]) / small.sum()
    top, left = np.round(np.array(frame["centre"]) - com).astype(int)
    top, left = min(max(top, 0), height - small.shape[0]), min(max(left, 0), width - small.shape[1])
    out = np.zeros((height, width), np.float32)
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.round(255 * out / out.max()).astype(np.uint8)


def to_input(path: Path, shape: tuple[int, ...], frame: dict | None = None) -> np.ndarray:
    """An image file -> uint8 in the model's input format: (H, W) a digit (ink bright on black)
    framed as `frame` says (see to_frame), or (H, W, C) the picture as fetch reads it (C = 1 grey,
    3 RGB)."""
    if len(shape) == 3:
        return resize(read_pixels(path, rgb=shape[2] == 3), shape[:2]).reshape(shape)
    size = shape
    found = ink_and_box(read_pixels(path))
    if found is None:
        raise StageError(f"{path}: the image is empty (no ink found); the digit must stand out from its paper")
    ink, box = found
    return to_frame(ink[box], size, frame)
