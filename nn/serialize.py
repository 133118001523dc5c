"""Save / load a model as one .npz: the parameter arrays plus a JSON spec.

No pickle anywhere: arrays are written in the .npy format, the spec as UTF-8
JSON bytes, and `load` reads with `allow_pickle=False`. The zip entries carry a
fixed timestamp, so saving the same model twice gives byte-identical files.
Loading is strict: anything unexpected raises ValueError naming the key.
"""

from __future__ import annotations

import json
import math

import numpy as np

from nn.atomic import write_npz
from nn.backend import CPU, Backend
from nn.model import Sequential

FORMAT_VERSION = 1
SPEC_KEY = "__spec__"


def save(model: Sequential, path) -> None:
    """Write `model` to `path` atomically; the same model always gives the same bytes."""
    spec = dict(model.spec, format=FORMAT_VERSION, dtype=model.dtype.name)
    arrays = {SPEC_KEY: np.frombuffer(json.dumps(spec, sort_keys=True).encode(), dtype=np.uint8)}
    arrays.update(model.named_parameters())
    write_npz(path, arrays)


DTYPES = ("float32", "float64")


def _array_sizes(npz, path) -> int:
    """Check each array's .npy header against the bytes its zip entry holds (before
    anything is allocated); return the total number of elements."""
    total = 0
    for name in npz.files:
        info = npz.zip.getinfo(f"{name}.npy")
        with npz.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version,
                                                                           np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
        count = math.prod(shape)
        if count * dtype.itemsize > info.file_size:
            raise ValueError(f"{path}: array '{name}' claims shape {shape} but holds {info.file_size} bytes")
        total += count
    return total


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_spec(spec: dict, path) -> None:
    norm = spec.get("normalize", {"mean": 0.0, "std": 1.0})
    mean, std = (norm.get("mean"), norm.get("std")) if isinstance(norm, dict) else (None, None)
    if not all(map(_finite, (mean, std))) or std <= 0:
        raise ValueError(f"{path}: invalid model spec (normalize must be a finite mean and a std > 0, got {norm!r})")
    classes = spec.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{path}: invalid model spec (classes must be a list of names)")
    ink = spec.get("ink")  # where the training digits' ink sits (nn.data.ink_frame), for predict
    if ink is not None and not (
            isinstance(ink, dict) and isinstance(ink.get("extent"), int) and not isinstance(ink["extent"], bool)
            and ink["extent"] >= 1 and isinstance(ink.get("centre"), list) and len(ink["centre"]) == 2
            and all(map(_finite, ink["centre"]))):
        raise ValueError(f"{path}: invalid model spec (ink must be an extent >= 1 and a [row, column] centre, "
                         f"got {str(ink)[:80]})")


def load(path, backend: Backend = CPU) -> Sequential:
    """Read a model written by `save`; raise ValueError on anything unexpected."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not a model")
        with npz:
            available = _array_sizes(npz, path)
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such model file; run the train stage first (dvc repro)") from None
    except ValueError as exc:
        message = str(exc)
        if "pickled" in message:  # NumPy's guess for bytes that are neither .npz nor .npy
            message = "neither an .npz archive nor an .npy array (and pickles are never loaded)"
        if not message.startswith(f"{path}: "):
            message = f"{path}: not a model file ({message})"
        raise ValueError(message) from None
    except Exception as exc:  # BadZipFile, EOFError, OSError, MemoryError from a truncated/garbled file
        raise ValueError(f"{path}: not a readable model file ({type(exc).__name__}: {exc}); "
                         "retrain it (dvc repro -f train)") from None
    if SPEC_KEY not in arrays:
        raise ValueError(f"{path}: missing array '{SPEC_KEY}' (the model spec)")
    try:
        spec = json.loads(arrays.pop(SPEC_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: '{SPEC_KEY}' is not valid JSON ({exc})") from None
    except RecursionError:  # [[[[... nested past Python's limit: no spec is (found reviewing the fuzz targets)
        raise ValueError(f"{path}: '{SPEC_KEY}' is nested too deeply to be a model spec") from None
    version = spec.pop("format", None) if isinstance(spec, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown model format version {version!r} (this code reads {FORMAT_VERSION})")
    dtype = spec.pop("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"{path}: invalid model spec (dtype {dtype!r} is not one of {', '.join(DTYPES)})")
    _check_spec(spec, path)
    try:
        model = Sequential(spec, backend=backend, dtype=np.dtype(dtype), max_params=available)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: invalid model spec ({exc})") from None
    if model.classes is not None and len(model.classes) != model.output_shape[-1]:
        raise ValueError(f"{path}: invalid model spec ({len(model.classes)} class names for "
                         f"{model.output_shape[-1]} outputs)")
    expected = {name: shape for name, (_, _, shape) in model.slices.items()}
    for name in sorted(set(arrays) - set(expected)):
        raise ValueError(f"{path}: unexpected array '{name}'")
    host = np.zeros(model.n_params, dtype=dtype)
    for name, shape in expected.items():
        if name not in arrays:
            raise ValueError(f"{path}: missing array '{name}'")
        array = arrays[name]
        if array.shape != tuple(shape) or array.dtype != dtype:
            raise ValueError(f"{path}: array '{name}' has shape {array.shape} {array.dtype}, "
                             f"expected {tuple(shape)} {dtype}")
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: array '{name}' holds NaN or infinite weights; retrain it (dvc repro -f train)")
        host[model.slices[name][1]] = array.reshape(-1)
    model.set_flat(host)
    return model
