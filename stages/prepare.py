"""prepare: parse the idx files, split train/val (stratified, seeded), write uint8 npz.

data/raw/ -> data/prepared/{train,val,test}.npz, each with x uint8 (N, H, W) or
(N, H, W, C), y uint8 (N,) and the class names.
"""

from __future__ import annotations

import logging

import numpy as np

import params
from harness.command import run
from harness.errors import StageError
from harness.files import DATA_PREPARED, DATA_RAW, read_json
from nn.atomic import write_npz
from nn.data import MAX_IDX_BYTES, IdxError, from_idx, images_problem

log = logging.getLogger(__name__)


def read_idx(path) -> np.ndarray:
    """One idx file of data/raw, refused from its size before it is read when over the cap."""
    try:
        size = path.stat().st_size
        if size > MAX_IDX_BYTES:
            raise StageError(f"{path}: {size} bytes, over the {MAX_IDX_BYTES >> 30} GiB cap for one idx file; "
                             "rerun the fetch stage (dvc repro)")
        return from_idx(path.read_bytes(), str(path))
    except IdxError as exc:
        raise StageError(f"{exc}; rerun the fetch stage (dvc repro)") from None
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the fetch stage first (dvc repro)") from None


def read_classes(path) -> np.ndarray:
    """The class names of data/raw/dataset.json: two or more distinct, non-empty strings."""
    meta = read_json(path)
    classes = meta.get("classes") if isinstance(meta, dict) else None
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)):
        raise StageError(f"{path}: 'classes' must be a list of two or more distinct names; "
                         "rerun the fetch stage (dvc repro)")
    return np.array(classes)


def read_pair(raw, images: str, labels: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Two idx files -> (x (N, H, W[, C]), y (N,)), checked against each other."""
    x, y = read_idx(raw / images), read_idx(raw / labels)
    if problem := images_problem(x.shape):
        raise StageError(f"{raw / images}: {problem}; rerun the fetch stage (dvc repro)")
    if y.ndim != 1:
        raise StageError(f"{raw / labels}: expected labels (N,), got shape {y.shape}; "
                         "rerun the fetch stage (dvc repro)")
    if 0 in x.shape:
        raise StageError(f"{raw / images}: holds no images (shape {x.shape}); rerun the fetch stage (dvc repro)")
    if len(x) != len(y):
        raise StageError(f"{raw / labels}: {len(y)} labels for {len(x)} images in {raw / images}; "
                         "rerun the fetch stage (dvc repro)")
    if len(y) and y.max() >= n_classes:
        raise StageError(f"{raw / labels}: label {int(y.max())} is out of range for {n_classes} classes; "
                         "rerun the fetch stage (dvc repro)")
    return x, y


def split(x, y, val_size, seed: int, classes: list[str]):
    """Stratified train/val split; val_size is a count or a fraction."""
    n = len(y)
    count = val_size if isinstance(val_size, int) else round(val_size * n)
    names, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        lone = str(classes[names[counts.argmin()]])  # a plain str: no np.str_('c') in the message
        raise StageError(f"{DATA_RAW}: class '{lone}' has 1 training image; a stratified "
                         "train/val split needs at least 2 of each class")
    k = len(names)  # a stratified split puts each class on both sides
    if not k <= count <= n - k:
        raise StageError(f"params.yaml: prepare.val_size gives {count} validation sample{'s' * (count != 1)}; a "
                         f"stratified split of the {n} training samples of {k} classes needs between {k} and {n - k} "
                         "(one of each class on both sides)")
    from sklearn.model_selection import train_test_split  # where used: 1.7 s to import (stages/evaluate.py)

    try:
        return train_test_split(x, y, test_size=count, random_state=seed, stratify=y)
    except ValueError as exc:  # e.g. fewer val samples than classes
        raise StageError(f"params.yaml: prepare.val_size {val_size} cannot be stratified ({exc})") from None


def main() -> None:
    p = params.load("prepare")["prepare"]
    classes = read_classes(DATA_RAW / "dataset.json")
    x, y = read_pair(DATA_RAW, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", len(classes))
    x_test, y_test = read_pair(DATA_RAW, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", len(classes))
    if x.shape[1:] != x_test.shape[1:]:
        raise StageError(f"{DATA_RAW}: train images are {x.shape[1:]} but test images are {x_test.shape[1:]}")
    x_train, x_val, y_train, y_val = split(x, y, p["val_size"], p["seed"], classes)
    for name, (xs, ys) in {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}.items():
        path = DATA_PREPARED / f"{name}.npz"
        write_npz(path, {"x": xs, "y": ys, "classes": classes})
        log.info("wrote the %s split: %d images of %s to %s", name, len(ys), "x".join(map(str, xs.shape[1:])), path)


if __name__ == "__main__":
    run(main)
