"""Fused CUDA kernels for the GPU training step, each replacing several NumPy-style passes.

On the CPU the layers, the loss and the optimisers run their NumPy code; on a GPU
they call these instead, so that a step is a few dozen kernels that read the
step's position from device memory (`step`, a (1,) int32 array) and can therefore
be captured once as a CUDA graph and replayed (nn/backend.py). Each kernel's
NumPy twin is named in its docstring; tests/test_kernels.py checks the pairs
agree on a GPU. The kernels are compiled by CuPy on first use, for float32 and
float64 alike (`T`).
"""

from __future__ import annotations

import functools

import numpy as np

# Philox4x64-10 (Salmon et al. 2011), as numpy.random.Philox computes it; see nn/noise.py.
PHILOX = r"""
__device__ unsigned int philox_uint16(unsigned long long k0, unsigned long long k1,
                                      unsigned long long stream, unsigned long long index) {
    unsigned long long c0 = index / 16 + 1, c1 = stream, c2 = 0, c3 = 0;
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { k0 += 0x9E3779B97F4A7C15ULL; k1 += 0xBB67AE8584CAA73BULL; }
        const unsigned long long hi0 = __umul64hi(0xD2E7470EE14C6C93ULL, c0), lo0 = 0xD2E7470EE14C6C93ULL * c0;
        const unsigned long long hi1 = __umul64hi(0xCA5A826395121157ULL, c2), lo1 = 0xCA5A826395121157ULL * c2;
        c0 = hi1 ^ c1 ^ k0; c1 = lo1; c2 = hi0 ^ c3 ^ k1; c3 = lo0;
    }
    const unsigned int word = (unsigned int)((index / 4) % 4);
    const unsigned long long w = word == 0 ? c0 : word == 1 ? c1 : word == 2 ? c2 : c3;
    return (unsigned int)((w >> (16 * (index % 4))) & 0xFFFFULL);
}
"""

SOFTMAX_XENT = r"""
extern "C" __global__ void softmax_xent(
        const real_t* logits, const int* labels, const int n, const int c, const real_t smoothing, const real_t inv_n,
        real_t* grad, const int want_grad, real_t* losses, int* correct, const int* slot) {
    __shared__ real_t loss_part[256];
    __shared__ int hit_part[256];
    const real_t off = smoothing / c, on = (real_t)1 - smoothing + off;  // the target: `on` for the label
    real_t loss = 0;
    int hits = 0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const real_t* row = logits + (long long)r * c;
        real_t top = row[0];
        int arg = 0;
        for (int j = 1; j < c; ++j) if (row[j] > top) { top = row[j]; arg = j; }
        real_t sum = 0;
        for (int j = 0; j < c; ++j) sum += exp(row[j] - top);
        const real_t log_sum = log(sum);
        const int label = labels[r];
        for (int j = 0; j < c; ++j) {
            const real_t log_p = row[j] - top - log_sum, target = j == label ? on : off;
            loss -= target * log_p;
            if (want_grad) grad[(long long)r * c + j] = (exp(log_p) - target) * inv_n;
        }
        hits += arg == label;
    }
    loss_part[threadIdx.x] = loss;
    hit_part[threadIdx.x] = hits;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {  // a fixed order: the same bits every run
        if (threadIdx.x < half) {
            loss_part[threadIdx.x] += loss_part[threadIdx.x + half];
            hit_part[threadIdx.x] += hit_part[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        losses[slot[0]] = loss_part[0] * inv_n;
        correct[slot[0]] = hit_part[0];
    }
}
"""
THREADS = 256  # SOFTMAX_XENT's block: a power of two, the size of its shared arrays


@functools.cache
def _kernels(xp):
    """Build (not yet compile) every kernel once per array module (cupy)."""
    ew = xp.ElementwiseKernel
    return {
        "gather": ew(
            "raw uint8 src, raw int32 perm, raw int8 dy, raw int8 dx, raw int32 step, int64 batch, int64 h,"
            " int64 w, int64 ch, T mean, T scale, int32 shifted", "T x",
            """
            const long long per = h * w * ch, b = i / per, p = i - b * per;
            const long long j = (long long)step[0] * batch + b;
            long long r = p / (w * ch), c = (p / ch) % w;
            if (shifted) { r -= dy[j]; c -= dx[j]; }
            const T v = (r >= 0 && r < h && c >= 0 && c < w)
                ? (T)src[(((long long)perm[j] * h + r) * w + c) * ch + p % ch] : (T)0;
            x = (v - mean) * scale;
            """, "nn_gather"),
        "labels": ew("raw int32 labels, raw int32 perm, raw int32 step, int64 batch", "int32 y",
                     "y = labels[perm[(long long)step[0] * batch + i]];", "nn_labels"),
        "dropout": ew(
            "T x, raw uint64 key, raw int32 step, int64 rows_per_step, int64 units, uint64 stream,"
            " uint32 threshold, T scale", "T y",
            """
            const unsigned long long k = (unsigned long long)step[0] * rows_per_step * units + i;
            y = philox_uint16(key[0], key[1], stream, k) >= threshold ? x * scale : (T)0;
            """, "nn_dropout", preamble=PHILOX),
        "relu_grad": ew("T g, T y", "T dx", "dx = y > (T)0 ? g : (T)0", "nn_relu_grad"),
        "adam": ew(
            "T g, raw float64 table, raw int32 step, int64 n_decayed, T b1, T b2, T wd, int32 decoupled",
            "T p, T m, T v",
            """
            const long long row = 3LL * step[0];
            T grad = g;
            if (i < n_decayed) {
                if (decoupled) p = p * (T)table[row];
                else grad = grad + p * wd;
            }
            m = b1 * m + grad;
            v = b2 * v + grad * grad;
            p = p - (T)table[row + 1] * (m / (sqrt(v) + (T)table[row + 2]));
            """, "nn_adam"),
        "sgd": ew(
            "T g, raw float64 table, raw int32 step, int64 n_decayed, T wd, T momentum, int32 nesterov",
            "T p, T vel",
            """
            T grad = g;
            if (i < n_decayed) grad = grad + p * wd;
            T update = grad;
            if (momentum != (T)0) {
                vel = momentum * vel + grad;
                update = nesterov ? grad + momentum * vel : vel;
            }
            p = p - (T)table[step[0]] * update;
            """, "nn_sgd"),
        "softmax_xent": {t: xp.RawKernel(f"typedef {t} real_t;\n{SOFTMAX_XENT}", "softmax_xent")
                         for t in ("float", "double")},
    }


def gather(backend, src, perm, dy, dx, step, batch: int, rows: int, mean, scale, dtype):
    """A batch of normalised inputs straight from the resident data: sample
    perm[step * batch + b], shifted by (dy, dx) of that position (zeros fill the
    border), then (x - mean) * scale.   src: (N, H, W[, C]) uint8 -> (rows, H, W[, C]).
    NumPy twin: nn.augment.shift_images on the epoch, then Sequential.normalized."""
    h, w = src.shape[1:3]
    ch = int(np.prod(src.shape[3:], dtype=np.int64))
    out = backend.xp.empty((rows, *src.shape[1:]), dtype=dtype)
    shifted = dy is not None
    if not shifted:
        dy = dx = backend.xp.zeros(1, dtype=np.int8)  # not read
    t = np.dtype(dtype).type
    return _kernels(backend.xp)["gather"](src, perm, dy, dx, step, batch, h, w, ch, t(mean), t(scale),
                                          int(shifted), out)


def gather_labels(backend, labels, perm, step, batch: int, rows: int):
    """labels[perm[step * batch + b]] for b < rows, as int32."""
    out = backend.xp.empty(rows, dtype=np.int32)
    return _kernels(backend.xp)["labels"](labels, perm, step, batch, out)


def dropout(backend, x, noise, stream: int, threshold: int, scale):
    """x * scale where the step's Philox number >= threshold, else 0. Its own gradient
    (the same mask, the same scale). NumPy twin: Dropout's host mask."""
    units = int(np.prod(x.shape[1:], dtype=np.int64))
    return _kernels(backend.xp)["dropout"](x, noise.key, noise.step, noise.rows_per_step, units, stream,
                                           threshold, scale)


def relu_grad(backend, grad, y):
    """grad where y > 0, else 0. NumPy twin: grad * (y > 0)."""
    return _kernels(backend.xp)["relu_grad"](grad, y)


def adam(backend, params, grads, m, v, table, step, n_decayed, b1, b2, weight_decay, decoupled):
    """One Adam / AdamW update over the flat buffers; the step's (decay, s, e) are row
    `step` of `table` (see nn.optim.Adam). NumPy twin: Adam.apply."""
    _kernels(backend.xp)["adam"](grads, table, step, n_decayed, b1, b2, weight_decay, int(decoupled),
                                 params, m, v)


def sgd(backend, params, grads, velocity, table, step, n_decayed, weight_decay, momentum, nesterov):
    """One SGD update over the flat buffers; the step's lr is `table[step]`. NumPy twin: SGD.apply."""
    _kernels(backend.xp)["sgd"](grads, table, step, n_decayed, weight_decay, momentum, int(nesterov),
                                params, velocity)


def softmax_xent(backend, logits, labels, smoothing, losses, correct, slot, want_grad=True):
    """Softmax cross-entropy of a batch in one block: writes the mean loss to
    losses[slot] and the count of correct argmax predictions to correct[slot], and
    returns (softmax - target) / n (or None). NumPy twin: SoftmaxCrossEntropy."""
    xp = backend.xp
    logits = xp.ascontiguousarray(logits)
    n, c = logits.shape
    t = logits.dtype.type
    grad = xp.empty_like(logits) if want_grad else logits  # not written without want_grad
    kernel = _kernels(xp)["softmax_xent"]["float" if logits.dtype == np.float32 else "double"]
    kernel((1,), (THREADS,), (logits, xp.ascontiguousarray(labels, dtype=np.int32), np.int32(n), np.int32(c),
                              t(smoothing), t(1.0 / n), grad, np.int32(want_grad), losses, correct, slot))
    return grad if want_grad else None
