"""Convolution layers, channels-last: x: (N, H, W, C).

Conv2D is im2col + a matrix multiply. The column matrix is filled by one copy
from a strided view of the input's windows, and the backward col2im is kh*kw
strided slice additions - no per-element loops and no `add.at`, and the same
code on NumPy and CuPy. The column matrix carries a last column of ones, so the
product with [W; b] adds the bias and its transpose gives db with dW. On the
CPU the batch is worked through in blocks whose column matrix fits in cache
(`Backend.block_bytes`); backward rebuilds each block's columns from the padded
input instead of keeping the whole matrix, which is both lighter on memory and
faster. On a GPU one block is the whole batch.
"""

from __future__ import annotations

import math

import numpy as np

from nn.layers import Layer


def out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def window(i: int, j: int, stride: int, ho: int, wo: int) -> tuple:
    """The strided view (over N, H, W) that kernel offset (i, j) sees at each of the
    ho x wo output positions. Shared by Conv2D and MaxPool2D."""
    return (slice(None), slice(i, i + stride * (ho - 1) + 1, stride), slice(j, j + stride * (wo - 1) + 1, stride))


class Reshape(Layer):
    """(N, *a) -> (N, *shape), e.g. (N, 28, 28) -> (N, 28, 28, 1); a view."""

    kind = "reshape"

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def config(self) -> dict:
        return {"shape": list(self.shape)}

    def build(self, in_shape):
        if math.prod(in_shape) != math.prod(self.shape):
            raise ValueError(f"cannot reshape {tuple(in_shape)} to {self.shape}")
        self.in_shape, self.out_shape = tuple(in_shape), self.shape
        return self.out_shape

    def forward(self, x, training=False, rng=None):
        return x.reshape((x.shape[0], *self.shape))

    def backward(self, grad):
        return grad.reshape((grad.shape[0], *self.in_shape)) if self.needs_input_grad else None


class Conv2D(Layer):
    """2-D convolution (cross-correlation), He-initialised.

    x: (N, H, W, C) -> y: (N, Ho, Wo, filters); W: (kh * kw * C, filters), b: (filters,)
    """

    kind = "conv2d"
    decayed = ("W",)

    def __init__(self, filters: int, kernel: int = 3, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        for name, value, low in (("filters", filters, 1), ("kernel", kernel, 1), ("stride", stride, 1),
                                 ("padding", padding, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"Conv2D {name} must be an int >= {low} (got {value!r})")
        self.filters, self.kernel, self.stride, self.padding = filters, kernel, stride, padding

    def config(self) -> dict:
        return {"filters": self.filters, "kernel": self.kernel, "stride": self.stride, "padding": self.padding}

    def build(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"Conv2D needs (N, H, W, C) input, got per-sample shape {in_shape}")
        h, w, c = in_shape
        k, s, p = self.kernel, self.stride, self.padding
        ho, wo = out_size(h, k, s, p), out_size(w, k, s, p)
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2D kernel {k} does not fit input {h}x{w} with padding {p}")
        self.in_shape, self.out_shape = tuple(in_shape), (ho, wo, self.filters)
        self.param_shapes = {"W": (k * k * c, self.filters), "b": (self.filters,)}
        self.n_columns = k * k * c + 1  # of the column matrix: one per (i, j, channel), then the ones
        return self.out_shape

    def init_params(self, rng):
        fan_in = self.param_shapes["W"][0]
        return {"W": rng.standard_normal(self.param_shapes["W"]) * math.sqrt(2.0 / fan_in),
                "b": np.zeros(self.filters)}

    def _windows(self):
        """For each kernel offset (i, j): its columns in the column matrix (one per input
        channel), and the strided slice of the padded input it sees."""
        k, s = self.kernel, self.stride
        ho, wo, c = (*self.out_shape[:2], self.in_shape[2])
        for i in range(k):
            for j in range(k):
                start = (i * k + j) * c
                yield slice(start, start + c), window(i, j, s, ho, wo)

    def _blocks(self, n: int):
        """Slices of the batch whose column matrices fit in `block_bytes` (at least one image)."""
        ho, wo, _ = self.out_shape
        row_bytes = self.n_columns * self.params["W"].dtype.itemsize
        step = n if self.backend.block_bytes is None else max(1, self.backend.block_bytes // (ho * wo * row_bytes))
        return [slice(b, min(b + step, n)) for b in range(0, n, step)]

    def _im2col(self, xpad, out):
        """Fill `out` (a scratch buffer) with the column matrix of the padded images
        `xpad` - one row per output pixel; columns (i, j, channel) for kernel offset
        (i, j), then a column of ones, so one product with [W; b] adds the bias too.

        With many channels, one copy: the windows of `xpad` as a strided view (n, ho, wo, kh,
        kw, C) into the same view of the columns (the second convolution's batch of 128: 2.3
        against 6-17 ms on the 2-core development VM); it runs kw * C values at a time. When
        that is shorter than an output row (wo values: a first layer with C = 1 or 3), kh * kw
        slice copies, one per kernel offset, run longer and are faster (3.4 against 5.6 ms)."""
        n = xpad.shape[0]
        ho, wo, _ = self.out_shape
        k, s, c = self.kernel, self.stride, self.in_shape[2]
        rows = out[: n * ho * wo]
        if k * c < wo:
            cols = rows.reshape(n, ho, wo, -1)  # leading rows of a C-ordered buffer: always a view
            for columns, window in self._windows():
                cols[:, :, :, columns] = xpad[window]
            cols[:, :, :, -1] = 1
            return rows
        strided = self.xp.lib.stride_tricks.as_strided
        sn, sh, sw, sc = xpad.strides
        windows = strided(xpad, (n, ho, wo, k, k, c), (sn, s * sh, s * sw, sh, sw, sc))
        row, item = rows.strides
        columns = strided(rows, (n, ho, wo, k, k, c), (ho * wo * row, wo * row, row, k * c * item, c * item, item))
        self.xp.copyto(columns, windows)
        rows[:, -1] = 1
        return rows

    def _scratch(self, blocks, dtype):
        """Room for the first (the biggest) block's column matrix, plus the ones column."""
        ho, wo, _ = self.out_shape
        rows = (blocks[0].stop - blocks[0].start) * ho * wo
        return self.xp.empty((rows, self.n_columns), dtype=dtype)

    def _w_and_b(self):
        """[W; b]: (kh * kw * C + 1, filters)."""
        return self.xp.concatenate([self.params["W"], self.params["b"][None, :]])

    def forward(self, x, training=False, rng=None):
        xp, p = self.xp, self.padding
        n = x.shape[0]
        ho, wo, f = self.out_shape
        self.xpad = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x
        blocks = self._blocks(n)
        scratch, w_and_b = self._scratch(blocks, x.dtype), self._w_and_b()
        y = xp.empty((n, ho, wo, f), dtype=x.dtype)
        for block in blocks:
            cols = self._im2col(self.xpad[block], scratch)
            self.backend.matmul(cols, w_and_b, out=y[block].reshape(-1, f))
        return y

    def backward(self, grad):
        xp, p = self.xp, self.padding
        n, ho, wo, f = grad.shape
        h, w, _ = self.in_shape
        g = grad.reshape(n * ho * wo, f)
        dxpad = xp.zeros(self.xpad.shape, dtype=grad.dtype) if self.needs_input_grad else None
        blocks = self._blocks(n)
        scratch, w_and_b = self._scratch(blocks, grad.dtype), self._w_and_b()
        for block in blocks:
            cols = self._im2col(self.xpad[block], scratch)
            gb = g[block.start * ho * wo: block.stop * ho * wo]
            if block.start == 0:  # [dW; db], summed over the blocks
                grad_w_and_b = self.backend.matmul(cols.T, gb)
            else:
                grad_w_and_b += self.backend.matmul(cols.T, gb)
            if dxpad is not None:  # the column gradient reuses the scratch; col2im adds it back
                self.backend.matmul(gb, w_and_b.T, out=cols)  # its last column (g @ b) is not needed
                dcols = cols.reshape(-1, ho, wo, self.n_columns)
                dblock = dxpad[block]
                for columns, window in self._windows():
                    dblock[window] += dcols[:, :, :, columns]
        self.grads["W"][...] = grad_w_and_b[:-1]
        self.grads["b"][...] = grad_w_and_b[-1]
        if dxpad is None:
            return None
        return dxpad[:, p:p + h, p:p + w, :] if p else dxpad
