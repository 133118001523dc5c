"""The dropout noise: NumPy's Philox read as the formula the GPU kernel computes."""

from __future__ import annotations

import numpy as np
import pytest

from nn.model import Sequential
from nn.noise import Noise, draw_key, uint16_stream

MASK = (1 << 64) - 1


def philox4x64_10(key, counter):
    """Random123's Philox4x64-10 in plain integers: the rounds nn/kernels.py's PHILOX writes in CUDA."""
    c, (k0, k1) = list(counter), key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B97F4A7C15) & MASK, (k1 + 0xBB67AE8584CAA73B) & MASK
        p0, p1 = 0xD2E7470EE14C6C93 * c[0], 0xCA5A826395121157 * c[2]
        c = [(p1 >> 64) ^ c[1] ^ k0, p1 & MASK, (p0 >> 64) ^ c[3] ^ k1, p0 & MASK]
    return c


def number(key, stream, k):
    """Number k of `stream`, the way the kernel addresses it: block k // 16 (counter k // 16 + 1),
    word (k // 4) % 4, 16-bit part k % 4."""
    word = philox4x64_10(key, [k // 16 + 1, stream, 0, 0])[(k // 4) % 4]
    return (word >> (16 * (k % 4))) & 0xFFFF


@pytest.mark.parametrize("stream,start,count", [(0, 0, 40), (3, 5, 37), (7, 16 * 1000 + 3, 29)])
def test_the_stream_is_philox_addressed_as_the_kernel_does(stream, start, count):
    key = draw_key(np.random.default_rng(stream))
    got = uint16_stream(key, stream, start, count)
    assert got.dtype == np.uint16 and got.shape == (count,)
    assert got.tolist() == [number([int(k) for k in key], stream, start + i) for i in range(count)]


def test_a_step_reads_its_own_rows_of_the_epoch_stream():
    key, units, rows_per_step = draw_key(np.random.default_rng(1)), 12, 8
    epoch = uint16_stream(key, 4, 0, 5 * rows_per_step * units).reshape(-1, units)
    step = np.array([3], dtype=np.int32)
    noise = Noise(key, step, rows_per_step)
    np.testing.assert_array_equal(noise.host_bits(4, 5, units), epoch[24:29])  # a short last batch
    assert not np.array_equal(noise.host_bits(5, 5, units), epoch[24:29])  # another stream


def test_two_dropout_layers_draw_different_masks():
    spec = {"input_shape": [6], "layers": [{"kind": "dropout", "rate": 0.5}, {"kind": "dropout", "rate": 0.5}]}
    model = Sequential(spec, dtype=np.float64)
    first, second = model.layers
    assert (first.stream, second.stream) == (0, 1)
    noise = Noise(draw_key(np.random.default_rng(0)), np.zeros(1, np.int32), 64)
    x = np.ones((64, 6))
    a, b = first.forward(x, True, noise), second.forward(x, True, noise)
    assert not np.array_equal(a == 0, b == 0)
    np.testing.assert_array_equal(first.forward(x, True, noise), a)  # the same step: the same mask
