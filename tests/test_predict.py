"""predict on your own images: preprocessing like MNIST's, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nn import serialize
from nn.model import Sequential, mlp_spec
from stages.predict import to_input
from tests.project import ROOT, env


def predict(*args):
    return subprocess.run([sys.executable, "-m", "stages.predict", *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True)


def digit(size=28):
    """A synthetic '1'-like stroke on black, ink bright."""
    img = np.zeros((size, size), np.uint8)
    img[6:22, 12:16] = 255
    return img


def test_preprocessing_inverts_crops_scales_and_centres(tmp_path):
    canvas = np.full((120, 90), 250, np.uint8)  # light paper
    canvas[10:58, 5:17] = 10  # dark ink, far off-centre, 48x12
    Image.fromarray(canvas).save(tmp_path / "a.png")
    x = to_input(tmp_path / "a.png", (28, 28))
    assert x.shape == (28, 28) and x.dtype == np.uint8
    rows, cols = np.nonzero(x > 40)
    assert rows.max() - rows.min() + 1 in (20, 21)  # the longer side scaled to 20 px
    com = np.array([(np.arange(28) * x.sum(axis=1 - i)).sum() for i in (0, 1)]) / x.sum()
    assert np.all(np.abs(com - 14) <= 1.0)  # centred by centre of mass
    assert x[0].max() == 0 and x[:, 0].max() == 0  # black background


def test_dark_background_is_not_inverted(tmp_path):
    Image.fromarray(digit(60)).save(tmp_path / "b.png")
    x = to_input(tmp_path / "b.png", (28, 28))
    assert x[14, 14] > 200 and x[0, 0] == 0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    spec = mlp_spec((28, 28), [8])
    spec.update(normalize={"mean": 33.0, "std": 78.0}, classes=[str(i) for i in range(10)])
    model = Sequential(spec)
    model.init_params(np.random.default_rng(0))
    path = tmp_path_factory.mktemp("m") / "model.npz"
    serialize.save(model, path)
    return path


def test_prints_top3_and_json(model_path, tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")
    out = predict(tmp_path / "d.png", "--model", model_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{tmp_path / 'd.png'}: ") and out.stdout.count("(") == 3
    out = predict(tmp_path / "d.png", "--model", model_path, "--json")
    result = json.loads(out.stdout)
    assert len(result[0]["top"]) == 3
    assert sum(t["probability"] for t in result[0]["top"]) <= 1.0 + 1e-6


def one_error_line(proc, pattern):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], proc.stderr


def test_missing_model(tmp_path):
    Image.fromarray(digit()).save(tmp_path / "d.png")
    one_error_line(predict(tmp_path / "d.png", "--model", tmp_path / "none.npz"), "no such model file")


def test_not_an_image(model_path, tmp_path):
    (tmp_path / "x.png").write_text("I am not a PNG")
    one_error_line(predict(tmp_path / "x.png", "--model", model_path), "x.png: not an image")


def test_empty_image(model_path, tmp_path):
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "blank.png")
    one_error_line(predict(tmp_path / "blank.png", "--model", model_path), "blank.png: the image is empty")


def test_missing_image(model_path, tmp_path):
    one_error_line(predict(tmp_path / "nope.png", "--model", model_path), "nope.png: no such file")
