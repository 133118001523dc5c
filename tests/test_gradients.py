"""float64 central-difference gradient checks against a random upstream gradient."""

from __future__ import annotations

import numpy as np
import pytest

from nn.losses import SoftmaxCrossEntropy
from nn.model import Sequential

EPS = 1e-6


def numeric_grad(f, array):
    """Central differences of scalar f() with respect to every entry of `array` (in place)."""
    grad = np.zeros(array.shape)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = float(flat[i])
        flat[i] = old + EPS
        up = float(f())
        flat[i] = old - EPS
        down = float(f())
        flat[i] = old
        gflat[i] = (up - down) / (2 * EPS)
    return grad


def away_from_kinks(rng, shape, margin=0.1):
    """Values in +-[margin, 1.5]: no ReLU / LeakyReLU kink within a finite-difference step."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(margin, 1.5, size=shape)


def single_layer(cfg, in_shape, backend, rng):
    model = Sequential({"input_shape": list(in_shape), "layers": [cfg]}, backend=backend, dtype=np.float64)
    model.init_params(rng)
    # a non-zero bias makes the check see it; keep the input gradient on for the check
    model.set_flat(backend.to_host(model.params_flat) + rng.normal(0, 0.1, model.n_params))
    layer = model.layers[0]
    layer.needs_input_grad = True
    return model, layer


def check_layer(cfg, in_shape, backend, rng, batch=4, seed=7, training=False):
    model, layer = single_layer(cfg, in_shape, backend, rng)
    xp = backend.xp
    x = xp.asarray(away_from_kinks(rng, (batch, *in_shape)))

    def forward():
        return layer.forward(x, training=training, rng=np.random.default_rng(seed))

    upstream = xp.asarray(rng.normal(size=forward().shape))

    def objective():
        return (forward() * upstream).sum()

    forward()
    dx = backend.to_host(layer.backward(upstream.copy()))
    grads = {k: backend.to_host(v).copy() for k, v in layer.grads.items()}

    x_host = backend.to_host(x)
    for name, array in [("x", x)] + list(layer.params.items()):
        expected = numeric_grad(objective, array)
        got = dx if name == "x" else grads[name]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=f"{cfg['kind']}: d/d{name}")
    np.testing.assert_array_equal(backend.to_host(x), x_host)  # forward/backward left x intact


LAYER_CASES = [
    ({"kind": "dense", "units": 5}, (7,)),
    ({"kind": "dense", "units": 3, "init": "glorot"}, (4,)),
    ({"kind": "flatten"}, (2, 3)),
    ({"kind": "relu"}, (6,)),
    ({"kind": "leaky_relu", "alpha": 0.1}, (6,)),
    ({"kind": "sigmoid"}, (6,)),
    ({"kind": "tanh"}, (6,)),
    ({"kind": "reshape", "shape": [3, 2, 1]}, (6,)),
    ({"kind": "conv2d", "filters": 3, "kernel": 3, "stride": 1, "padding": 0}, (5, 5, 2)),
    ({"kind": "conv2d", "filters": 2, "kernel": 3, "stride": 1, "padding": 1}, (4, 5, 1)),
    ({"kind": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": 1}, (6, 5, 3)),
    ({"kind": "conv2d", "filters": 2, "kernel": 2, "stride": 2, "padding": 0}, (6, 6, 4)),
    ({"kind": "maxpool2d", "size": 2}, (4, 4, 3)),
    ({"kind": "maxpool2d", "size": 2}, (5, 7, 2)),
    ({"kind": "maxpool2d", "size": 3}, (6, 6, 1)),
]


def case_id(case):
    cfg, shape = case
    extra = "-".join(f"{k[0]}{v}" for k, v in cfg.items() if k not in ("kind", "shape", "init"))
    return f"{cfg['kind']}-{'x'.join(map(str, shape))}{'-' + extra if extra else ''}"


@pytest.mark.parametrize("cfg,in_shape", LAYER_CASES, ids=[case_id(c) for c in LAYER_CASES])
def test_layer_gradients(cfg, in_shape, backend, rng):
    check_layer(cfg, in_shape, backend, rng)


def test_dropout_gradient_in_training(backend, rng):
    check_layer({"kind": "dropout", "rate": 0.4}, (10,), backend, rng, training=True)


def test_dropout_drops_and_rescales(backend, rng):
    _, layer = single_layer({"kind": "dropout", "rate": 0.25}, (1000,), backend, rng)
    x = backend.xp.ones((20, 1000))
    y = backend.to_host(layer.forward(x, training=True, rng=rng))
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_array_equal(backend.to_host(layer.forward(x, training=False)), 1.0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_gradient(smoothing, backend, rng):
    xp = backend.xp
    logits = xp.asarray(rng.normal(0, 3, size=(5, 4)))
    labels = xp.asarray(rng.integers(0, 4, 5))
    loss = SoftmaxCrossEntropy(backend, smoothing=smoothing)
    scale = rng.normal()  # the (scalar) upstream gradient
    loss.forward(logits, labels)
    got = backend.to_host(loss.backward()) * scale
    expected = numeric_grad(lambda: loss.forward(logits, labels) * scale, logits)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend):
    xp = backend.xp
    logits = xp.asarray([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], dtype=xp.float32)
    loss = SoftmaxCrossEntropy(backend)
    value = float(loss.forward(logits, xp.asarray([0, 1])))
    assert np.isfinite(value)
    assert value == pytest.approx(np.log(3) / 2, rel=1e-5)
    assert np.all(np.isfinite(backend.to_host(loss.backward())))


def check_model_gradient(spec, x, backend, rng, rtol):
    """A whole model: the flat gradient buffer after backward matches central differences."""
    model = Sequential(spec, backend=backend, dtype=np.float64)
    model.init_params(rng)
    x, y = backend.xp.asarray(x), backend.xp.asarray(rng.integers(0, 10, len(x)))
    loss = SoftmaxCrossEntropy(backend)
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    got = backend.to_host(model.grads_flat).copy()
    expected = numeric_grad(lambda: loss.forward(model.forward(x), y), model.params_flat)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-7)


def test_whole_mlp_gradient(backend, rng):
    from nn.model import mlp_spec

    check_model_gradient(mlp_spec((3, 2), [5, 4], activation="tanh"), rng.normal(size=(6, 3, 2)), backend, rng,
                         rtol=1e-5)


def test_whole_cnn_gradient(backend, rng):
    """conv -> pool -> relu -> flatten -> dense -> relu -> dense."""
    from nn.model import cnn_spec

    check_model_gradient(cnn_spec((6, 6), [2], [5]), away_from_kinks(rng, (3, 6, 6)), backend, rng, rtol=1e-4)


@pytest.mark.parametrize("channels", [1, 3])
def test_whole_cnn_gradient_with_a_channel_axis(channels, backend, rng):
    """(H, W, C) inputs, as fetch.dataset folder makes them (C = 3: RGB): no Reshape, the first
    convolution reads the C channels; two conv blocks, the second on 3 filters."""
    from nn.model import cnn_spec

    spec = cnn_spec((8, 6, channels), [3, 2], [4])
    assert spec["layers"][0]["kind"] == "conv2d"
    check_model_gradient(spec, away_from_kinks(rng, (3, 8, 6, channels)), backend, rng, rtol=1e-4)


def test_maxpool_ties_go_to_the_first_maximum(backend, rng):
    _, layer = single_layer({"kind": "maxpool2d", "size": 2}, (2, 2, 1), backend, rng)
    x = backend.xp.ones((1, 2, 2, 1))
    assert float(layer.forward(x).reshape(-1)[0]) == 1.0
    grad = backend.to_host(layer.backward(backend.xp.full((1, 1, 1, 1), 5.0)))
    np.testing.assert_array_equal(grad.reshape(-1), [5.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("size", [2, 3])
def test_maxpool_gradient_matches_a_window_by_window_reference(size, backend, rng):
    """Many exact ties (values rounded to 0.5): each window's gradient goes to np.argmax's
    choice, the first maximum in row-major order."""
    n, h, w, c = 2, 3 * size + 1, 2 * size, 3
    x = (rng.normal(size=(n, h, w, c)) * 2).round() / 2
    _, layer = single_layer({"kind": "maxpool2d", "size": size}, (h, w, c), backend, rng)
    y = backend.to_host(layer.forward(backend.xp.asarray(x)))
    upstream = rng.normal(size=y.shape)
    dx = backend.to_host(layer.backward(backend.xp.asarray(upstream)))
    expected = np.zeros_like(x)
    for b, i, j, ch in np.ndindex(*y.shape):
        window = x[b, i * size:(i + 1) * size, j * size:(j + 1) * size, ch]
        assert y[b, i, j, ch] == window.max()
        r, s = np.unravel_index(np.argmax(window), window.shape)
        expected[b, i * size + r, j * size + s, ch] = upstream[b, i, j, ch]
    np.testing.assert_array_equal(dx, expected)


def test_pool_then_relu_is_relu_then_pool_exactly(backend, rng):
    """cnn_spec pools before the ReLU; forward and backward must equal the usual order bit for bit,
    ties included (an image with flat regions and all-negative windows)."""
    xp = backend.xp
    x = rng.normal(size=(3, 6, 8, 2)).round(1)  # rounding makes many exact ties
    x[0, :4] = -0.5  # windows that are all equal and negative
    x[1, :, :4] = 0.7  # windows that are all equal and positive
    upstream = rng.normal(size=(3, 3, 4, 2))
    results = []
    for order in (["maxpool2d", "relu"], ["relu", "maxpool2d"]):
        layers = [{"kind": kind, "size": 2} if kind == "maxpool2d" else {"kind": kind} for kind in order]
        model = Sequential({"input_shape": [6, 8, 2], "layers": layers}, backend=backend, dtype=np.float64)
        for layer in model.layers:
            layer.needs_input_grad = True
        y = model.forward(xp.asarray(x))
        grad = upstream
        for layer in reversed(model.layers):
            grad = layer.backward(xp.asarray(grad))
        results.append((backend.to_host(y), backend.to_host(grad)))
    (y1, g1), (y2, g2) = results
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(g1, g2)
    assert (g1 != 0).any() and (g1 == 0).any()


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0)])
def test_conv_in_blocks_equals_conv_in_one_piece(stride, padding, backend, rng):
    """Working through the batch in cache-sized blocks changes nothing but float rounding."""
    import dataclasses

    cfg = {"kind": "conv2d", "filters": 4, "kernel": 3, "stride": stride, "padding": padding}
    x = rng.normal(size=(7, 9, 8, 3))
    results = []
    for block_bytes in (None, 1):  # 1 byte: every image is a block of its own
        model, layer = single_layer(cfg, (9, 8, 3), dataclasses.replace(backend, block_bytes=block_bytes),
                                    np.random.default_rng(0))
        assert len(layer._blocks(7)) == (1 if block_bytes is None else 7)
        y = layer.forward(backend.xp.asarray(x))
        upstream = backend.xp.asarray(np.random.default_rng(1).normal(size=y.shape))
        dx = layer.backward(upstream)
        results.append([backend.to_host(a) for a in (y, dx, layer.grads["W"], layer.grads["b"])])
    for one, blocked in zip(*results):
        np.testing.assert_allclose(blocked, one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels,stride,padding", [(1, 1, 1), (3, 1, 1), (8, 2, 0), (16, 1, 2)])
def test_the_column_matrix_is_the_windows_of_the_input(channels, stride, padding, backend, rng):
    """im2col, whichever way it copies (one strided copy for many channels, slice copies for
    few): row (n, y, x) holds the kernel-sized window at (y * stride, x * stride), then a 1."""
    cfg = {"kind": "conv2d", "filters": 2, "kernel": 3, "stride": stride, "padding": padding}
    x = rng.normal(size=(3, 9, 8, channels))
    _, layer = single_layer(cfg, x.shape[1:], backend, rng)
    xpad = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    scratch = layer._scratch(layer._blocks(3), np.float64)
    cols = backend.to_host(layer._im2col(backend.xp.asarray(xpad), scratch))
    ho, wo, _ = layer.out_shape
    expected = [np.append(xpad[n, y * stride:y * stride + 3, v * stride:v * stride + 3].reshape(-1), 1.0)
                for n in range(3) for y in range(ho) for v in range(wo)]
    np.testing.assert_array_equal(cols, np.array(expected))


def test_dense_memory_order_changes_nothing_but_rounding(backend, rng):
    """Dense stores its outputs column-major on the CPU and row-major on a GPU
    (Backend.dense_order); both layouts give the same numbers."""
    import dataclasses

    from nn.model import mlp_spec

    x = rng.normal(size=(9, 4, 5))
    labels = backend.xp.asarray(rng.integers(0, 10, 9))
    results = []
    for order in ("C", "F"):
        model = Sequential(mlp_spec((4, 5), [7, 6]), backend=dataclasses.replace(backend, dense_order=order),
                           dtype=np.float64)
        model.init_params(np.random.default_rng(0))
        loss = SoftmaxCrossEntropy(model.backend)
        logits = model.forward(backend.xp.asarray(x))
        loss.forward(logits, labels)
        model.backward(loss.backward())
        assert logits.flags[f"{order}_CONTIGUOUS"] and not logits.flags[f"{'CF'[order == 'C']}_CONTIGUOUS"]
        results.append((backend.to_host(logits), backend.to_host(model.grads_flat).copy()))
    for c_order, f_order in zip(*results):
        np.testing.assert_allclose(f_order, c_order, rtol=1e-12, atol=1e-14)


def test_relu_reuses_its_zeros_only_for_a_matching_input(backend, rng):
    """On the CPU ReLU keeps an array of zeros between calls (see nn.activations.ReLU); inputs that
    change shape, memory order or dtype between calls must still give exactly max(x, 0). A GPU keeps
    none (a captured CUDA graph could outlive it) and must give the same answers."""
    from nn.activations import ReLU

    xp = backend.xp
    relu = ReLU()
    relu.bind(backend, {}, {})
    base = rng.normal(size=(6, 5))
    inputs = [base, np.asfortranarray(base), base[:4], base.T, base.astype(np.float32), base[::2], base]
    for x in inputs:
        y = backend.to_host(relu.forward(xp.asarray(x)))
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, np.maximum(x, 0))
    if backend.is_gpu:
        assert relu.zeros is None
    else:
        assert relu.zeros.shape == base.shape and not backend.to_host(relu.zeros).any()
