"""Choose the array module: NumPy on the CPU or CuPy on a GPU.

This is the only module in the project that imports cupy. Everything else asks
a `Backend` for its array module (`backend.xp`) and moves arrays explicitly with
`to_device` / `to_host`. What a GPU needs beyond the array module lives here
too: the stream a training run works on (`session`), a step captured once as a
CUDA graph and replayed (`graph`), and a matrix product that may be captured
(`matmul`). On the CPU each of these is the plain NumPy call.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import math
import mmap
from dataclasses import dataclass, field
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
    # its faster orientation at small batches; cuBLAS takes either, and CuPy's
    # elementwise kernels are fastest on C order.
    dense_order: str = "F"
    # GPU: capture each training step as a CUDA graph (False: launch every kernel eagerly).
    use_graphs: bool = True
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def to_device(self, array, dtype=None):
        """Host (NumPy) array -> this backend's array. No copy on the CPU."""
        return self.xp.asarray(array, dtype=dtype)

    def shared_zeros(self, shape, dtype):
        """Zeros; on the CPU in anonymous shared memory, so that a worker process forked
        after this call (a shard of a training step, nn/shards.py) and this process see
        each other's writes. On a GPU, plain device memory."""
        if self.is_gpu:
            return self.xp.zeros(shape, dtype=dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        count = math.prod(shape)
        memory = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))  # an mmap cannot be empty
        return np.frombuffer(memory, dtype=dtype, count=count).reshape(shape)

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

    # -- what a GPU run needs; plain calls on the CPU ------------------------
    @contextlib.contextmanager
    def session(self):
        """Run the enclosed work on one stream of its own (a graph cannot be captured on
        the default stream); the device is synchronised on the way in and out."""
        if not self.is_gpu:
            yield
            return
        self.synchronize()
        stream = self.xp.cuda.Stream(non_blocking=True)
        try:
            with stream:
                yield
        finally:
            stream.synchronize()

    def graph(self, fn) -> StepGraph:
        """`fn` (which only queues device work) as a callable that replays a CUDA graph."""
        return StepGraph(self, fn)

    def matmul(self, a, b, out=None):
        """a @ b for 2-D a, b (into `out` if given). On a GPU through cuBLAS directly,
        so that it can be captured in a CUDA graph."""
        if not self.is_gpu:
            return np.matmul(a, b, out=out)
        return _cublas_matmul(self, a, b, out)

    def column_sums(self, a, out):
        """out[j] = sum_i a[i, j], as a product with ones (in NumPy ~4x faster than
        `sum(axis=0)` on a column-major array; on a GPU one gemm)."""
        ones = self.xp.ones((1, a.shape[0]), dtype=a.dtype)
        if self.is_gpu:
            return self.matmul(ones, a, out=out.reshape(1, -1))
        return np.matmul(ones[0], a, out=out)


class StepGraph:
    """A training step that only queues device work, called once per batch.

    On the CPU (or with `use_graphs` off) every call runs `fn`. On a GPU the first
    call runs it eagerly (compiling its kernels and warming cuBLAS), the second
    captures it into a CUDA graph and launches that, and later calls only relaunch
    the graph - one launch per step instead of one per kernel. Every buffer
    allocated during the capture is kept for the graph's lifetime, so the memory
    pool never hands the graph's addresses to anything else. If the capture fails,
    the step falls back to eager launches and says so once in the log.
    """

    warned = False

    def __init__(self, backend: Backend, fn) -> None:
        self.backend, self.fn = backend, fn
        self.calls = self.replays = 0
        self.graph, self.kept, self.failed = None, [], False

    def __call__(self) -> None:
        self.calls += 1
        if self.graph is not None:
            self.graph.launch()
            self.replays += 1
            return
        if self.calls == 1 or self.failed or not (self.backend.is_gpu and self.backend.use_graphs):
            self.fn()
            return
        try:
            self.graph = self._capture()
        except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
            self.failed = True
            if not StepGraph.warned:
                StepGraph.warned = True
                log.warning("CUDA graph capture failed (%s: %s); launching the step's kernels eagerly",
                            type(exc).__name__, exc)
            self.fn()
            return
        self.graph.launch()
        self.replays += 1

    def _capture(self):
        cupy = self.backend.xp
        stream = cupy.cuda.get_current_stream()
        pool = cupy.get_default_memory_pool()

        def keep(nbytes):
            memory = pool.malloc(nbytes)
            self.kept.append(memory)
            return memory

        with cupy.cuda.using_allocator(keep):
            stream.begin_capture()
            try:
                self.fn()
            except BaseException:
                with contextlib.suppress(Exception):
                    stream.end_capture()
                self.kept.clear()
                raise
            return stream.end_capture()


class Cublas:
    """cuBLAS's gemm through ctypes, on a handle of our own.

    CuPy refuses every cuBLAS call while a stream is capturing ("calling cuBLAS API
    during stream capture is currently unsupported", CuPy 14), although cuBLAS itself
    supports capture. So the library CuPy has loaded is called directly: a handle
    with its own 32 MiB workspace (so cuBLAS allocates nothing during a capture),
    host pointer mode (alpha and beta are read at the call) and default math (fp32,
    no TF32)."""

    WORKSPACE = 32 << 20

    def __init__(self, cupy: ModuleType) -> None:
        cupy.cuda.device.get_cublas_handle()  # makes CuPy load libcublas into this process
        with open("/proc/self/maps") as maps:
            path = next(line.split()[-1] for line in maps if "/libcublas.so" in line)
        self.lib = ctypes.CDLL(path)
        self.handle = ctypes.c_void_p()
        self._check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self.workspace = cupy.empty(self.WORKSPACE, dtype=np.uint8)
        self._check(self.lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(self.workspace.data.ptr),
                                                   ctypes.c_size_t(self.WORKSPACE)), "cublasSetWorkspace")
        self.stream = None
        vp, i = ctypes.c_void_p, ctypes.c_int
        for name, real in (("cublasSgemm_v2", ctypes.c_float), ("cublasDgemm_v2", ctypes.c_double)):
            getattr(self.lib, name).argtypes = [vp, i, i, i, i, i, ctypes.POINTER(real), vp, i, vp, i,
                                                ctypes.POINTER(real), vp, i]
        # per dtype: the gemm and its alpha = 1, beta = 0 (host pointer mode: read at each call)
        self.gemms = {np.dtype(t): (getattr(self.lib, name), real(1.0), real(0.0))
                      for t, name, real in ((np.float32, "cublasSgemm_v2", ctypes.c_float),
                                            (np.float64, "cublasDgemm_v2", ctypes.c_double))}

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != 0:
            raise RuntimeError(f"{call} failed with cuBLAS status {status}")

    def gemm(self, stream_ptr: int, op_a, op_b, m, n, k, a_ptr, lda, b_ptr, ldb, c_ptr, ldc, dtype) -> None:
        """C = op(A) op(B), column-major (cuBLAS's own convention), on `stream_ptr`."""
        if stream_ptr != self.stream:
            self._check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream_ptr)), "cublasSetStream")
            self.stream = stream_ptr
        gemm, one, zero = self.gemms[dtype]
        self._check(gemm(self.handle, op_a, op_b, m, n, k, ctypes.byref(one), a_ptr, lda, b_ptr, ldb,
                         ctypes.byref(zero), c_ptr, ldc), "gemm")


def _cublas_matmul(backend: Backend, a, b, out):
    """out = a @ b with cuBLAS's gemm on row-major or column-major operands.

    cuBLAS is column-major: it computes out.T = b.T @ a.T, where a C-ordered (r, c)
    array is the column-major (c, r) matrix of its transpose (ld = c) and an
    F-ordered one is itself (ld = r)."""
    cupy = backend.xp
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = cupy.empty((m, n), dtype=a.dtype)
    dtype = np.dtype(a.dtype)
    layouts_ok = all(x.flags.c_contiguous or x.flags.f_contiguous for x in (a, b))
    if (dtype not in (np.float32, np.float64) or b.dtype != dtype or out.dtype != dtype
            or not out.flags.c_contiguous or not layouts_ok or 0 in (m, n, k)):
        return cupy.matmul(a, b, out=out)
    cublas = backend._cache.get("cublas") or backend._cache.setdefault("cublas", Cublas(cupy))
    op_b, ld_b = (0, n) if b.flags.c_contiguous else (1, k)  # 0: CUBLAS_OP_N, 1: CUBLAS_OP_T
    op_a, ld_a = (0, k) if a.flags.c_contiguous else (1, m)
    cublas.gemm(cupy.cuda.get_current_stream().ptr, op_b, op_a, n, m, k, b.data.ptr, ld_b, a.data.ptr, ld_a,
                out.data.ptr, n, dtype)
    return out


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
