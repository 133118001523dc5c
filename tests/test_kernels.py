"""Each fused GPU kernel against the NumPy code it replaces, and the graph machinery (GPU only)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nn import kernels
from nn.augment import draw_shifts, shift_images
from nn.layers import Dropout
from nn.losses import SoftmaxCrossEntropy
from nn.noise import Noise, draw_key
from nn.optim import SGD, Adam, AdamW


def test_dropout_kernel_uses_the_host_mask(gpu, rng):
    key, step = draw_key(rng), np.array([3], np.int32)
    layer = Dropout(0.3)
    layer.stream = 5
    x = rng.normal(size=(100, 48)).astype(np.float32)
    host = Noise(key, step, 128)
    expected = x * (host.host_bits(5, 100, 48) >= layer.threshold) * np.float32(1 / 0.7)
    layer.bind(gpu, {}, {})
    device_noise = Noise(gpu.to_device(key), gpu.to_device(step), 128)
    got = gpu.to_host(layer.forward(gpu.to_device(x), True, device_noise))
    np.testing.assert_array_equal(got, expected)
    grad = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(gpu.to_host(layer.backward(gpu.to_device(grad))),
                                  grad * (expected != 0) * np.float32(1 / 0.7))


@pytest.mark.parametrize("channels,shift", [(None, 2), (None, 0), (3, 1)])
def test_gather_equals_shifting_the_epoch_then_normalising(gpu, rng, channels, shift):
    shape = (60, 9, 7) + ((channels,) if channels else ())
    src = rng.integers(0, 256, shape, dtype=np.uint8)
    labels = rng.integers(0, 10, 60).astype(np.int32)
    perm = rng.permutation(60)
    dy, dx = draw_shifts(60, shift, rng) if shift else (None, None)
    epoch = shift_images(src[perm], dy, dx) if shift else src[perm]
    expected = (epoch[32:48].astype(np.float32) - np.float32(33.3)) * np.float32(1 / 78.6)
    d = gpu.to_device
    step = d(np.array([2], np.int32))
    dyd, dxd = (d(dy.astype(np.int8)), d(dx.astype(np.int8))) if shift else (None, None)
    got = kernels.gather(gpu, d(src), d(perm.astype(np.int32)), dyd, dxd, step, 16, 16, 33.3, 1 / 78.6,
                         np.float32)
    np.testing.assert_array_equal(gpu.to_host(got), expected)
    got_labels = kernels.gather_labels(gpu, d(labels), d(perm.astype(np.int32)), step, 16, 16)
    np.testing.assert_array_equal(gpu.to_host(got_labels), labels[perm][32:48])


@pytest.mark.parametrize("n,smoothing,dtype", [(128, 0.0, np.float32), (1000, 0.1, np.float64),
                                               (37, 0.0, np.float64)])
def test_softmax_xent_kernel_matches_the_numpy_loss(gpu, rng, n, smoothing, dtype):
    logits = (rng.normal(size=(n, 10)) * 4).astype(dtype)
    labels = rng.integers(0, 10, n).astype(np.int32)
    ref = SoftmaxCrossEntropy(smoothing=smoothing)
    loss, grad = float(ref.forward(logits, labels)), ref.backward()
    losses, correct = gpu.xp.zeros(3, dtype), gpu.xp.zeros(3, np.int32)
    slot = gpu.to_device(np.array([1], np.int32))
    dev = SoftmaxCrossEntropy(gpu, smoothing=smoothing)
    got = dev.forward_backward(gpu.to_device(logits), gpu.to_device(labels), losses, correct, slot)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(gpu.to_host(got), grad, rtol=10 * tol, atol=tol)
    assert gpu.to_host(losses)[1] == pytest.approx(loss, rel=tol)
    assert gpu.to_host(correct).tolist() == [0, int((logits.argmax(1) == labels).sum()), 0]


@pytest.mark.parametrize("cls,kw", [(Adam, {"weight_decay": 0.3}), (AdamW, {"weight_decay": 0.3}), (Adam, {}),
                                    (SGD, {"momentum": 0.9, "nesterov": True}), (SGD, {"weight_decay": 0.2})])
def test_fused_optimiser_steps_match_the_numpy_passes(gpu, rng, cls, kw):
    n, nd = 1000, 700
    p0, grads = rng.normal(size=n), [rng.normal(size=n) for _ in range(3)]
    results = []
    for backend in (None, gpu):
        xp = np if backend is None else backend.xp
        params, g = xp.asarray(p0.copy()), xp.zeros(n)
        opt = cls(params, g, n_decayed=nd, **kw) if backend is None else cls(params, g, n_decayed=nd, backend=gpu, **kw)
        for lr, gg in zip((0.01, 0.02, 0.005), grads):
            g[...] = xp.asarray(gg)
            opt.step(lr)
        results.append(params if backend is None else gpu.to_host(params))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-10, atol=1e-14)


def test_relu_grad_kernel(gpu, rng):
    g, y = rng.normal(size=(30, 20)).astype(np.float32), np.maximum(rng.normal(size=(30, 20)), 0).astype(np.float32)
    np.testing.assert_array_equal(gpu.to_host(kernels.relu_grad(gpu, gpu.to_device(g), gpu.to_device(y))),
                                  g * (y > 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_takes_row_and_column_major_operands(gpu, rng, dtype):
    a, b = rng.normal(size=(37, 19)).astype(dtype), rng.normal(size=(19, 11)).astype(dtype)
    for da in (gpu.to_device(a), gpu.xp.asfortranarray(gpu.to_device(a)), gpu.to_device(a.T.copy()).T):
        for db in (gpu.to_device(b), gpu.xp.asfortranarray(gpu.to_device(b)), gpu.to_device(b.T.copy()).T):
            out = gpu.xp.empty((37, 11), dtype=dtype)
            gpu.matmul(da, db, out=out)
            tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12}  # fp32 sums of 19
            np.testing.assert_allclose(gpu.to_host(out), a @ b, **tol)


def test_a_step_graph_is_captured_then_replayed(gpu):
    xp = gpu.xp
    with gpu.session():
        counter, total = xp.zeros(1, np.int32), xp.zeros(4, np.float32)
        weights = xp.arange(4, dtype=np.float32)

        def step():
            total[...] += weights * (counter + 1).astype(np.float32)  # allocates temporaries: kept by the graph
            counter[...] += 1

        graph = gpu.graph(step)
        for _ in range(5):
            graph()
        garbage = [xp.full(64, 7, np.float32) for _ in range(50)]  # reuses freed memory, if any was freed
        graph()
    assert (graph.calls, graph.replays, graph.failed) == (6, 5, False)
    assert int(counter[0]) == 6
    np.testing.assert_array_equal(gpu.to_host(total), np.arange(4) * sum(range(1, 7)))
    del garbage


def test_without_graphs_every_call_is_eager(gpu):
    eager = dataclasses.replace(gpu, use_graphs=False)
    calls = []
    with eager.session():
        graph = eager.graph(lambda: calls.append(1))
        for _ in range(3):
            graph()
    assert (graph.calls, graph.replays, len(calls)) == (3, 0, 3)
