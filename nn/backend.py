"""Choose the array module: NumPy on the CPU or CuPy on a GPU.

This is the only module in the project that imports cupy. Everything else asks
a `Backend` for its array module (`backend.xp`) and moves arrays explicitly with
`to_device` / `to_host`.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType

import numpy as np

log = logging.getLogger(__name__)

MODES = ("auto", "cpu", "gpu")


class BackendError(RuntimeError):
    """The requested backend cannot be used (e.g. `gpu` with no usable GPU)."""


@dataclass(frozen=True)
class Backend:
    """An array module plus the two explicit host<->device moves."""

    xp: ModuleType
    name: str  # "cpu" or "gpu"
    device_name: str
    # Work on big intermediates (a convolution's column matrix) in blocks of about
    # this many bytes, so they stay in the CPU's cache; None: in one piece (GPU).
    block_bytes: int | None = 4 << 20
    # Memory order of Dense outputs. "F" (column-major) lets OpenBLAS multiply in
    # its faster orientation at small batches; CuPy's matmul wants a C-order `out`
    # (it would compute into a temporary and copy).
    dense_order: str = "F"

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def to_device(self, array, dtype=None):
        """Host (NumPy) array -> this backend's array. No copy on the CPU."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        """This backend's array -> NumPy array (a device->host copy on the GPU)."""
        if isinstance(array, np.ndarray):
            return array
        return self.xp.asnumpy(array)

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work (for timing; a no-op on the CPU)."""
        if self.is_gpu:
            self.xp.cuda.Device().synchronize()

    def describe(self) -> str:
        if self.is_gpu:
            return f"using GPU via CuPy: {self.device_name}"
        return "using CPU via NumPy"


CPU = Backend(xp=np, name="cpu", device_name="cpu")


def _import_cupy() -> ModuleType | None:
    try:
        return importlib.import_module("cupy")
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None


def _probe_gpu(cupy: ModuleType) -> tuple[bool, str]:
    """(usable, device name or reason). An allocation proves the driver works."""
    try:
        if not cupy.is_available():
            return False, "CuPy found no CUDA device"
        cupy.zeros(1, dtype=cupy.float32).sum().item()
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return True, name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:  # CUDARuntimeError and friends are RuntimeErrors
        return False, f"CUDA is not usable ({type(exc).__name__}: {exc})"


def select(mode: str = "auto") -> Backend:
    """Return the backend for `mode` ('auto' | 'cpu' | 'gpu') and log the choice once."""
    if mode not in MODES:
        raise BackendError(f"device must be one of {', '.join(MODES)} (got {mode!r})")
    backend = CPU
    if mode != "cpu":
        cupy = _import_cupy()
        if cupy is None:
            reason = "CuPy is not installed (pip install -e '.[gpu]')"
            usable = False
        else:
            usable, reason = _probe_gpu(cupy)
        if usable:
            backend = Backend(xp=cupy, name="gpu", device_name=reason, block_bytes=None, dense_order="C")
        elif mode == "gpu":
            raise BackendError(f"device 'gpu' requested but no GPU is usable: {reason}")
    log.info(backend.describe())
    return backend
