"""The files the stages hand each other: where each lives, and how it is written, read and
checked - a damaged or missing one is one StageError that says which stage to rerun."""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from harness.errors import StageError
from nn.atomic import write_text
from nn.data import images_problem

DATA_RAW = Path("data/raw")
DATA_PREPARED = Path("data/prepared")
MODEL = Path("models/model.npz")
PREDICTIONS = Path("data/predictions/test.npz")
REPORTS = Path("reports")
HISTORY = REPORTS / "train" / "history.json"
TIMING = REPORTS / "train" / "timing.json"  # git-ignored: a timing never repeats
METRICS = REPORTS / "metrics.json"  # the headline numbers `dvc metrics show` prints
SCORES = REPORTS / "scores.json"  # every number evaluate measured, per class too: what plots reads
CONFUSION = REPORTS / "confusion.json"
FIGURES = REPORTS / "figures"
REPORT = REPORTS / "report.md"


def write_json(path: Path, data) -> None:
    """Pretty, key-sorted JSON with a trailing newline, written atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the stage that makes it first (dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: not valid JSON ({exc}); rerun the stage that makes it") from None
    except UnicodeDecodeError as exc:  # found by fuzzing: it was printed without the file's name
        raise StageError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                         "rerun the stage that makes it") from None
    except RecursionError:  # [[[[... nested past Python's limit (found reviewing the fuzz targets)
        raise StageError(f"{path}: nested too deeply to be what a stage writes; rerun the stage that makes it"
                         ) from None


def read_npz(path: Path, keys: tuple[str, ...], stage: str) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz written by `stage`, or one StageError saying what to run."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in keys}
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the {stage} stage first (dvc repro)") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # damaged bytes
        raise StageError(f"{path}: not readable ({exc}); rerun the {stage} stage") from None


def load_split(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A prepared split -> (x uint8 (N, H, W) or (N, H, W, C), y uint8 (N,), class names), checked
    against what prepare writes: anything else is one StageError naming the file."""
    split = read_npz(path, ("x", "y", "classes"), "prepare")
    x, y, classes = split["x"], split["y"], split["classes"]

    def bad(what: str) -> StageError:
        return StageError(f"{path}: {what}; rerun the prepare stage (dvc repro)")

    if classes.ndim != 1 or classes.dtype.kind != "U" or len(classes) < 2 or len(set(classes)) != len(classes):
        raise bad(f"'classes' must be two or more distinct names (got {classes.dtype} {classes.shape})")
    if x.dtype != np.uint8:
        raise bad(f"'x' must be uint8 images (N, H, W) or (N, H, W, C), not {x.dtype} {x.shape}")
    if problem := images_problem(x.shape):
        raise bad(f"'x' {problem}")
    if y.dtype != np.uint8 or y.shape != (len(x),):
        raise bad(f"'y' must be {len(x)} uint8 labels, not {y.dtype} {y.shape}")
    if len(y) == 0:
        raise bad("it holds no images")
    if y.max() >= len(classes):
        raise bad(f"label {int(y.max())} is outside the {len(classes)} classes")
    return x, y, [str(c) for c in classes]


def check_model_fits(model, model_path: Path, x: np.ndarray, classes: list[str], data_path: Path) -> None:
    """The model was trained for these classes and this input shape, or one StageError."""
    if list(model.input_shape) != list(x.shape[1:]):
        raise StageError(f"{model_path}: takes inputs of shape {tuple(model.input_shape)} but {data_path} holds "
                         f"{tuple(x.shape[1:])}; retrain it on this data (dvc repro)")
    if model.output_shape[-1] != len(classes):
        raise StageError(f"{model_path}: predicts {model.output_shape[-1]} classes but {data_path} has "
                         f"{len(classes)}; retrain it on this data (dvc repro)")
    if model.classes is not None and list(model.classes) != classes:
        shown = ", ".join(model.classes[:5]) + (", ..." if len(model.classes) > 5 else "")
        raise StageError(f"{model_path}: trained for the classes {shown} ({len(model.classes)}), not those of "
                         f"{data_path}; retrain it on this data (dvc repro)")
