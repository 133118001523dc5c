"""params.yaml: the schema of every section, and strict validation.

Every key a stage may read is listed here with its rule. `load(sections)` checks
the whole of those sections before any work starts - missing sections or keys,
unknown keys (with a suggestion for typos), wrong types and out-of-range values
all become one `ParamsError` line naming the key. The returned sections record
which keys the stage actually reads (see `ACCESSED`), so a test can prove that
each stage reads exactly the keys dvc.yaml declares for it.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import yaml

PARAMS_FILE = Path("params.yaml")
ACCESSED: set[str] = set()  # "section.key" read by the running stage


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or a value breaks its rule."""


def _int(lo=None, hi=None):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) and (hi is None or v <= hi)
    bounds = "an integer" + (f" >= {lo}" if lo is not None else "") + (f" and <= {hi}" if hi is not None else "")
    return check, f"must be {bounds}"


def _float(lo=None, hi=None, lo_open=False, hi_open=True, text=None):
    def check(v):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return False
        ok_lo = lo is None or (v > lo if lo_open else v >= lo)
        ok_hi = hi is None or (v < hi if hi_open else v <= hi)
        return ok_lo and ok_hi
    return check, text or f"must be a number {'>' if lo_open else '>='} {lo}"


def _choice(*options):
    return (lambda v: v in options), "must be one of " + ", ".join(map(str, options))


def _str():
    return (lambda v: isinstance(v, str) and v != ""), "must be a non-empty string"


def _int_list(min_len=0):
    positive, _ = _int(1)

    def check(v):
        return isinstance(v, list) and len(v) >= min_len and all(map(positive, v))
    return check, "must be a list of positive integers, e.g. [256, 128]"


def _val_size():
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        return v >= 1 if isinstance(v, int) else 0 < v < 1
    return check, "must be a count >= 1 or a fraction in (0, 1)"


SCHEMA: dict[str, dict[str, tuple]] = {
    "fetch": {
        "dataset": _choice("mnist", "fashion-mnist", "digits"),
        "source": _str(),
        "timeout": _float(0, lo_open=True),
        "retries": _int(0, 10),
    },
    "prepare": {
        "val_size": _val_size(),
        "seed": _int(0),
    },
    "model": {
        "kind": _choice("mlp", "cnn"),
        "channels": _int_list(1),
        "hidden": _int_list(),
        "activation": _choice("relu", "leaky_relu", "sigmoid", "tanh"),
        "dropout": _float(0, 1, text="must be a number in [0, 1)"),
    },
    "train": {
        "epochs": _int(1),
        "batch_size": _int(1),
        "optimizer": _choice("sgd", "adam", "adamw"),
        "lr": _float(0, lo_open=True),
        "momentum": _float(0, 1, text="must be a number in [0, 1)"),
        "weight_decay": _float(0),
        "schedule": _choice("constant", "step", "cosine"),
        "warmup_epochs": _int(0),
        "step_epochs": _int(1),
        "gamma": _float(0, 1, lo_open=True, hi_open=False, text="must be a number in (0, 1]"),
        "label_smoothing": _float(0, 1, text="must be a number in [0, 1)"),
        "shift": _int(0, 4),
        "patience": _int(0),
        "seed": _int(0),
        "device": _choice("auto", "cpu", "gpu"),
    },
    "evaluate": {
        "batch_size": _int(1),
    },
    "plots": {
        "samples": _int(1, 100),
        "misclassified": _int(1, 100),
        "seed": _int(0),
        "dpi": _int(50, 300),
    },
}


class Section(dict):
    """A params section that records each key read from it in ACCESSED."""

    def __init__(self, name: str, values: dict) -> None:
        super().__init__(values)
        self.name = name

    def __getitem__(self, key):
        ACCESSED.add(f"{self.name}.{key}")
        return super().__getitem__(key)


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: must be a mapping of sections (fetch, prepare, model, ...)")
    return data


def _suggest(key: str, known) -> list[str]:
    """The known key a typo most likely meant: a close spelling, else a shared prefix."""
    return (difflib.get_close_matches(key, known, n=1)
            or sorted((k for k in known if key.startswith(k) or k.startswith(key)), key=len, reverse=True)[:1]
            or difflib.get_close_matches(key, known, n=1, cutoff=0.4))


def validate(name: str, values, path: Path = PARAMS_FILE) -> dict:
    """Check one section against SCHEMA; return it unchanged or raise ParamsError."""
    rules = SCHEMA[name]
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: section '{name}' is missing or not a mapping")
    for key in values:
        if key not in rules:
            close = _suggest(str(key), rules)
            hint = f" (did you mean {name}.{close[0]}?)" if close else f"; known keys: {', '.join(rules)}"
            raise ParamsError(f"{path}: unknown key {name}.{key}{hint}")
    for key, (check, expectation) in rules.items():
        if key not in values:
            raise ParamsError(f"{path}: missing key {name}.{key}")
        if not check(values[key]):
            raise ParamsError(f"{path}: {name}.{key} {expectation} (got {values[key]!r})")
    return values


def load(*sections: str, path: Path | str = PARAMS_FILE) -> dict[str, Section]:
    """Read and validate `sections` of params.yaml -> {section: Section}."""
    path = Path(path)
    data = _read(path)
    return {name: Section(name, validate(name, data.get(name), path)) for name in sections}
