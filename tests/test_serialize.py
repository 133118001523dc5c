"""Save / load round trip, byte-identical saves, and every strict-load error."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from nn import serialize
from nn.model import Sequential, mlp_spec


@pytest.fixture
def model(rng):
    spec = mlp_spec((4, 4), [8, 6], dropout=0.2, n_classes=3)
    spec.update(normalize={"mean": 10.0, "std": 20.0}, classes=["a", "b", "c"])
    m = Sequential(spec)
    m.init_params(rng)
    return m


def rewrite(src, dst, drop=(), add=None, change=None):
    """Copy an npz, dropping / adding / replacing entries (to make broken files)."""
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    arrays.update(add or {})
    arrays.update(change or {})
    np.savez(dst, **arrays)


def test_round_trip(model, tmp_path, rng, backend):
    path = tmp_path / "m.npz"
    serialize.save(model, path)
    loaded = serialize.load(path, backend=backend)
    assert loaded.spec == model.spec
    assert loaded.classes == ["a", "b", "c"]
    x = rng.integers(0, 256, (5, 4, 4)).astype(np.uint8)
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-5, atol=1e-6)
    for name, value in model.named_parameters().items():
        np.testing.assert_array_equal(loaded.named_parameters()[name], value)


def test_cnn_round_trip(tmp_path, rng, backend):
    from nn.model import cnn_spec

    model = Sequential(dict(cnn_spec((6, 6), [3], [4]), normalize={"mean": 1.0, "std": 2.0}))
    model.init_params(rng)
    serialize.save(model, tmp_path / "c.npz")
    serialize.save(model, tmp_path / "d.npz")
    assert (tmp_path / "c.npz").read_bytes() == (tmp_path / "d.npz").read_bytes()
    loaded = serialize.load(tmp_path / "c.npz", backend=backend)
    x = rng.integers(0, 256, (4, 6, 6)).astype(np.uint8)
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-5, atol=1e-6)
    assert [layer.kind for layer in loaded.layers][:4] == ["reshape", "conv2d", "maxpool2d", "relu"]


def test_saving_twice_is_byte_identical(model, tmp_path):
    serialize.save(model, tmp_path / "a.npz")
    serialize.save(model, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_file_is_a_plain_npz_without_pickles(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        assert set(npz.files) == {"__spec__", *model.slices}
        assert json.loads(npz["__spec__"].tobytes())["format"] == serialize.FORMAT_VERSION


def expect_error(path, pattern):
    with pytest.raises(ValueError, match=pattern):
        serialize.load(path)


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.npz", "no such model file")


def test_truncated_file(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "t.npz", "not a (readable )?model file")


def test_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_text("hello, I am text")
    expect_error(tmp_path / "x.npz", "not a (readable )?model file")


def test_single_npy_is_not_a_model(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    expect_error(tmp_path / "x.npy", "not a model")


def test_unknown_format_version(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    spec = dict(model.spec, format=99)
    blob = np.frombuffer(json.dumps(spec).encode(), np.uint8)
    rewrite(tmp_path / "m.npz", tmp_path / "v.npz", change={"__spec__": blob})
    expect_error(tmp_path / "v.npz", "unknown model format version 99")


def test_missing_spec(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", tmp_path / "s.npz", drop=["__spec__"])
    expect_error(tmp_path / "s.npz", "missing array '__spec__'")


def test_missing_array(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", tmp_path / "x.npz", drop=["1.dense.b"])
    expect_error(tmp_path / "x.npz", "missing array '1.dense.b'")


def test_extra_array(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", tmp_path / "x.npz", add={"9.dense.W": np.zeros(2, np.float32)})
    expect_error(tmp_path / "x.npz", "unexpected array '9.dense.W'")


def test_wrong_shape(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", tmp_path / "x.npz", change={"1.dense.W": np.zeros((3, 3), np.float32)})
    expect_error(tmp_path / "x.npz", r"array '1.dense.W' has shape \(3, 3\)")


def test_wrong_dtype(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", tmp_path / "x.npz", change={"1.dense.b": np.zeros(8, np.float64)})
    expect_error(tmp_path / "x.npz", "array '1.dense.b' has shape .* float64")


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_renamed_to_npz_is_never_executed(tmp_path):
    marker = tmp_path / "payload-ran"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps(Payload(str(marker))))
    expect_error(tmp_path / "evil.npz", r"not a model file \(neither an \.npz archive nor an \.npy array")
    assert not marker.exists()


def test_a_text_file_is_not_a_model_and_the_message_does_not_suggest_unpickling(tmp_path):
    (tmp_path / "README.md").write_text("# not a model\n")
    with pytest.raises(ValueError) as caught:
        serialize.load(tmp_path / "README.md")
    assert "not a model file" in str(caught.value) and "allow_pickle" not in str(caught.value)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_pickled_array_inside_npz_is_refused(model, tmp_path):
    serialize.save(model, tmp_path / "m.npz")
    marker = tmp_path / "payload-ran"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([Payload(str(marker))], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "m.npz", "a") as zf:
        zf.writestr("1.dense.W.npy", buf.getvalue())  # shadows the real entry
    expect_error(tmp_path / "m.npz", "not a model file|pickle")
    assert not marker.exists()
