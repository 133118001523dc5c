"""Save / load a model as one .npz: the parameter arrays plus a JSON spec.

No pickle anywhere: arrays are written in the .npy format, the spec as UTF-8
JSON bytes, and `load` reads with `allow_pickle=False`. The zip entries carry a
fixed timestamp, so saving the same model twice gives byte-identical files.
Loading is strict: anything unexpected raises ValueError naming the key.
"""

from __future__ import annotations

import json

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


def load(path, backend: Backend = CPU) -> Sequential:
    """Read a model written by `save`; raise ValueError on anything unexpected."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not a model")
        with npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ValueError(f"{path}: no such model file; run the train stage first (dvc repro)") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not a model file ({exc})") from None
    except Exception as exc:  # BadZipFile, EOFError, OSError from a truncated/garbled file
        raise ValueError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from None
    if SPEC_KEY not in arrays:
        raise ValueError(f"{path}: missing array '{SPEC_KEY}' (the model spec)")
    try:
        spec = json.loads(arrays.pop(SPEC_KEY).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: '{SPEC_KEY}' is not valid JSON ({exc})") from None
    version = spec.pop("format", None) if isinstance(spec, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown model format version {version!r} (this code reads {FORMAT_VERSION})")
    dtype = np.dtype(spec.pop("dtype", "float32"))
    try:
        model = Sequential(spec, backend=backend, dtype=dtype)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid model spec ({exc})") from None
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
        host[model.slices[name][1]] = array.reshape(-1)
    model.set_flat(host)
    return model
