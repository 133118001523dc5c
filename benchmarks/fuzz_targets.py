"""The fuzz targets: every reader of a file a user hands the project, fed arbitrary bytes.

Each target takes bytes and either returns (the reader took them: a valid result) or raises
the reader's expected error - the one `error:` line the command prints. Anything else that
escapes is a crash: a bug. Used by tests/test_fuzz.py (Hypothesis, a bounded number of
examples each) and benchmarks/fuzz.py (a long coverage-guided campaign).

    params      params.yaml: params/yaml_file.py's reader and params/schema.py's validation
    idx         an idx file as data/raw holds it (nn/data.py), and prepare's checks on it
    idx_gz      a gzipped idx file as a folder or a mirror gives it (sources/origins.py)
    model       models/model.npz (nn/serialize.py), and a forward pass of what loads
    image       an image file as predict reads it (predict/digits.py) and as fetch reads one
                of your own data (sources/images.py: header, size, pixels)
    dataset     data/raw/dataset.json (stages/prepare.py) and a source's classes.txt /
                classes.json (sources/idx.py)

SEEDS gives valid examples of each, to start from.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

# the bytes are written to files in here (the readers take paths): $FUZZ_SCRATCH, or a folder
# of this process's own, made when first needed
_SCRATCH: Path | None = None


def _folder() -> Path:
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = Path(os.environ.get("FUZZ_SCRATCH") or tempfile.mkdtemp(prefix="fuzz-"))
        _SCRATCH.mkdir(parents=True, exist_ok=True)
    return _SCRATCH


def _file(name: str, data: bytes) -> Path:
    path = _folder() / name
    path.write_bytes(data)
    return path


def params(data: bytes) -> None:
    from params import SCHEMA, ParamsError, load

    try:
        load(*SCHEMA, path=_file("params.yaml", data))
    except ParamsError:
        pass


def idx(data: bytes) -> None:
    from harness.errors import StageError
    from nn.data import IdxError, from_idx, images_problem

    try:
        array = from_idx(data, "train-images-idx3-ubyte")
    except IdxError:
        return
    images_problem(array.shape)
    try:  # prepare's reading of the same bytes from data/raw, and its labels check
        from stages.prepare import read_idx

        read_idx(_file("train-images-idx3-ubyte", data))
    except StageError:
        pass


def idx_gz(data: bytes) -> None:
    from nn.data import IdxError, from_idx
    from sources.origins import SourceError, gunzip

    try:
        from_idx(gunzip(io.BytesIO(data), "train-images-idx3-ubyte.gz"))
    except (SourceError, IdxError):
        pass


def model(data: bytes) -> None:
    import numpy as np

    from nn import serialize

    try:
        net = serialize.load(_file("model.npz", data))
    except ValueError:
        return
    net.predict_proba(np.zeros((2, *net.input_shape), np.uint8))  # what loads must also run


def image(data: bytes) -> None:
    from harness.errors import StageError
    from predict.digits import to_input
    from sources.images import open_image, read_pixels, upright_size

    path = _file("digit.png", data)
    for shape in ((28, 28), (8, 8, 3)):  # a model of digits, a model of RGB pictures
        try:
            to_input(path, shape)
        except StageError:
            pass
    try:  # fetch.dataset folder: the size from the header, then the pixels from the bytes read once
        with open_image(path, data) as img:
            upright_size(img)
        read_pixels(path, data, rgb=True)
    except StageError:
        pass


def dataset(data: bytes) -> None:
    from harness.errors import StageError
    from sources.idx import parse_class_names
    from stages.prepare import read_classes

    for target in (lambda: read_classes(_file("dataset.json", data)),
                   lambda: parse_class_names("classes.txt", data),
                   lambda: parse_class_names("classes.json", data)):
        try:
            target()
        except StageError:
            pass


TARGETS = {f.__name__: f for f in (params, idx, idx_gz, model, image, dataset)}


# -- valid examples to start from --------------------------------------------------------------
def _model_bytes(kind: str) -> bytes:
    import numpy as np

    from nn import serialize
    from nn.model import Sequential, cnn_spec, mlp_spec

    spec = mlp_spec((8, 8), [6], "relu") if kind == "mlp" else cnn_spec((8, 8, 1), [2], [4], n_classes=3)
    net = Sequential(spec)
    net.init_params(np.random.default_rng(0))
    path = _folder() / f"seed-{kind}.npz"
    serialize.save(net, path)
    return path.read_bytes()


def _images() -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = (rng.random((12, 10)) * 255).astype(np.uint8)
    seeds = []
    for mode, fmt in (("L", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("P", "GIF"), ("I;16", "TIFF"), ("1", "BMP"),
                      ("RGB", "WEBP"), ("LA", "PNG"), ("F", "TIFF")):
        img = Image.fromarray(gray).convert(mode if mode not in ("I;16", "F") else "L")
        if mode in ("I;16", "F"):
            img = Image.fromarray(gray.astype(np.uint16 if mode == "I;16" else np.float32) * 3)
        buf = io.BytesIO()
        img.save(buf, fmt)
        seeds.append(buf.getvalue())
    return seeds


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs of every target (and a few near misses), as the pipeline writes them."""
    import numpy as np

    from nn.data import to_idx

    root = Path(__file__).resolve().parent.parent
    images = to_idx(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))
    labels = to_idx(np.array([0, 1, 2], np.uint8))
    return {
        "params": [(root / "params.yaml").read_bytes(), b"train:\n  lr: 1e-3\n", b"{}"],
        "idx": [images, labels, to_idx(np.zeros((1, 2, 2, 3), np.uint8))],
        "idx_gz": [gzip.compress(images, mtime=0), gzip.compress(labels, mtime=0)],
        "model": [_model_bytes("mlp"), _model_bytes("cnn")],
        "image": _images(),
        "dataset": [json.dumps({"classes": [str(i) for i in range(10)], "name": "digits"}).encode(),
                    b"zero\none\ntwo\n", json.dumps(["a", "b"]).encode()],
    }


def cleanup() -> None:
    """Remove the scratch folder (and what the targets left in it)."""
    global _SCRATCH
    if _SCRATCH is not None:
        shutil.rmtree(_SCRATCH, ignore_errors=True)
        _SCRATCH = None
