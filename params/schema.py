"""params.yaml: the schema of every section, and strict validation.

Every key a stage may read is listed here with its rule. `load(sections)` checks
the whole of those sections before any work starts - missing sections or keys,
unknown keys (with a suggestion for typos), wrong types and out-of-range values
all become one `ParamsError` line naming the key. The returned sections record
which keys the stage actually reads (see `ACCESSED`), so a test can prove that
each stage reads exactly the keys dvc.yaml declares for it.

The file is read as DVC reads it (params/yaml_file.py: YAML 1.2, strict), so the
values a stage uses are the values `dvc params diff` and `dvc exp show` show.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

from params.yaml_file import ParamsError, read, show, show_key

PARAMS_FILE = Path("params.yaml")
ACCESSED: set[str] = set()  # "section.key" read by the running stage

__all__ = ["ParamsError", "SCHEMA", "Section", "load", "validate"]


# -- the rules -------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo=None, hi=None):
    def check(v):
        return _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    bounds = "an integer" + (f" >= {lo}" if lo is not None else "") + (f" and <= {hi}" if hi is not None else "")
    return check, f"must be {bounds}"


def _float(lo=None, hi=None, lo_open=False, hi_open=True, text=None):
    def check(v):
        if not (_is_int(v) or isinstance(v, float) and math.isfinite(v)):
            return False  # no float(v) for an int: a 400-digit one overflows
        ok_lo = lo is None or (v > lo if lo_open else v >= lo)
        ok_hi = hi is None or (v < hi if hi_open else v <= hi)
        return ok_lo and ok_hi
    return check, text or f"must be a number {'>' if lo_open else '>='} {lo}" + (
        f" and {'<' if hi_open else '<='} {hi}" if hi is not None else "")


def _choice(*options):
    return (lambda v: isinstance(v, str) and v in options), "must be one of " + ", ".join(map(str, options))


def _str(max_len: int):
    def check(v):
        return isinstance(v, str) and 0 < len(v) <= max_len and v.isprintable()
    return check, f"must be a non-empty line of text (at most {max_len} characters)"


def _int_list(example: str, hi: int, max_len: int, min_len: int = 0):
    item, _ = _int(1, hi)

    def check(v):
        return isinstance(v, list) and min_len <= len(v) <= max_len and all(map(item, v))
    count = f"{min_len} to {max_len}" if min_len else f"at most {max_len}"
    return check, f"must be a list of positive integers (each <= {hi}, {count} of them), e.g. {example}"


def _val_size(max_count: int):
    def check(v):
        if _is_int(v):
            return 1 <= v <= max_count
        return isinstance(v, float) and 0 < v < 1
    return check, f"must be a count >= 1 or a fraction in (0, 1); counts stop at {max_count}"


def _image_size(hi: int):
    item, _ = _int(1, hi)

    def check(v):
        return v == "auto" or isinstance(v, list) and len(v) == 2 and all(map(item, v))
    return check, f"must be auto or [height, width] in pixels (each an integer from 1 to {hi}), e.g. [28, 28]"


# The upper bounds catch values that can never make sense, so that the message names the
# key - rather than a stage failing later (or allocating without end) about something else.
# Whether a legal network fits in memory is train's question, not the schema's.
SEED = _int(0, 2 ** 32 - 1)  # scikit-learn's random_state stops at 2**32 - 1; every seed shares it
EPOCHS = 10_000              # 10000 epochs of MNIST is weeks on a CPU; more is a typo
BATCH = 2 ** 20              # 17x all of MNIST: a batch is at most the whole training set
WIDTH = 2 ** 16              # two dense layers of 65536 units are 17 GB of float32 weights
CHANNELS = 4096              # twice the widest ResNet block (2048)

SCHEMA: dict[str, dict[str, tuple]] = {
    "fetch": {
        "dataset": _choice("mnist", "fashion-mnist", "digits", "idx", "folder"),
        "source": _str(4096),  # PATH_MAX: a longer path cannot be opened (nor a URL fetched)
        # each whole HTTP request (10 MB at most) must end within it: a day is a hang, and
        # 1e300 would overflow the socket's timeout (an OverflowError, not a message)
        "timeout": _float(0, 86400, lo_open=True, hi_open=False, text="must be a number of seconds > 0 and <= 86400"),
        "retries": _int(0, 10),
        # folder only: the size every image is brought to; auto = the one size they all share
        "image_size": _image_size(1600),  # read_pixels reads at most 1600 pixels on the longer side
        "color": _choice("gray", "rgb"),  # folder only: one channel or three
        # folder without train/ + test/: the test split made by fetch (stratified, seeded)
        "test_size": _val_size(10 ** 9),
        "seed": SEED,
    },
    "prepare": {
        "val_size": _val_size(10 ** 9),  # a billion 28x28 images is 784 GB: no split is bigger
        "seed": SEED,
    },
    "model": {
        "kind": _choice("mlp", "cnn"),
        # each block halves the image: 16 blocks would need a 65536-pixel-wide input
        "channels": _int_list("[32, 64]", CHANNELS, 16, min_len=1),
        "hidden": _int_list("[256, 128]", WIDTH, 64),  # 64 plain dense layers do not train
        "activation": _choice("relu", "leaky_relu", "sigmoid", "tanh"),
        "dropout": _float(0, 1, text="must be a number in [0, 1)"),
    },
    "train": {
        "epochs": _int(1, EPOCHS),
        "batch_size": _int(1, BATCH),
        "optimizer": _choice("sgd", "adam", "adamw"),
        "lr": _float(0, lo_open=True),  # too high diverges, and train names train.lr then
        "momentum": _float(0, 1, text="must be a number in [0, 1)"),
        # over 1 the decay outweighs the loss (and AdamW's p *= 1 - lr * wd flips signs:
        # a divergence train would blame on train.lr)
        "weight_decay": _float(0, 1, hi_open=False, text="must be a number in [0, 1]"),
        "schedule": _choice("constant", "step", "cosine"),
        "warmup_epochs": _int(0, EPOCHS),
        "step_epochs": _int(1, EPOCHS),
        "gamma": _float(0, 1, lo_open=True, hi_open=False, text="must be a number in (0, 1]"),
        "label_smoothing": _float(0, 1, text="must be a number in [0, 1)"),
        "shift": _int(0, 4),
        "patience": _int(0, EPOCHS),
        "seed": SEED,
        "device": _choice("auto", "cpu", "gpu"),
    },
    "evaluate": {
        "batch_size": _int(1, BATCH),
        "device": _choice("auto", "cpu", "gpu"),
    },
    "plots": {
        "samples": _int(1, 100),
        "misclassified": _int(1, 100),
        "seed": SEED,
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
            if isinstance(key, str) and key.strip() in rules:
                hint = f" (a space around {name}.{key.strip()}: remove it)"
            elif key in SCHEMA:
                hint = f" ({key} is a section of its own: un-indent it to the left margin)"
            elif close := (_suggest(str(key), rules) if len(str(key)) <= 60 else []):
                hint = f" (did you mean {name}.{close[0]}?)"
            else:
                hint = f"; known keys: {', '.join(rules)}"
            raise ParamsError(f"{path}: unknown key {name}.{show_key(key)}{hint}")
    for key, (check, expectation) in rules.items():
        if key not in values:
            raise ParamsError(f"{path}: missing key {name}.{key}")
        if not check(values[key]):
            raise ParamsError(f"{path}: {name}.{key} {expectation} (got {show(values[key])})")
    return values


def load(*sections: str, path: Path | str = PARAMS_FILE) -> dict[str, Section]:
    """Read and validate `sections` of params.yaml -> {section: Section}."""
    path = Path(path)
    data = read(path)
    for name in data:  # a section no stage reads is a typo (trian:) or a leftover: never silently ignored
        if name not in SCHEMA:
            close = difflib.get_close_matches(str(name)[:60], SCHEMA, n=1, cutoff=0.7)
            hint = f" (did you mean {close[0]}?)" if close else f"; the sections are {', '.join(SCHEMA)}"
            raise ParamsError(f"{path}: unknown section {show_key(name)}{hint}")
    return {name: Section(name, validate(name, data.get(name), path)) for name in sections}
