"""predict: classify your own images with the trained model (not a DVC stage).

    python -m predict digit.png [more.jpg ...] [--json] [--top N] [--model models/model.npz]

Any image Pillow reads is taken (sources/images.py: 8/16-bit, float, colour, palette,
transparent, animated, EXIF-rotated; huge ones refused unread) as the model's inputs are:

A model of pictures - trained on images with a channel axis (H, W, C), as fetch.dataset
folder makes them - gets each image exactly as fetch read its training images: grey (C = 1)
or RGB (C = 3) levels, resized to H x W.

A model of digits - trained on (H, W) grey images like MNIST - gets each image turned into
an input like its training digits, the way MNIST itself was made:
uneven lighting removed (the ink is measured against a smooth surface fitted to the paper,
see paper_surface); inverted when the ink is darker than the paper; cropped to the ink (the
pixels that stand out from the paper's noise, see ink_and_box); scaled and placed as the
training digits' ink is (the model's "ink", measured by train: for MNIST the longer side
20 px and the centre of mass in the middle of 28x28; for scikit-learn's 8x8 digits the whole
frame's height). Prints the top 3 classes (--top N: N of them).

A file that cannot be used gets its own line `error: <file>: <reason>` on stderr; the other
files are still predicted and printed, and the exit status is 1. With --json, such a file's
entry is {"image": <file>, "error": <reason>} in place of {"image": <file>, "top": [...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from harness.command import Parser, run
from harness.errors import StageError, one_line
from harness.files import MODEL
from nn import serialize
from predict.digits import to_input


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {text!r})")
    return n


def classify(paths: list[Path], model, top: int) -> list[dict]:
    """One result per path, in order: {"image", "top": [{"class", "probability"}] * top} or, for a
    file that cannot be used, {"image", "error"} - each such error also printed on stderr."""
    results, inputs = [], []
    for path in paths:
        try:
            inputs.append(to_input(path, model.input_shape, model.spec.get("ink")))
            results.append({"image": str(path)})
        except StageError as exc:
            print(f"error: {one_line(str(exc))}", file=sys.stderr)
            results.append({"image": str(path), "error": str(exc).removeprefix(f"{path}: ")})
    good = [r for r in results if "error" not in r]
    if good:
        probs = model.predict_proba(np.stack(inputs))
        classes = model.classes or [str(i) for i in range(probs.shape[1])]
        for r, p in zip(good, probs):
            order = np.argsort(-p, kind="stable")[:top]  # top beyond the class count: all of them
            r["top"] = [{"class": classes[i], "probability": round(float(p[i]), 6)} for i in order]
    return results


def parser() -> Parser:
    """predict's command line."""
    ap = Parser(prog="python -m predict", description=__doc__.strip(),
                epilog=f"The model is the pipeline's: run `dvc repro` first to make {MODEL}.")
    ap.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                    help="image files: PNG, JPEG, GIF, TIFF, BMP, WebP, ...")
    ap.add_argument("--model", type=Path, default=MODEL, metavar="FILE", help=f"the model file (default {MODEL})")
    ap.add_argument("--json", action="store_true", help="print JSON for scripts")
    ap.add_argument("--top", type=_count, default=3, metavar="N",
                    help="how many classes to show (default 3; at most all of them)")
    return ap


def main(argv=None) -> None:
    """The command, from its arguments (default sys.argv[1:])."""
    predict(parser().parse_args(argv))


def predict(args: argparse.Namespace) -> None:
    model = serialize.load(args.model)
    shape = tuple(model.input_shape)
    if not (len(shape) == 2 or len(shape) == 3 and shape[2] in (1, 3)):
        raise StageError(f"{args.model}: expects inputs of shape {shape}; predict reads images as (H, W) digits, "
                         "(H, W, 1) grey or (H, W, 3) RGB pictures")
    results = classify(args.images, model, args.top)
    good = [r for r in results if "error" not in r]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in good:
            print(f"{r['image']}: " + ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"]))
    sys.stdout.flush()
    if len(good) < len(results):
        sys.exit(1)


if __name__ == "__main__":
    run(predict, parser=parser())
