"""Max pooling, channels-last: x: (N, H, W, C).

MaxPool2D keeps, per window, the position of its first maximum (a uint8), so
its backward is one multiply per window position.
"""

from __future__ import annotations

from nn.conv import window
from nn.layers import Layer


class MaxPool2D(Layer):
    """Non-overlapping max pooling: (N, H, W, C) -> (N, H // size, W // size, C).

    Ties go to the first maximum in row-major window order, so the gradient is
    deterministic. Rows / columns beyond a multiple of `size` are dropped.
    """

    kind = "maxpool2d"

    def __init__(self, size: int = 2) -> None:
        super().__init__()
        if not isinstance(size, int) or not 1 <= size <= 16:  # the window index is a uint8
            raise ValueError(f"MaxPool2D size must be an int in [1, 16] (got {size!r})")
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
                yield window(i, j, s, ho, wo)

    def forward(self, x, training=False, rng=None):
        xp = self.xp
        views = list(self._offsets())
        out = x[views[0]].copy()
        for view in views[1:]:
            xp.maximum(out, x[view], out=out)
        # which view holds each window's first maximum: k = miss_0 * (1 + miss_1 * (1 + ...)),
        # miss_k = "view k is not the maximum", built from the innermost bracket out
        first = xp.zeros(out.shape, dtype=xp.uint8)
        for view in reversed(views[:-1]):
            first += 1
            first *= x[view] != out
        self.first, self.in_full_shape = first, x.shape
        return out

    def backward(self, grad):
        xp = self.xp
        dx = xp.empty(self.in_full_shape, dtype=grad.dtype)
        ho, wo, _ = self.out_shape
        dx[:, ho * self.size:] = 0  # rows / columns the pooling dropped
        dx[:, :, wo * self.size:] = 0
        for k, view in enumerate(self._offsets()):
            xp.multiply(grad, self.first == k, out=dx[view])
        return dx
