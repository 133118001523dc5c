"""Reading a person's image file as grey levels, whatever its format.

The size in the header is checked against MAX_PIXELS before anything is decoded;
a multi-frame file (GIF, TIFF, APNG) gives its first frame; EXIF orientation is
applied (phone photos); 16-bit, 32-bit and float pixels are scaled to 0..255;
transparent pixels are filled with the background the picture implies (black
strokes on a transparent canvas, as drawing apps export, land on white paper);
colour becomes grey; an image larger than WORK_SIDE is shrunk while it is read.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.common import StageError

MAX_PIXELS = 80_000_000  # refused from the header, before decoding: a 64-MP phone photo still fits
WORK_SIDE = 1600  # a larger image is shrunk to this longer side while it is read; a digit needs far less
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError)  # what Pillow raises


@contextlib.contextmanager
def _pillow_size_check_off():
    """Pillow's own bomb check off while a header is read: open_image's is stricter and says the size."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_image(path: Path, data: bytes | None = None) -> Image.Image:
    """`path` opened lazily (header only), or a StageError when it cannot be read or is too large.
    With `data`, those bytes (already read from `path`) are decoded; `path` only names them."""
    try:
        with _pillow_size_check_off():
            img = Image.open(path if data is None else io.BytesIO(data))
    except FileNotFoundError:
        raise StageError(f"{path}: no such file; check the path") from None
    except DECODE_ERRORS as exc:
        raise StageError(f"{path}: not an image that can be read ({exc}); save it as PNG or JPEG") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise StageError(f"{path}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is over the limit "
                         f"of {MAX_PIXELS // 10 ** 6} MP; scale it down")
    return img


def read_gray(path: Path, data: bytes | None = None) -> np.ndarray:
    """An image file (or its bytes `data`) -> float32 (H, W) grey levels 0..255, at most
    WORK_SIDE on its longer side."""
    with open_image(path, data) as img:
        try:
            shrink = math.ceil(max(img.size) / WORK_SIDE)
            if shrink > 1:  # JPEG: decode at 1/2, 1/4 or 1/8 of the size straight away
                img.draft(None, (img.width // shrink, img.height // shrink))
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                ImageOps.exif_transpose(img, in_place=True)
                mode, plain = img.mode, _plain(img)  # decodes the first frame
            img.close()  # frees the decoded original before the shrinking
            return _gray_levels(_fit(plain), sixteen_bit=mode.startswith("I;16"))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise StageError(f"{path}: over Pillow's size limit ({exc}); scale it down") from None
        except MemoryError:
            raise StageError(f"{path}: not enough memory to decode {img.width}x{img.height} pixels; "
                             "scale it down") from None
        except DECODE_ERRORS as exc:
            raise StageError(f"{path}: not an image that can be read ({exc}); save it as PNG or JPEG") from None


def _plain(img: Image.Image) -> Image.Image:
    """Any mode -> one of the few handled below: I (16- and 32-bit integers), F (floats), LA (grey
    with transparency: RGBA, PA, palette or colour key with a transparent entry) or L (the rest)."""
    if img.mode == "F":
        return img.convert("F")
    if img.mode.startswith("I"):
        return img.convert("I")
    return img.convert("LA" if img.has_transparency_data else "L")


def _fit(img: Image.Image) -> Image.Image:
    """`img` shrunk by a whole factor (block averages) until its longer side is at most WORK_SIDE."""
    shrink = math.ceil(max(img.size) / WORK_SIDE)
    return img.reduce(shrink) if shrink > 1 else img


def _gray_levels(img: Image.Image, sixteen_bit: bool) -> np.ndarray:
    """An L, LA, I or F image -> float32 grey levels 0..255, transparency filled in."""
    values = np.asarray(img, dtype=np.float32)
    if img.mode == "LA":
        return _fill_transparent(values[..., 0], values[..., 1] / 255)
    if img.mode == "L":
        return values
    return _to_8bit_range(np.nan_to_num(values, posinf=0, neginf=0), sixteen_bit)


def _to_8bit_range(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """Wide grey levels -> 0..255. Full scale is 65535 for 16-bit files; otherwise the smallest of
    1 (floats 0..1, 0/1 masks), 255 and 65535 that holds the brightest pixel, or that pixel."""
    peak = float(values.max(initial=0))
    full = 65535.0 if sixteen_bit else next((f for f in (1.0, 255.0, 65535.0) if peak <= f), peak)
    return np.clip(values, 0, full) * np.float32(255 / full)


def _fill_transparent(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Grey + alpha (0..1) -> grey on the background the picture implies: a mostly opaque picture
    is filled with its own median; strokes on a mostly transparent canvas get paper of the
    opposite brightness (dark strokes -> white, light strokes -> black)."""
    if alpha.mean() >= 0.5:
        background = float(np.median(gray[alpha >= 0.5]))
    else:
        stroke = float((gray * alpha).sum() / max(float(alpha.sum()), 1e-6))
        background = 255.0 if stroke < 128 else 0.0
    return gray * alpha + np.float32(background) * (1 - alpha)
