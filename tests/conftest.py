"""Shared fixtures: every backend test runs on NumPy and, where a GPU is usable, CuPy."""

from __future__ import annotations

import numpy as np
import pytest

from nn import backend as nn_backend


def _gpu_or_skip():
    try:
        return nn_backend.select("gpu")
    except nn_backend.BackendError as exc:
        pytest.skip(f"no usable GPU: {exc}")


@pytest.fixture(params=["cpu", "gpu"])
def backend(request):
    """The NumPy backend, then the CuPy one (skipped cleanly when no GPU)."""
    return nn_backend.CPU if request.param == "cpu" else _gpu_or_skip()


@pytest.fixture
def gpu():
    """The CuPy backend (skipped cleanly when no GPU)."""
    return _gpu_or_skip()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits as uint8 images (0..255) and labels, split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images * 16).clip(0, 255).astype(np.uint8)
    return train_test_split(x, d.target.astype(np.uint8), test_size=0.25, random_state=0,
                            stratify=d.target)


# The test files that take longest on 2 cores (seconds, `pytest --durations 0` summed per file),
# handed out first: with `--dist loadfile` a long file dealt last keeps one worker busy while the
# others have nothing left to do.
LONGEST_FIRST = ("test_stops.py", "test_remote.py", "test_sweep.py", "test_experiments_page.py", "test_docs.py",
                 "test_interrupt.py", "test_dag.py", "test_errors.py", "test_own_data.py", "test_queue.py",
                 "test_hostile.py", "test_mnist.py")  # test_stops.py: ~100 s of CPU (its drivers use both cores)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
