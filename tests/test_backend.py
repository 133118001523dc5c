"""Backend selection with CuPy absent, present without a device, and gpu forced."""

from __future__ import annotations

import ast
import logging
import types
from pathlib import Path

import numpy as np
import pytest

from nn import backend as nn_backend
from tests.project import ROOMS


def fake_cupy(available=True, alloc_error=None):
    cupy = types.ModuleType("cupy")
    cupy.is_available = lambda: available

    def zeros(*a, **k):
        if alloc_error:
            raise alloc_error
        return np.zeros(*a, **k)

    cupy.zeros, cupy.float32 = zeros, np.float32
    return cupy


class CUDARuntimeError(RuntimeError):
    """Stands in for cupy_backends.cuda.api.runtime.CUDARuntimeError."""


@pytest.mark.parametrize("cupy", [
    None,  # not installed
    fake_cupy(available=False),  # installed, no device
    fake_cupy(available=True, alloc_error=CUDARuntimeError("cudaErrorInsufficientDriver")),
])
def test_auto_falls_back_to_numpy(monkeypatch, caplog, cupy):
    monkeypatch.setattr(nn_backend, "_import_cupy", lambda: cupy)
    with caplog.at_level(logging.INFO, logger="nn.backend"):
        b = nn_backend.select("auto")
    assert b.xp is np and b.name == "cpu"
    assert "using CPU via NumPy" in caplog.text


@pytest.mark.parametrize("cupy,reason", [
    (None, "not installed"),
    (fake_cupy(available=False), "no CUDA device"),
    (fake_cupy(alloc_error=CUDARuntimeError("cudaErrorNoDevice")), "not usable"),
])
def test_gpu_forced_without_device_is_a_clear_error(monkeypatch, cupy, reason):
    monkeypatch.setattr(nn_backend, "_import_cupy", lambda: cupy)
    with pytest.raises(nn_backend.BackendError, match=f"no GPU is usable: .*{reason}"):
        nn_backend.select("gpu")


def test_cpu_never_touches_cupy(monkeypatch):
    def boom():
        raise AssertionError("cupy was imported")

    monkeypatch.setattr(nn_backend, "_import_cupy", boom)
    assert nn_backend.select("cpu") is nn_backend.CPU


def test_unknown_mode():
    with pytest.raises(nn_backend.BackendError, match="device must be one of auto, cpu, gpu"):
        nn_backend.select("tpu")


def test_moves_are_explicit(backend):
    host = np.arange(6, dtype=np.float32)
    dev = backend.to_device(host)
    assert isinstance(dev, backend.xp.ndarray)
    back = backend.to_host(dev * 2)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host * 2)


def imported_modules(path):
    """Top-level names of every module a file imports, or names as a string literal."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and node.value in ("cupy", "pickle"):
            names.add(node.value)
    return names


def test_only_backend_imports_cupy_and_nothing_uses_pickle():
    root = Path(nn_backend.__file__).parent.parent
    files = [path for room in ROOMS for path in sorted((root / room).glob("*.py"))]
    assert len(files) > 5
    for path in files:
        names = imported_modules(path)
        if path.name != "backend.py":
            assert "cupy" not in names, f"{path} imports cupy"
        if path.parent.name == "nn":
            assert "pickle" not in names, f"{path} uses pickle"
    assert "cupy" in imported_modules(root / "nn" / "backend.py")
