"""Layers: the contract, and Dense, Dropout, Flatten.

A layer is a small object with

* `build(in_shape) -> out_shape`: learn the (per-sample) input shape, declare
  `param_shapes`; `init_params(rng)` draws initial values on the host;
* `bind(backend, params, grads)`: receive its parameter and gradient arrays
  (views into the model's flat buffers, see `nn.model`);
* `forward(x, training, rng) -> y`: caches what backward needs;
* `backward(grad) -> grad_x`: fills `self.grads` (same keys as `self.params`)
  and returns the gradient for its input. It never updates its own parameters.

Shapes are batch-first: `x: (N, *in_shape)`.
"""

from __future__ import annotations

import math

import numpy as np

from nn import kernels
from nn.backend import CPU, Backend
from nn.noise import Noise


class Layer:
    """Base class: a parameter-free identity with the full contract."""

    kind = "layer"
    param_shapes: dict[str, tuple[int, ...]] = {}
    decayed: tuple[str, ...] = ()  # parameters that weight decay applies to

    def __init__(self) -> None:
        self.backend: Backend = CPU
        self.params: dict = {}
        self.grads: dict = {}
        self.needs_input_grad = True  # the model turns this off for its first layers
        self.in_shape: tuple[int, ...] = ()
        self.out_shape: tuple[int, ...] = ()

    @property
    def xp(self):
        return self.backend.xp

    def config(self) -> dict:
        """Constructor keyword arguments, JSON-serialisable."""
        return {}

    def build(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.in_shape = tuple(in_shape)
        self.out_shape = self.in_shape
        return self.out_shape

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {}

    def bind(self, backend: Backend, params: dict, grads: dict) -> None:
        self.backend, self.params, self.grads = backend, params, grads

    def forward(self, x, training: bool = False, rng: np.random.Generator | None = None):
        return x

    def backward(self, grad):
        return grad

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected: y = x @ W + b.   x: (N, D) -> y: (N, units).

    On the CPU its outputs (y, and the input gradient) are stored column-major
    ("F" order, `Backend.dense_order`: each unit's values for the whole batch lie
    together). The values are the same; only the memory layout differs. BLAS then
    computes y.T = W.T @ x.T, which at batch 128 is the faster form: the products
    of a 784-256-128-10 step take ~13 % less time than row-major, the whole step ~7 %.
    """

    kind = "dense"
    decayed = ("W",)

    def __init__(self, units: int, init: str = "he") -> None:
        super().__init__()
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"Dense units must be a positive int (got {units!r})")
        if init not in ("he", "glorot"):
            raise ValueError(f"Dense init must be 'he' or 'glorot' (got {init!r})")
        self.units, self.init = units, init

    def config(self) -> dict:
        return {"units": self.units, "init": self.init}

    def build(self, in_shape):
        if len(in_shape) != 1:
            raise ValueError(f"Dense needs flat input (N, D), got per-sample shape {in_shape}")
        self.in_shape, self.out_shape = tuple(in_shape), (self.units,)
        self.param_shapes = {"W": (in_shape[0], self.units), "b": (self.units,)}
        return self.out_shape

    def init_params(self, rng):
        fan_in, fan_out = self.param_shapes["W"]
        if self.init == "he":  # He et al. 2015, for ReLU-family activations
            w = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        else:  # Glorot & Bengio 2010, uniform, for tanh / sigmoid
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, (fan_in, fan_out))
        return {"W": w, "b": np.zeros(fan_out)}

    def forward(self, x, training=False, rng=None):
        self.x = x
        y = self.xp.empty((x.shape[0], self.units), dtype=x.dtype, order=self.backend.dense_order)
        self.backend.matmul(x, self.params["W"], out=y)
        y += self.params["b"]
        return y

    def backward(self, grad):
        backend = self.backend
        backend.matmul(self.x.T, grad, out=self.grads["W"])
        backend.column_sums(grad, out=self.grads["b"])
        if not self.needs_input_grad:
            return None
        grad_x = self.xp.empty(self.x.shape, dtype=grad.dtype, order=backend.dense_order)
        backend.matmul(grad, self.params["W"].T, out=grad_x)
        return grad_x


class Flatten(Layer):
    """(N, *shape) -> (N, prod(shape)); a view, no copy."""

    kind = "flatten"

    def build(self, in_shape):
        self.in_shape, self.out_shape = tuple(in_shape), (math.prod(in_shape),)
        return self.out_shape

    def forward(self, x, training=False, rng=None):
        return x.reshape(x.shape[0], -1)

    def backward(self, grad):
        return grad.reshape((grad.shape[0], *self.in_shape)) if self.needs_input_grad else None


class Dropout(Layer):
    """Inverted dropout: at training time zero each unit with probability `rate`
    and scale the survivors by 1 / (1 - rate); identity at inference.

    The mask comes from counter-based noise (nn/noise.py): 16-bit numbers, a unit
    dropped where its number is below `rate` * 65536 (so `rate` is rounded to
    1/65536). In training, `rng` is the step's `Noise` (the fit loop passes one);
    a `numpy.random.Generator` works too and seeds one-off noise. `stream` - the
    layer's index in its model - keeps two dropout layers' masks apart. On a GPU the
    mask is recomputed inside one kernel, forward and backward, and never stored.
    """

    kind = "dropout"

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not (isinstance(rate, (int, float)) and 0.0 <= rate < 1.0):
            raise ValueError(f"Dropout rate must be in [0, 1) (got {rate!r})")
        self.rate = float(rate)
        self.threshold = round(self.rate * 65536)
        self.stream = 0
        self.noise = self.mask = None

    def config(self) -> dict:
        return {"rate": self.rate}

    def forward(self, x, training=False, rng=None):
        if not training or self.rate == 0.0:
            self.noise = None
            return x
        if rng is None:
            raise ValueError("Dropout needs an rng at training time")
        self.noise = rng if isinstance(rng, Noise) else Noise.from_rng(self.backend, rng)
        self.scale = x.dtype.type(1.0 / (1.0 - self.rate))
        if self.backend.is_gpu:
            return kernels.dropout(self.backend, x, self.noise, self.stream, self.threshold, self.scale)
        bits = self.noise.host_bits(self.stream, len(x), x.size // len(x))
        self.mask = bits.reshape(x.shape) >= self.threshold
        return x * self.mask * self.scale

    def backward(self, grad):
        if self.noise is None:
            return grad
        if self.backend.is_gpu:
            return kernels.dropout(self.backend, grad, self.noise, self.stream, self.threshold, self.scale)
        return grad * self.mask * self.scale
