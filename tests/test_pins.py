"""What decides the bits is pinned in every stage process (harness/pins.py)."""

from __future__ import annotations

import os
import re

from harness import pins
from harness.pins import NUMPY_AVX512, pinned
from tests.project import DIGITS, Project

AVX2 = {"sse4_2", "avx", "avx2", "fma"}
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_an_unset_environment_gets_the_kernel_the_threads_and_the_simd_pinned():
    assert pinned({}, "x86_64", AVX2) == {**ONE_THREAD, "OPENBLAS_CORETYPE": "Haswell",
                                          "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512}


def test_an_explicit_setting_is_overridden_and_repro_native_opts_out():
    forced = {"OPENBLAS_CORETYPE": "SkylakeX", "OPENBLAS_NUM_THREADS": "8"}
    assert pinned(forced, "x86_64", AVX2 | {"avx512f"})["OPENBLAS_CORETYPE"] == "Haswell"
    assert pinned(forced, "x86_64", AVX2)["OPENBLAS_NUM_THREADS"] == "1"
    assert pinned({"REPRO_NATIVE": "1"}, "x86_64", AVX2) == {}
    assert pinned({"REPRO_NATIVE": "0"}, "x86_64", AVX2) == pinned({}, "x86_64", AVX2)


def test_a_cpu_without_avx2_or_not_x86_keeps_its_kernel_but_not_its_threads():
    assert pinned({}, "x86_64", {"sse4_2", "avx"}) == ONE_THREAD  # Haswell's kernel would crash there
    assert pinned({}, "aarch64", {"asimd"}) == ONE_THREAD


def test_the_simd_targets_switched_off_are_numpys_names_for_them():
    from numpy._core._multiarray_umath import __cpu_dispatch__

    assert set(NUMPY_AVX512.split()) <= set(__cpu_dispatch__)  # fails if NumPy renames them


def test_a_stage_process_reports_the_pinned_kernel_and_thread_count(tmp_path):
    """The stage's own process, environment as the machine set it: OpenBLAS (NumPy's and
    SciPy's) at one thread and, on an AVX2 CPU, the Haswell kernel and no AVX-512 dispatch -
    or, where the environment opts out with REPRO_NATIVE=1, the stage says it is not pinned."""
    project = Project(tmp_path, DIGITS)
    project.stage("fetch", check=True)
    bits = re.search(r"bits: (.*)", project.stage("prepare", check=True).stderr).group(1)
    if pinned(os.environ, "x86_64", AVX2) == {}:  # this environment opts out (REPRO_NATIVE=1)
        assert bits.endswith("(REPRO_NATIVE: not pinned)"), bits
        return
    blas = re.findall(r"openblas [\d.]+ (\w+), (\d+) threads?", bits)
    assert blas and all(threads == "1" for _, threads in blas), bits
    if {"avx2", "fma"} <= pins.cpu_flags():
        assert all(kernel == "Haswell" for kernel, _ in blas), bits
        simd = bits.split("SIMD ")[1].split(";")[0].split()
        assert not set(NUMPY_AVX512.split()) & set(simd), bits
