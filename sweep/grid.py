"""The grid: `-S` arguments read with DVC's own grammar (the one `dvc exp run -S` reads: comma
lists, `range(start,stop[,step])`, `choice(a,b)`), expanded into points by DVC's own sweeper (the
cartesian product of the values), each point with a stable name and the params it runs with."""

from __future__ import annotations

import difflib
import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import StageError, one_line
from params import SCHEMA

PARAMS_FILE = "params.yaml"
DEVICE_KEYS = ("train.device", "evaluate.device")  # set by --device: where a trial computes decides its bits


@dataclass
class Point:
    """One trial: `overrides` are `key=value` strings as `dvc exp run -S` takes them, in the
    order the user gave the keys; `swept` the keys whose value differs between points."""

    overrides: list[str]
    swept: list[str]
    name: str = ""
    params: dict = field(default_factory=dict)  # params.yaml as the trial will have it

    def value(self, key: str) -> str:
        return next(o.partition("=")[2] for o in self.overrides if o.partition("=")[0] == key)

    def keys(self) -> list[str]:
        """The keys that tell this point from the others: the swept ones, or all that -S sets if none is."""
        return self.swept or [o.partition("=")[0] for o in self.overrides if o.partition("=")[0] not in DEVICE_KEYS]

    def label(self) -> str:
        """Its keys and values, `train.lr=0.001 model.dropout=0.2`."""
        return " ".join(f"{k}={self.value(k)}" for k in self.keys())


def check_key(key: str) -> None:
    """A key params.yaml has (section.key); else StageError with the nearest known key."""
    section, _, name = key.partition(".")
    if key in DEVICE_KEYS:
        raise StageError(f"-S {key}: the device is set by --device (cpu or gpu), for every trial")
    if section in SCHEMA and name in SCHEMA[section]:
        return
    known = [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys]
    close = difflib.get_close_matches(key[:60], known, n=1, cutoff=0.6)
    raise StageError(f"-S {key}: params.yaml has no such key" + (f" (did you mean {close[0]}?)" if close else
                                                                   "; keys are section.key, e.g. train.lr"))


def expand(args: list[str]) -> list[list[str]]:
    """The `-S` arguments -> one list of `key=value` overrides per point, as `dvc exp run --queue -S`
    expands them (DVC's and Hydra's code, not a copy of it). StageError for what DVC refuses."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    for arg in args:
        key, eq, _ = arg.partition("=")
        if not eq:
            raise StageError(f"-S {arg!r}: give key=value, or key=a,b,c for a sweep (e.g. -S train.lr=0.001,0.002)")
        if ":" in key:
            raise StageError(f"-S {arg!r}: the params live in {PARAMS_FILE}; give the key alone (train.lr=...)")
        if key.lstrip("+~") != key:
            raise StageError(f"-S {arg!r}: a sweep sets existing keys only (no +key or ~key)")
        check_key(key)
    keys = [arg.partition("=")[0] for arg in args]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise StageError(f"-S {twice} is given twice; give it once, with all its values (-S {twice}=a,b)")
    for arg in args:  # one at a time first, so that an error names its argument
        try:
            get_hydra_sweeps(to_path_overrides([arg]))
        except (InvalidArgumentError, HydraException, ValueError) as exc:
            said = (str(exc.__cause__ or exc).splitlines() or [""])[0]
            raise StageError(f"-S {arg}: not in the grammar dvc exp run -S reads ({said[:200]}); e.g. "
                             "key=a,b or key='range(0.1,0.5,0.1)' or key='choice(a,b)'") from None
    sweeps = get_hydra_sweeps(to_path_overrides(args))
    return [sweep.get(PARAMS_FILE, []) for sweep in sweeps] if sweeps else [[]]


def slug(text: str) -> str:
    """A value as it may appear in a git ref name: [0.1, 0.2] -> 0.1_0.2."""
    text = re.sub(r"[,\s]+", "_", text.strip("[]()'\""))
    return re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._+-]", "", text))


def name_of(point: Point) -> str:
    """A stable name from the point's values: `lr0.001-dropout0.2-1f3a9c`. The hash is of every
    override (fixed keys and device too), so different points never share a name, and the
    same point is named the same in every sweep."""
    digest = hashlib.sha256("\n".join(sorted(point.overrides)).encode()).hexdigest()[:6]
    readable = "-".join(f"{key.rpartition('.')[2]}{slug(point.value(key))}" for key in point.keys())[:48]
    return f"{readable.strip('.-')}-{digest}" if readable.strip(".-") else f"sweep-{digest}"


def with_overrides(params_text: str, overrides: list[str], scratch: Path) -> dict:
    """params.yaml (its text) as `dvc exp run -S` leaves it after `overrides`, as data."""
    from dvc.utils.hydra import apply_overrides

    path = scratch / PARAMS_FILE
    path.write_text(params_text)
    apply_overrides(path, overrides)
    return yaml.safe_load(path.read_text())


def points(args: list[str], device: str, params_text: str) -> list[Point]:
    """Every point of the grid `args` (the -S arguments), named, with its params."""
    combos = expand(args)
    keys = list(dict.fromkeys(o.partition("=")[0] for combo in combos for o in combo))
    swept = [k for k in keys if len({o for c in combos for o in c if o.partition("=")[0] == k}) > 1]
    pinned = [f"{key}={device}" for key in DEVICE_KEYS]
    found = []
    scratch = Path(tempfile.mkdtemp(prefix="sweep-params-"))
    try:
        for combo in combos:
            point = Point(overrides=[*combo, *pinned], swept=swept)
            point.name = name_of(point)
            try:
                point.params = with_overrides(params_text, point.overrides, scratch)
            except Exception as exc:  # DVC's InvalidArgumentError, a value its YAML writer refuses
                cause = exc.__cause__ or exc
                raise StageError(f"-S {point.label()}: {one_line(str(cause))[:300]}") from None
            if point.name not in {p.name for p in found}:  # a value given twice is one point
                found.append(point)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return found
