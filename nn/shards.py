"""A CPU training step cut into a fixed number of batch shards, run side by side.

OpenBLAS runs each matrix product on one thread (stages/pins.py pins it), and
NumPy's element-wise passes are single-threaded, so a plain step uses one core.
Here the step's batch is cut into `shard_count` contiguous shards; each shard's forward
and backward runs on its own replica of the model (the same parameter buffer,
its own activations and gradients) on a thread of a small pool - NumPy releases
the GIL in matrix products, ufuncs and copies, so the threads really run at
once. The shards' gradients are then summed in shard order, and the optimiser
updates the flat buffer on the calling thread.

The bits do not depend on the machine: the number of shards (`shard_count`: from
the network's work per step, at most SHARDS) and the order of every sum (shard 0 +
shard 1 + ...) come from the model and the batch size, never the core count. The
pool only decides which thread runs which shard, so 1, 2 or 16 threads give the
same bytes. Each sample's dropout bits are those of its place in the whole batch
(Noise.first_row), and each shard's loss and gradient are divided by the whole
batch's size, so the shards add up to the batch.

On a GPU none of this applies: the step is one graph on one device (nn/train.py).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nn.noise import Noise

SHARDS = 2  # the most shards a step is cut into
# A shard must carry at least this much work (multiply-adds x 2 of its forward and backward,
# ~1.5 ms on one core) to be worth a hand-over between threads: measured on a 2-core VM,
# where waking the other thread costs ~0.1-0.5 ms a step, the 784-256-128-10 MLP at batch 128
# (0.18 GFLOP a step) ran 1.13x slower in two shards, the 784-512-256-10 one (0.41 GFLOP)
# 0.85x the time, the CNN (4.4 GFLOP) 0.59x.
MIN_SHARD_FLOP = 1.25e8


def step_flop(model, batch_size: int) -> float:
    """About the floating-point operations of a training step: 3 x the forward's matrix
    products (forward, input gradient, weight gradient)."""
    forward = 0
    for layer in model.layers:
        if "W" in layer.param_shapes:  # Dense: once per sample; Conv2D: once per output pixel
            positions = math.prod(layer.out_shape[:-1])
            forward += 2 * math.prod(layer.param_shapes["W"]) * positions
    return 3.0 * forward * batch_size


def shard_count(model, batch_size: int) -> int:
    """How many shards a step of `model` at `batch_size` is cut into: from the network and the
    batch alone - never the machine - so the bits are the same everywhere."""
    return int(max(1, min(SHARDS, batch_size, step_flop(model, batch_size) // MIN_SHARD_FLOP)))


def one_blas_thread():
    """OpenBLAS (or MKL) held to one thread while the shards run - whatever the environment set: a
    product split over two BLAS threads rounds differently from one (stages/pins.py), and the
    shards already keep the cores busy. threadpoolctl comes with scikit-learn."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


THREADS_VARIABLE = "NN_THREADS"  # a cap on the threads, e.g. 1 for each of `dvc queue start -j N`'s runs


def default_threads(shards: int) -> int:
    """Threads worth running: one per shard, at most one per core this process may use, and at
    most NN_THREADS when that is set (the bits are the same whatever it says)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cap = os.environ.get(THREADS_VARIABLE, "").strip()
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            raise ValueError(f"{THREADS_VARIABLE} must be a whole number of at least 1 (got {cap!r})")
        cores = min(cores, int(cap))
    return max(1, min(shards, cores))


class Pool:
    """`threads` threads at work: the caller and threads - 1 workers (1: the caller alone, in order)."""

    def __init__(self, threads: int) -> None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int (got {threads!r})")
        self.threads = threads
        self._executor = ThreadPoolExecutor(threads - 1, thread_name_prefix="shard") if threads > 1 else None

    def map(self, fn, items) -> list:
        """[fn(item) for item in items], side by side: the calling thread takes the first item
        itself (one hand-over fewer per call), the pool's threads the others."""
        items = list(items)
        if self._executor is None or len(items) < 2:
            return [fn(item) for item in items]
        rest = [self._executor.submit(fn, item) for item in items[1:]]
        first = fn(items[0])
        return [first] + [future.result() for future in rest]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bounds(rows: int, shards: int = SHARDS) -> list[int]:
    """Where each shard of a `rows`-row batch starts, and the end: as even as can be, the
    first shards one row longer (as numpy.array_split). Fewer shards when rows < shards."""
    shards = max(1, min(shards, rows))
    size, extra = divmod(rows, shards)
    return [k * size + min(k, extra) for k in range(shards + 1)]


class ShardedStep:
    """One training step of `model` on the CPU, its batch cut into SHARDS shards.

    Called with the step's row count, like the plain step in nn/train.py: takes the
    batch from `feed`, writes the batch's loss and correct count to the feed's slots,
    leaves the summed gradient in `model.grads_flat` and lets `optimizer` update."""

    def __init__(self, model, loss_fn, optimizer, feed, pool: Pool, shards: int) -> None:
        self.model, self.optimizer, self.feed, self.pool = model, optimizer, feed, pool
        self.shards = shards
        self.replicas = [model] + [model.replica() for _ in range(shards - 1)]  # shard 0 is the model itself
        self.losses = [type(loss_fn)(loss_fn.backend, loss_fn.smoothing) for _ in range(shards)]
        self.loss = np.zeros(shards, dtype=model.dtype)  # each shard's share of the batch's loss...
        self.correct = np.zeros(shards, dtype=np.int64)  # ... and its right answers, in slot k
        self.slots = np.arange(shards, dtype=np.int32)

    def _shard(self, k: int, x, y, edges: list[int], rows: int) -> None:
        first, last = edges[k], edges[k + 1]
        feed, replica = self.feed, self.replicas[k]
        noise = Noise(feed.key, feed.step, feed.batch_size, first_row=first)
        logits = replica.forward(x[first:last], training=True, rng=noise)
        replica.backward(self.losses[k].forward_backward(logits, y[first:last], self.loss, self.correct,
                                                         self.slots[k:k + 1], total=rows))

    def __call__(self, rows: int) -> None:
        feed = self.feed
        x, y = feed.batch(rows)
        edges = bounds(rows, self.shards)
        used = len(edges) - 1
        self.pool.map(lambda k: self._shard(k, x, y, edges, rows), range(used))
        grads = self.model.grads_flat
        for replica in self.replicas[1:used]:  # in shard order: the same sum on every machine
            grads += replica.grads_flat
        slot = int(feed.step[0])
        feed.losses[slot] = self.loss[:used].sum()  # NumPy adds a few values in order: shard 0 + shard 1
        feed.correct[slot] = int(self.correct[:used].sum())
        self.optimizer.update(feed.step)  # one thread: split in two, the update measured slower (hand-overs)
        feed.advance()
