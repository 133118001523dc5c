"""A training run's data on the device, and each epoch's randomness.

The training images and labels go to the device once per run. Each epoch's
randomness - the permutation, the shift of every sample, and the key of the
dropout noise - is drawn on the host from the run's seeded generator (in that
order, so a GPU run draws what a CPU run draws) and loaded in bulk. A step finds
its place from `step`, a (1,) int32 counter on the device that the step itself
advances; nothing is copied between host and device during the epoch, and the
batches' losses and correct counts stay on the device until `results()`.

On the CPU the epoch is permuted and shifted once, in NumPy, and a step slices
it; on a GPU each step gathers, shifts and normalises its batch in one kernel.
"""

from __future__ import annotations

import math

import numpy as np

from nn import kernels
from nn.augment import draw_shifts, shift_images
from nn.noise import Noise, draw_key


def batch_sizes(n: int, batch_size: int) -> np.ndarray:
    """Samples in each of the ceil(n / batch_size) batches: all full but the last."""
    return np.minimum(batch_size, n - batch_size * np.arange(math.ceil(n / batch_size)))


class Feed:
    """x: (N, H, W[, C]) uint8 images, y: (N,) integer labels, for `model`."""

    def __init__(self, model, x, y, batch_size: int, shift: int = 0) -> None:
        backend = self.backend = model.backend
        xp = backend.xp
        self.model, self.n, self.batch_size, self.shift = model, len(x), batch_size, shift
        self.sizes = batch_sizes(self.n, batch_size)
        self.steps = len(self.sizes)
        self.x = backend.to_device(x)
        self.y = backend.to_device(np.asarray(y).astype(np.int32))
        self.step = xp.zeros(1, dtype=np.int32)
        self.key = xp.zeros(2, dtype=np.uint64)
        self.noise = Noise(self.key, self.step, batch_size)
        self.losses = xp.zeros(self.steps, dtype=model.dtype)
        self.correct = xp.zeros(self.steps, dtype=np.int32)
        if backend.is_gpu:  # the epoch's order and shifts, read by nn.kernels.gather
            self.perm = xp.zeros(self.n, dtype=np.int32)
            self.dy = xp.zeros(self.n, dtype=np.int8) if shift else None
            self.dx = xp.zeros(self.n, dtype=np.int8) if shift else None

    def draw(self, rng: np.random.Generator) -> dict:
        """An epoch's randomness, on the host: permutation, shifts (dy, dx), noise key."""
        perm = rng.permutation(self.n)
        dy, dx = draw_shifts(self.n, self.shift, rng) if self.shift else (None, None)
        return {"perm": perm, "dy": dy, "dx": dx, "key": draw_key(rng)}

    def load(self, plan: dict) -> None:
        """Start an epoch: its randomness onto the device, the step counter to 0."""
        backend = self.backend
        if backend.is_gpu:
            self.perm.set(plan["perm"].astype(np.int32))
            if self.shift:
                self.dy.set(plan["dy"].astype(np.int8))
                self.dx.set(plan["dx"].astype(np.int8))
        else:
            x = self.x[plan["perm"]]
            self.x_epoch = shift_images(x, plan["dy"], plan["dx"]) if self.shift else x
            self.y_epoch = self.y[plan["perm"]]
        self.key[...] = backend.to_device(plan["key"])
        self.step.fill(0)

    def batch(self, rows: int, out=None):
        """The current step's inputs, normalised, (rows, *input_shape), and int32 labels (rows,).
        CPU: the inputs into `out` (rows, *input_shape) if given."""
        model = self.model
        if self.backend.is_gpu:
            norm = model.normalize
            x = kernels.gather(self.backend, self.x, self.perm, self.dy, self.dx, self.step, self.batch_size, rows,
                               norm["mean"], 1.0 / norm["std"], model.dtype)
            return x, kernels.gather_labels(self.backend, self.y, self.perm, self.step, self.batch_size, rows)
        first = int(self.step[0]) * self.batch_size
        return model.normalized(self.x_epoch[first:first + rows], out), self.y_epoch[first:first + rows]

    def advance(self) -> None:
        self.step += 1

    def results(self) -> tuple[np.ndarray, np.ndarray]:
        """(losses, correct) of the epoch's batches, on the host: the epoch's one sync."""
        return self.backend.to_host(self.losses), self.backend.to_host(self.correct)
