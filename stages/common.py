"""Helpers shared by the stage scripts: running a stage, paths, small file formats."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nn.atomic import write_text
from stages import pins

log = logging.getLogger("stages")

DATA_RAW = Path("data/raw")
DATA_PREPARED = Path("data/prepared")
MODEL = Path("models/model.npz")
PREDICTIONS = Path("data/predictions/test.npz")
REPORTS = Path("reports")
HISTORY = REPORTS / "train" / "history.json"
TIMING = REPORTS / "train" / "timing.json"
METRICS = REPORTS / "metrics.json"
CONFUSION = REPORTS / "confusion.json"
FIGURES = REPORTS / "figures"
REPORT = REPORTS / "report.md"


class StageError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(): log to stderr; expected errors -> one line, exit 1.

    Expected errors are StageError, ValueError (bad params, bad files: the nn
    loaders raise it) and OSError (a disk or permission problem). Anything else
    is a bug and keeps its traceback.
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    log.info("bits: %s", pins.describe())
    try:
        main()
    except (StageError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


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


def read_npz(path: Path, keys: tuple[str, ...], stage: str) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz written by `stage`, or one StageError saying what to run."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in keys}
    except FileNotFoundError:
        raise StageError(f"{path}: not found; run the {stage} stage first (dvc repro)") from None
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise StageError(f"{path}: not readable ({exc}); rerun the {stage} stage") from None


def load_split(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A prepared split -> (x uint8 (N, H, W), y uint8 (N,), class names)."""
    split = read_npz(path, ("x", "y", "classes"), "prepare")
    return split["x"], split["y"], [str(c) for c in split["classes"]]
