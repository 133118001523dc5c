"""Pin what decides the bits of a run, before NumPy loads: so that `dvc repro` gives
the same bytes on every x86-64 machine with AVX2, whatever its CPU and core count.

Measured on the default network (2 epochs, 20000 samples, model md5 compared):
- OpenBLAS picks a kernel for the CPU it runs on (SkylakeX on AVX-512 CPUs, Haswell
  on AVX2 ones, ...), and kernels round differently: Sandybridge and Nehalem each gave
  other bytes than Haswell (Zen shares Haswell's kernels and bytes). Pinned:
  OPENBLAS_CORETYPE=Haswell, which every x86-64 CPU with AVX2 and FMA runs (Intel since
  2013, AMD since 2015) - only where the CPU has both, since it would crash otherwise.
- OpenBLAS splits a product differently for another thread count: 1 and 2 threads
  gave other bytes for every sgemm of a step. Pinned: one thread (OPENBLAS, OMP and
  MKL). It also lets `dvc queue start -j N` run N experiments on N cores without
  oversubscribing them.
- NumPy dispatches exp, log, tanh to AVX-512 code where the CPU has it. Pinned: those
  dispatch targets are switched off (NPY_DISABLE_CPU_FEATURES, with NumPy's names for
  them in the version constraints.txt installs), so an AVX-512 machine runs the AVX2
  code an AVX2 machine runs.

A setting already in the environment is overridden, so a machine that forces another
kernel still reproduces dvc.lock. REPRO_NATIVE=1 turns all of this off: the
machine's fastest kernel, all its cores, and bytes of its own.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

KERNEL = "Haswell"
THREADS = "1"
NUMPY_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR"  # NumPy 2.4's dispatch targets beyond AVX2
OPT_OUT = "REPRO_NATIVE"


def cpu_flags() -> set[str]:
    """The CPU's feature flags, lower case (Linux /proc/cpuinfo, or macOS sysctl); empty if unknown."""
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/cpuinfo") as info:
                line = next((line for line in info if line.startswith("flags")), "")
            return set(line.partition(":")[2].lower().split())
        if sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                                 capture_output=True, text=True, timeout=5).stdout
            return set(out.lower().replace(".", "_").split())
    except (OSError, subprocess.SubprocessError):
        pass
    return set()


def opted_out(environ) -> bool:
    return environ.get(OPT_OUT, "") not in ("", "0")


def pinned(environ, machine: str, flags: set[str]) -> dict[str, str]:
    """The environment variables to set, given the current environment, platform.machine()
    and the CPU flags: empty when the user opts out."""
    if opted_out(environ):
        return {}
    pins = {"OPENBLAS_NUM_THREADS": THREADS, "OMP_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS}
    if machine.lower() in ("x86_64", "amd64") and {"avx2", "fma"} <= flags:
        pins["OPENBLAS_CORETYPE"] = KERNEL
        pins["NPY_DISABLE_CPU_FEATURES"] = NUMPY_AVX512
    return pins


def apply() -> None:
    """Pin this process (a stage about to import NumPy). Once NumPy is loaded, its BLAS
    and dispatch are fixed: then nothing is changed and `describe()` tells what runs."""
    if "numpy" in sys.modules:
        return
    os.environ.update(pinned(os.environ, platform.machine(), cpu_flags()))


def describe() -> str:
    """What decides the bits in this process, as NumPy and OpenBLAS report it."""
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [f"{p.get('internal_api')} {p.get('version')} {p.get('architecture', '?')}, "
            f"{p['num_threads']} thread{'s' * (p['num_threads'] != 1)}"
            for p in threadpool_info() if p["user_api"] == "blas"]
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        simd = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    except ImportError:  # another NumPy layout
        simd = ["?"]
    note = " (REPRO_NATIVE: not pinned)" if opted_out(os.environ) else ""
    return f"numpy {np.__version__}, SIMD {' '.join(simd) or 'baseline'}; {'; '.join(blas) or 'no BLAS found'}{note}"
