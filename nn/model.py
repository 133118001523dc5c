"""Sequential: a stack of layers built from a plain, JSON-able spec.

All parameters live in one flat float buffer (and all gradients in a second),
and each layer's `params` / `grads` are views into them. The optimiser then
updates the whole network in a few vectorised passes, and copying the weights
(early stopping, saving) is one array copy. Weights that take weight decay come
first in the buffer, so decay is a single slice: `params_flat[:n_decayed]`.

A spec looks like
    {"input_shape": [28, 28],
     "layers": [{"kind": "flatten"}, {"kind": "dense", "units": 256}, {"kind": "relu"}, ...],
     "normalize": {"mean": 33.3, "std": 78.6},
     "classes": ["0", ..., "9"]}
and `mlp_spec` / `cnn_spec` write one from a few plain values.
"""

from __future__ import annotations

import math

import numpy as np

from nn.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from nn.backend import CPU, Backend
from nn.conv import Conv2D, Reshape
from nn.layers import Dense, Dropout, Flatten, Layer
from nn.losses import softmax
from nn.pool import MaxPool2D

LAYERS: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Dense, Dropout, Flatten, ReLU, LeakyReLU, Sigmoid, Tanh, Conv2D, MaxPool2D, Reshape)
}
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")


def _dense_head(hidden, activation, dropout, n_classes) -> list[dict]:
    """[Dense -> activation -> Dropout?] per entry of `hidden`, then Dense(n_classes)."""
    init = "he" if activation in ("relu", "leaky_relu") else "glorot"
    layers: list[dict] = []
    for units in hidden:
        layers += [{"kind": "dense", "units": units, "init": init}, {"kind": activation}]
        if dropout:
            layers.append({"kind": "dropout", "rate": dropout})
    layers.append({"kind": "dense", "units": n_classes, "init": "glorot"})
    return layers


def mlp_spec(input_shape, hidden, activation="relu", dropout=0.0, n_classes=10) -> dict:
    """Flatten -> [Dense -> activation -> Dropout?] * len(hidden) -> Dense(n_classes)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} (got {activation!r})")
    layers = [{"kind": "flatten"}, *_dense_head(hidden, activation, dropout, n_classes)]
    return {"input_shape": list(input_shape), "layers": layers}


def cnn_spec(input_shape, channels, hidden, dropout=0.0, n_classes=10) -> dict:
    """[Conv 3x3 (same padding) -> MaxPool 2 -> ReLU] per entry of `channels`,
    then Flatten -> [Dense -> ReLU -> Dropout?] per entry of `hidden` -> Dense(n_classes).

    Pooling before the ReLU gives exactly the usual conv -> ReLU -> pool network
    (max and ReLU commute: both are monotone), forward and backward, but the
    ReLU then runs on a quarter of the values.

    `input_shape` is (H, W) - grey images, given their one channel by a Reshape - or
    (H, W, C): the first convolution reads the C channels."""
    layers: list[dict] = [{"kind": "reshape", "shape": [*input_shape, 1]}] if len(input_shape) == 2 else []
    for filters in channels:
        layers += [{"kind": "conv2d", "filters": filters, "kernel": 3, "stride": 1, "padding": 1},
                   {"kind": "maxpool2d", "size": 2}, {"kind": "relu"}]
    layers += [{"kind": "flatten"}, *_dense_head(hidden, "relu", dropout, n_classes)]
    return {"input_shape": list(input_shape), "layers": layers}


def build_layer(cfg: dict) -> Layer:
    cfg = dict(cfg)
    kind = cfg.pop("kind", None)
    if kind not in LAYERS:
        raise ValueError(f"unknown layer kind {kind!r}; known: {', '.join(sorted(LAYERS))}")
    return LAYERS[kind](**cfg)


def build_layers(spec: dict) -> tuple[list[Layer], tuple[int, ...]]:
    """The layers of `spec`, each built for its input shape (nothing allocated) -> (layers, output shape)."""
    layers = [build_layer(cfg) for cfg in spec["layers"]]
    shape = tuple(spec["input_shape"])
    for layer in layers:
        shape = layer.build(shape)
    return layers, shape


def training_bytes(spec: dict, batch_size: int, state_copies: int, itemsize: int = 4) -> int:
    """About the memory that training `spec` takes, before anything is allocated: the flat
    parameters, their gradients, `state_copies` more buffers of that size (optimiser state,
    the best epoch's weights), and per batch each layer's output, its gradient and a cached
    input (a convolution's column matrix, kernel^2 x channels wide, counted twice)."""
    layers, _ = build_layers(spec)
    params = sum(math.prod(s) for layer in layers for s in layer.param_shapes.values())
    per_sample = math.prod(spec["input_shape"])
    for layer in layers:
        per_sample += 3 * math.prod(layer.out_shape)
        if isinstance(layer, Conv2D):
            per_sample += 2 * math.prod(layer.out_shape[:2]) * layer.n_columns
    return itemsize * (params * (2 + state_copies) + batch_size * per_sample)


class Sequential:
    """forward / backward over a list of layers, with flat parameter storage.

    forward(x: (N, *input_shape) float) -> logits (N, C)
    predict_proba(raw: (N, *input_shape) uint8 or float) -> (N, C) host probabilities
    """

    def __init__(self, spec: dict, backend: Backend = CPU, dtype=np.float32, max_params: int | None = None,
                 params_flat=None) -> None:
        """Build the layers of `spec`; with `max_params`, refuse (ValueError) a spec that needs
        more parameters than that before anything is allocated. With `params_flat`, the layers
        read that buffer (another model's: see `replica`) instead of a new one."""
        self.spec = spec
        self.backend, self.dtype = backend, np.dtype(dtype)
        self.input_shape = tuple(spec["input_shape"])
        self.layers, self.output_shape = build_layers(spec)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dropout):
                layer.stream = i  # its own noise stream (nn/noise.py)
        self.normalize = spec.get("normalize", {"mean": 0.0, "std": 1.0})
        self.classes = spec.get("classes")
        needed = sum(math.prod(s) for layer in self.layers for s in layer.param_shapes.values())
        if max_params is not None and needed > max_params:
            raise ValueError(f"the layers need {needed:,} parameters, more than the {max_params:,} allowed")
        self._layout(params_flat)
        self._mark_input_grads()

    def replica(self) -> Sequential:
        """A model of the same layers that reads this one's parameters (the same buffer) but
        keeps its own activations and gradients: one per shard of a training step."""
        return Sequential(self.spec, self.backend, self.dtype, params_flat=self.params_flat)

    def _layout(self, params_flat=None) -> None:
        """Place every parameter in the flat buffers: decayed weights first."""
        entries = [(i, name, shape, name in layer.decayed)
                   for i, layer in enumerate(self.layers)
                   for name, shape in layer.param_shapes.items()]
        entries.sort(key=lambda e: not e[3])  # stable: decayed first, in layer order
        self.n_params = sum(math.prod(e[2]) for e in entries)
        self.n_decayed = sum(math.prod(e[2]) for e in entries if e[3])
        shared = self.backend.shared_zeros  # a shard worker process reads and writes them (nn/shards.py)
        self.params_flat = shared(self.n_params, self.dtype) if params_flat is None else params_flat
        self.grads_flat = shared(self.n_params, self.dtype)
        self.slices: dict[str, tuple[int, slice, tuple]] = {}
        views: list[tuple[dict, dict]] = [({}, {}) for _ in self.layers]
        offset = 0
        for i, name, shape, _ in entries:
            size = math.prod(shape)
            sl = slice(offset, offset + size)
            views[i][0][name] = self.params_flat[sl].reshape(shape)
            views[i][1][name] = self.grads_flat[sl].reshape(shape)
            self.slices[f"{i}.{self.layers[i].kind}.{name}"] = (i, sl, shape)
            offset += size
        for layer, (params, grads) in zip(self.layers, views):
            layer.bind(self.backend, params, grads)

    def _mark_input_grads(self) -> None:
        """No layer before (or at) the first parametrised one needs its input gradient."""
        for layer in self.layers:
            layer.needs_input_grad = False
            if layer.param_shapes:
                break
        else:  # no parameters at all: keep every input gradient
            for layer in self.layers:
                layer.needs_input_grad = True

    # -- parameters ---------------------------------------------------------
    def init_params(self, rng: np.random.Generator) -> None:
        """Draw initial values on the host (same numbers on CPU and GPU)."""
        host = np.zeros(self.n_params, dtype=self.dtype)
        for i, layer in enumerate(self.layers):
            for name, value in layer.init_params(rng).items():
                _, sl, shape = self.slices[f"{i}.{layer.kind}.{name}"]
                host[sl] = np.asarray(value, dtype=self.dtype).reshape(-1)
        self.set_flat(host)

    def named_parameters(self) -> dict[str, np.ndarray]:
        """name -> host copy, e.g. {'1.dense.W': (784, 256), ...}."""
        flat = self.backend.to_host(self.params_flat)
        return {name: flat[sl].reshape(shape) for name, (_, sl, shape) in self.slices.items()}

    def set_flat(self, host_flat: np.ndarray) -> None:
        self.params_flat[...] = self.backend.to_device(host_flat, dtype=self.dtype)

    # -- computation --------------------------------------------------------
    def prepare(self, raw):
        """Raw inputs (host or device, uint8 or float) -> normalised float on the device."""
        return self.normalized(self.backend.to_device(raw))

    def normalized(self, x, out=None):
        """Inputs already on the device -> a new normalised float array: (x - mean) / std
        (or into `out`, of x's shape)."""
        if out is None:
            x = x.astype(self.dtype)
        else:
            out[...] = x
            x = out
        scale = self.dtype.type(1.0 / self.normalize["std"])
        x -= self.dtype.type(self.normalize["mean"])
        x *= scale
        return x

    def forward(self, x, training: bool = False, rng: np.random.Generator | None = None):
        for layer in self.layers:
            x = layer.forward(x, training, rng)
        return x

    def backward(self, grad) -> None:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:
                break

    def predict_proba(self, raw, batch_size: int = 2048) -> np.ndarray:
        """(N, *input_shape) raw -> (N, C) class probabilities, as a host array.
        The inputs go to the device once and the probabilities come back once."""
        xp = self.backend.xp
        x = self.backend.to_device(raw)
        out = xp.empty((len(raw), *self.output_shape), dtype=self.dtype)
        for i in range(0, len(raw), batch_size):
            out[i:i + batch_size] = softmax(xp, self.forward(self.normalized(x[i:i + batch_size])))
        return self.backend.to_host(out)

    def predict(self, raw, batch_size: int = 2048) -> np.ndarray:
        return self.predict_proba(raw, batch_size).argmax(axis=1)

    def summary(self) -> str:
        """A table of the layers: name and settings, output shape, parameter count; columns
        as wide as their longest entry, so every row has the same width."""
        rows = [("layer", "output", "params")]
        for layer in self.layers:
            count = sum(math.prod(s) for s in layer.param_shapes.values())
            rows.append((layer.describe(), str(layer.out_shape), f"{count:,}"))
        rows.append(("total", "", f"{self.n_params:,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        rows = [f"{name:<{widths[0]}}  {shape:>{widths[1]}}  {count:>{widths[2]}}" for name, shape, count in rows]
        return "\n".join(rows)
