"""Convolution and pooling layers, channels-last: x: (N, H, W, C).

Conv2D is im2col + one matrix multiply. The column matrix is filled by kh*kw
strided slice copies (one per kernel offset, each covering the whole batch),
and the backward col2im is kh*kw strided slice additions - no per-element
loops and no `add.at`, and the same code on NumPy and CuPy.
"""

from __future__ import annotations

import math

import numpy as np

from nn.layers import Layer


def out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


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
        return self.out_shape

    def init_params(self, rng):
        fan_in = self.param_shapes["W"][0]
        return {"W": rng.standard_normal(self.param_shapes["W"]) * math.sqrt(2.0 / fan_in),
                "b": np.zeros(self.filters)}

    def _windows(self):
        """(kernel row i, kernel col j, the slice of the padded input it sees)."""
        k, s = self.kernel, self.stride
        ho, wo, _ = self.out_shape
        for i in range(k):
            for j in range(k):
                yield i, j, (slice(None), slice(i, i + s * (ho - 1) + 1, s), slice(j, j + s * (wo - 1) + 1, s))

    def forward(self, x, training=False, rng=None):
        xp, p = self.xp, self.padding
        n = x.shape[0]
        ho, wo, f = self.out_shape
        c = self.in_shape[2]
        if p:
            x = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        cols = xp.empty((n, ho, wo, self.kernel, self.kernel, c), dtype=x.dtype)
        for i, j, window in self._windows():
            cols[:, :, :, i, j, :] = x[window]
        self.cols = cols.reshape(n * ho * wo, -1)
        y = self.cols @ self.params["W"]
        y += self.params["b"]
        return y.reshape(n, ho, wo, f)

    def backward(self, grad):
        xp, p = self.xp, self.padding
        n, ho, wo, f = grad.shape
        g = grad.reshape(n * ho * wo, f)
        xp.matmul(self.cols.T, g, out=self.grads["W"])
        xp.sum(g, axis=0, out=self.grads["b"])
        if not self.needs_input_grad:
            return None
        h, w, c = self.in_shape
        dcols = (g @ self.params["W"].T).reshape(n, ho, wo, self.kernel, self.kernel, c)
        dx = xp.zeros((n, h + 2 * p, w + 2 * p, c), dtype=grad.dtype)
        for i, j, window in self._windows():
            dx[window] += dcols[:, :, :, i, j, :]
        return dx[:, p:p + h, p:p + w, :] if p else dx


class MaxPool2D(Layer):
    """Non-overlapping max pooling: (N, H, W, C) -> (N, H // size, W // size, C).

    Ties go to the first maximum in row-major window order, so the gradient is
    deterministic. Rows / columns beyond a multiple of `size` are dropped.
    """

    kind = "maxpool2d"

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"MaxPool2D size must be an int >= 1 (got {size!r})")
        self.size = size

    def config(self) -> dict:
        return {"size": self.size}

    def build(self, in_shape):
        h, w, c = in_shape
        if h < self.size or w < self.size:
            raise ValueError(f"MaxPool2D size {self.size} is larger than the input {h}x{w}")
        self.in_shape, self.out_shape = tuple(in_shape), (h // self.size, w // self.size, c)
        return self.out_shape

    def _offsets(self):
        """Strided views, one per position in the pooling window, in row-major order."""
        s = self.size
        ho, wo, _ = self.out_shape
        for i in range(s):
            for j in range(s):
                yield (slice(None), slice(i, i + s * ho, s), slice(j, j + s * wo, s))

    def forward(self, x, training=False, rng=None):
        out = None
        for view in self._offsets():
            out = x[view].copy() if out is None else self.xp.maximum(out, x[view], out=out)
        self.x, self.y = x, out
        return out

    def backward(self, grad):
        xp = self.xp
        dx = xp.zeros(self.x.shape, dtype=grad.dtype)
        taken = xp.zeros(grad.shape, dtype=bool)
        for view in self._offsets():  # the first maximum in the window takes the gradient
            hit = self.x[view] == self.y
            hit &= ~taken
            taken |= hit
            dx[view] = grad * hit
        return dx
