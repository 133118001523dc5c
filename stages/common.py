"""Helpers shared by the stage scripts: running a stage, paths, small file formats."""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nn.atomic import all_or_none, write_text
from stages import outputs, pins

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


STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """Linux: stop (SIGTERM) when the parent process - dvc repro - dies, rather than
    train on unseen; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def describe_os_error(exc: OSError) -> str:
    """An OSError as '<file>: <reason>; <what to do>'."""
    reason = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some disk space and rerun", errno.EDQUOT: "free some disk space and rerun",
            errno.EACCES: "check the file's permissions", errno.EPERM: "check the file's permissions",
            errno.EROFS: "the file system is read-only; run from a writable copy"}.get(exc.errno, "")
    where = exc.filename if exc.filename is not None else "a file"
    return f"{where}: {reason}" + (f"; {hint}" if hint else "")


def run(main: Callable[[], None], memory_hint: str = "") -> None:
    """Run a stage's main(): log to stderr; expected errors -> one line, exit 1.

    Expected errors are StageError, ValueError (bad params, bad files: the nn
    loaders raise it), OSError (a disk or permission problem: the line names the
    file) and MemoryError (`memory_hint` says which params to lower). Anything else
    is a bug and keeps its traceback. SIGINT, SIGTERM and SIGHUP stop the stage
    cleanly. Every output is written all-or-none (nn.atomic.all_or_none); under
    `dvc repro`, which deletes the outputs before the run, a failed run puts the
    previous ones back (stages/outputs.py).
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    log.info("bits: %s", pins.describe())
    stage = os.environ.get("DVC_STAGE", "")  # set by dvc for the command of the stage it runs
    for signum in STOPS:
        signal.signal(signum, _stop)
    if stage:
        _die_with_parent()
    try:
        with all_or_none():
            main()
    except BaseException as exc:
        for signum in STOPS:  # a second Ctrl-C or kill must not cut the clean-up short
            signal.signal(signum, signal.SIG_IGN)
        if stage:
            outputs.restore(stage, log)
        if not isinstance(exc, (StageError, ValueError, OSError, MemoryError, KeyboardInterrupt)):
            raise
        if isinstance(exc, KeyboardInterrupt):
            message, status = f"interrupted ({exc.args[0] if exc.args else 'SIGINT'}); no output was changed", 130
        elif isinstance(exc, MemoryError):
            message, status = "out of memory" + (f"; {memory_hint}" if memory_hint else ""), 1
        elif isinstance(exc, OSError):
            message, status = describe_os_error(exc), 1
        else:
            message, status = str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 1
        print(f"error: {message}", file=sys.stderr)
        sys.exit(status)
    if stage:
        outputs.keep(stage)


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
    """A prepared split -> (x uint8 (N, H, W), y uint8 (N,), class names), checked against
    what prepare writes: anything else is one StageError naming the file."""
    split = read_npz(path, ("x", "y", "classes"), "prepare")
    x, y, classes = split["x"], split["y"], split["classes"]

    def bad(what: str) -> StageError:
        return StageError(f"{path}: {what}; rerun the prepare stage (dvc repro)")

    if classes.ndim != 1 or classes.dtype.kind != "U" or len(classes) < 2 or len(set(classes)) != len(classes):
        raise bad(f"'classes' must be two or more distinct names (got {classes.dtype} {classes.shape})")
    if x.dtype != np.uint8 or x.ndim != 3 or 0 in x.shape[1:]:
        raise bad(f"'x' must be uint8 images (N, H, W), not {x.dtype} {x.shape}")
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
