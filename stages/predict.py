"""predict: classify your own images with the trained model (not a DVC stage).

    python -m stages.predict digit.png [more.jpg ...] [--json] [--model models/model.npz]

Each image is turned into an MNIST-style input the way MNIST itself was made:
grayscale; inverted when the background is light; cropped to the ink; the
longer side scaled to 20 px (for 28x28 inputs); placed in the 28x28 frame so
the centre of mass sits at the centre. Prints the top 3 classes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from nn import serialize
from stages.common import MODEL, StageError, run

INK = 0.15  # a pixel is ink when brighter than this fraction of the brightest (after inversion)


def to_input(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image file -> uint8 (H, W) in the model's input format (ink bright on black)."""
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), dtype=np.float64)
    except FileNotFoundError:
        raise StageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise StageError(f"{path}: not an image that can be read ({exc})") from None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = np.median(border)
    if background > 127:  # dark ink on light paper -> light ink on black, as in MNIST
        gray, background = 255 - gray, 255 - background
    ink = np.clip(gray - background, 0, None)
    if ink.max() < 16:  # not one pixel stands out from the background
        raise StageError(f"{path}: the image is empty (no ink found)")
    rows, cols = np.nonzero(ink > INK * ink.max())
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    height, width = size
    box = max(1, round(min(height, width) * 20 / 28))  # MNIST: a 20x20 box in a 28x28 frame
    scale = box / max(ink.shape)
    new = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    small = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(new, Image.LANCZOS))
    small = np.clip(small, 0, None)
    com = np.array([(np.arange(small.shape[i]) * small.sum(axis=1 - i)).sum() for i in (0, 1)]) / small.sum()
    top, left = np.round(np.array([height, width]) / 2 - com).astype(int)
    frame = np.zeros((height + 2 * small.shape[0], width + 2 * small.shape[1]))  # room for any offset
    frame[top + small.shape[0]:top + 2 * small.shape[0], left + small.shape[1]:left + 2 * small.shape[1]] = small
    frame = frame[small.shape[0]:small.shape[0] + height, small.shape[1]:small.shape[1] + width]
    return np.round(255 * frame / frame.max()).astype(np.uint8)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", type=Path, help="PNG / JPEG files")
    ap.add_argument("--model", type=Path, default=MODEL, help=f"the model file (default {MODEL})")
    ap.add_argument("--json", action="store_true", help="print JSON for scripts")
    ap.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    args = ap.parse_args(argv)
    model = serialize.load(args.model)
    if len(model.input_shape) != 2:
        raise StageError(f"{args.model}: expects inputs of shape {model.input_shape}, not 2-D images")
    x = np.stack([to_input(path, model.input_shape) for path in args.images])
    probs = model.predict_proba(x)
    classes = model.classes or [str(i) for i in range(probs.shape[1])]
    results = []
    for path, p in zip(args.images, probs):
        order = np.argsort(-p, kind="stable")[: args.top]
        results.append({"image": str(path),
                        "top": [{"class": classes[i], "probability": round(float(p[i]), 6)} for i in order]})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"]))
    sys.stdout.flush()


if __name__ == "__main__":
    run(main)
