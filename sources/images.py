"""Reading a person's image file as grey levels or RGB, whatever its format.

The size in the header is checked against MAX_PIXELS before anything is decoded;
a multi-frame file (GIF, TIFF, APNG) gives its first frame; EXIF orientation is
applied (phone photos); 16-bit, 32-bit and float pixels are scaled to 0..255;
transparent pixels are filled with the background the picture implies (black
strokes on a transparent canvas, as drawing apps export, land on white paper);
colour becomes grey (or grey becomes RGB, each channel the same); an image larger
than WORK_SIDE is shrunk while it is read. `resize` brings pixels to a stated size.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from harness.errors import StageError

MAX_PIXELS = 80_000_000  # refused from the header, before decoding: a 64-MP phone photo still fits
WORK_SIDE = 1600  # a larger image is shrunk to this longer side while it is read; a digit needs far less
# What Pillow raises for a damaged or hostile file - TypeError too (found by fuzzing: a TIFF whose
# strip offset is a fraction fails in ImageFile.load with "'IFDRational' object cannot be
# interpreted as an integer"), and struct.error from its plugins' header parsing
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError, TypeError, struct.error)


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
    except IsADirectoryError:
        raise StageError(f"{path}: a folder; pass the image files in it (e.g. {path}/*.png)") from None
    except UnidentifiedImageError:  # its message names Pillow's buffer, not the file
        raise StageError(f"{path}: not an image that can be read (an unknown or damaged format); "
                         "save it as PNG or JPEG") from None
    except DECODE_ERRORS as exc:
        raise StageError(f"{path}: not an image that can be read ({exc}); save it as PNG or JPEG") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise StageError(f"{path}: {width}x{height} pixels ({width * height / 1e6:.0f} MP) is over the limit "
                         f"of {MAX_PIXELS // 10 ** 6} MP; scale it down")
    return img


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened image as read_pixels turns it (EXIF orientation), before any
    shrinking: from the header, nothing decoded (for a PNG, from an eXIf chunk before its pixels:
    Pillow's getexif() would decode a PNG to look for one after them)."""
    width, height = img.size
    if img.format == "PNG":
        exif = Image.Exif()
        if raw := img.info.get("exif"):
            exif.load(raw)
    else:
        exif = img.getexif()
    turned = exif.get(0x0112, 1) in (5, 6, 7, 8)  # transposed or turned a quarter
    return (width, height) if turned else (height, width)


def read_pixels(path: Path, data: bytes | None = None, rgb: bool = False) -> np.ndarray:
    """An image file (or its bytes `data`) -> float32 levels 0..255, at most WORK_SIDE on its
    longer side: (H, W) grey, or with `rgb` (H, W, 3) red, green, blue."""
    with open_image(path, data) as img:
        try:
            shrink = math.ceil(max(img.size) / WORK_SIDE)
            if shrink > 1:  # JPEG: decode at 1/2, 1/4 or 1/8 of the size straight away
                img.draft(None, (img.width // shrink, img.height // shrink))
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                ImageOps.exif_transpose(img, in_place=True)
                mode, plain = img.mode, _plain(img, rgb)  # decodes the first frame
            img.close()  # frees the decoded original before the shrinking
            levels = _levels(_fit(plain), sixteen_bit=mode.startswith("I;16"))
            return np.repeat(levels[..., None], 3, axis=2) if rgb and levels.ndim == 2 else levels
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise StageError(f"{path}: over Pillow's size limit ({exc}); scale it down") from None
        except MemoryError:
            raise StageError(f"{path}: not enough memory to decode {img.width}x{img.height} pixels; "
                             "scale it down") from None
        except DECODE_ERRORS as exc:
            raise StageError(f"{path}: not an image that can be read ({exc}); save it as PNG or JPEG") from None


def _plain(img: Image.Image, rgb: bool = False) -> Image.Image:
    """Any mode -> one of the few handled below: I (16- and 32-bit integers), F (floats), LA (grey
    with transparency: RGBA, PA, palette or colour key with a transparent entry) or L (the rest);
    with `rgb`, RGBA and RGB in place of LA and L (I and F are grey: made RGB after scaling)."""
    if img.mode == "F":
        return img.convert("F")
    if img.mode.startswith("I"):
        return img.convert("I")
    if rgb:
        return img.convert("RGBA" if img.has_transparency_data else "RGB")
    return img.convert("LA" if img.has_transparency_data else "L")


def _fit(img: Image.Image) -> Image.Image:
    """`img` shrunk by a whole factor (block averages) until its longer side is at most WORK_SIDE."""
    shrink = math.ceil(max(img.size) / WORK_SIDE)
    return img.reduce(shrink) if shrink > 1 else img


def _levels(img: Image.Image, sixteen_bit: bool) -> np.ndarray:
    """An L, LA, RGB, RGBA, I or F image -> float32 levels 0..255, (H, W) or (H, W, 3),
    transparency filled in."""
    values = np.asarray(img, dtype=np.float32)
    if img.mode in ("LA", "RGBA"):
        color = values[..., :-1]
        return _fill_transparent(color[..., 0] if img.mode == "LA" else color, values[..., -1] / 255)
    if img.mode in ("L", "RGB"):
        return values
    return _to_8bit_range(np.nan_to_num(values, posinf=0, neginf=0), sixteen_bit)


def _to_8bit_range(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """Wide grey levels -> 0..255. Full scale is 65535 for 16-bit files; otherwise the smallest of
    1 (floats 0..1, 0/1 masks), 255 and 65535 that holds the brightest pixel, or that pixel."""
    peak = float(values.max(initial=0))
    full = 65535.0 if sixteen_bit else next((f for f in (1.0, 255.0, 65535.0) if peak <= f), peak)
    return np.clip(values, 0, full) * np.float32(255 / full)


UNIFORM = 8.0  # levels: opaque pixels all this close to their median are one colour


def _fill_transparent(levels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Grey (H, W) or RGB (H, W, 3) + alpha (H, W, 0..1) -> the same on the background the picture
    implies. Strokes on a transparent canvas, and a cut-out all of one colour (an icon), get paper
    of the opposite brightness (dark -> white, light -> black; for RGB, by the mean of the channels):
    the shape the transparency draws is kept. A mostly opaque picture with anything drawn on it -
    a page with thin ink and transparent rounded corners - is filled with its own median (per
    channel, the page's colour), so that the transparent pixels do not stand out."""
    background = None
    if alpha.mean() >= 0.5:
        opaque = levels[alpha >= 0.5]
        median = np.median(opaque, axis=0).astype(np.float32)
        if np.abs(opaque - median).max() > UNIFORM:  # something drawn on it (even a 1-pixel stroke)
            background = median
    if background is None:
        bright = levels if levels.ndim == 2 else levels.mean(axis=2)
        stroke = float((bright * alpha).sum() / max(float(alpha.sum()), 1e-6))
        background = np.float32(255.0 if stroke < 128 else 0.0)
    if levels.ndim == 3:
        alpha = alpha[..., None]
    return levels * alpha + background * (1 - alpha)


def resize(levels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float levels (H, W) or (H, W, C) -> uint8 of `size` (H', W'), each channel resized
    bilinearly as floats, then rounded."""
    if levels.shape[:2] != tuple(size):
        channels = [levels] if levels.ndim == 2 else [levels[..., c] for c in range(levels.shape[2])]
        small = [np.asarray(Image.fromarray(np.asarray(c, np.float32)).resize(size[::-1], Image.Resampling.BILINEAR))
                 for c in channels]
        levels = small[0] if levels.ndim == 2 else np.stack(small, axis=2)
    return np.clip(np.rint(levels), 0, 255).astype(np.uint8)
