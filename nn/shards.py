"""A CPU training step cut into a fixed number of batch shards, run side by side.

OpenBLAS runs each matrix product on one thread (harness/pins.py pins it), and
NumPy's element-wise passes are single-threaded, so a plain step uses one core.
Here the step's batch is cut into `shard_count` contiguous shards; each shard's
forward and backward runs on its own replica of the model (the same parameter
buffer, its own activations and gradients). This process runs shard 0, and worker
processes, forked when training starts, run the others at the same time (on
Linux; threads elsewhere: nn/workers.py). Then the shards' gradients are summed in
shard order and the optimiser updates the flat buffer, each core taking one
contiguous part of both.

Everything a worker reads or writes - the parameters, its gradients, the batch,
the step's number and noise key, its loss, the optimiser's state - lives in shared
memory (Backend.shared_zeros), allocated before the fork.

The bits do not depend on the machine: the number of shards (`shard_count`: from
the network's work per step, at most SHARDS) and the order of every sum (shard 0 +
shard 1 + ...) come from the model and the batch size, never the core count.
Processes, threads or this process alone only decide where a shard runs, so 1, 2
or 16 cores give the same bytes. Each sample's dropout bits are those of its place
in the whole batch (Noise.first_row), and each shard's loss and gradient are
divided by the whole batch's size, so the shards add up to the batch.

On a GPU none of this applies: the step is one graph on one device (nn/train.py).
"""

from __future__ import annotations

import math
import os

import numpy as np

from nn.noise import Noise
from nn.workers import in_shared_memory, start_workers

SHARDS = 2  # the most shards a step is cut into
# A shard must carry at least this much work (multiply-adds x 2 of its forward and backward)
# to be worth its hand-overs: measured on a 2-core VM, in worker processes, MLPs at batch 128
# of 10, 20, 39 and 78 MFLOP a step took 1.63, 1.43, 1.03 and 0.74x their time in one piece
# (blocks of 10 steps after an idle pause, so each block paid the workers' wake-up); the
# 784-256-128-10 MLP (0.18 GFLOP) 0.62x run back to back, the CNN (4.4 GFLOP) 0.60x.
MIN_SHARD_FLOP = 2.5e7


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
    product split over two BLAS threads rounds differently from one (harness/pins.py), and the
    shards already keep the cores busy. threadpoolctl comes with scikit-learn."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


THREADS_VARIABLE = "NN_THREADS"  # a cap on the threads, e.g. 1 for each of `dvc queue start -j N`'s runs


def thread_cap() -> int | None:
    """NN_THREADS as a number (None when unset); ValueError naming it when it is not one >= 1."""
    cap = os.environ.get(THREADS_VARIABLE, "").strip()
    if not cap:
        return None
    if not cap.isdigit() or int(cap) < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be a whole number of at least 1 (got {cap!r})")
    return int(cap)


def default_threads(shards: int) -> int:
    """Threads worth running: one per shard, at most one per core this process may use, and at
    most NN_THREADS when that is set (the bits are the same whatever it says)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(shards, cores, thread_cap() or cores))


def bounds(rows: int, shards: int = SHARDS) -> list[int]:
    """Where each shard of a `rows`-row batch starts, and the end: as even as can be, the
    first shards one row longer (as numpy.array_split). Fewer shards when rows < shards."""
    shards = max(1, min(shards, rows))
    size, extra = divmod(rows, shards)
    return [k * size + min(k, extra) for k in range(shards + 1)]


class ShardedStep:
    """One training step of `model` on the CPU, its batch cut into `shards` shards, run by this
    process and min(threads, shards) - 1 workers. A context manager: leaving it ends the workers.

    Called with the step's row count, like the plain step in nn/train.py: takes the
    batch from `feed`, writes the batch's loss and correct count to the feed's slots,
    leaves the summed gradient in `model.grads_flat` and lets `optimizer` update.

    A step has two phases, each shared out between this process and the workers: the
    shards (forward and backward), then the update - the shards' gradients summed and
    the optimiser's passes - in one contiguous part of the flat buffers per core. The
    update's passes are element by element, so the parts change no bit."""

    def __init__(self, model, loss_fn, optimizer, feed, shards: int, threads: int = 1) -> None:
        self.model, self.optimizer, self.feed, self.shards = model, optimizer, feed, shards
        shared = model.backend.shared_zeros  # what a worker process reads or writes
        self.replicas = [model] + [model.replica() for _ in range(shards - 1)]  # shard 0 is the model itself
        self.losses = [type(loss_fn)(loss_fn.backend, loss_fn.smoothing) for _ in range(shards)]
        self.loss = shared(shards, model.dtype)  # each shard's share of the batch's loss...
        self.correct = shared(shards, np.int64)  # ... and its right answers, in slot k
        self.slots = np.arange(shards, dtype=np.int32)
        self.inputs = shared((feed.batch_size, *model.input_shape), model.dtype)  # the step's batch
        self.labels = shared(feed.batch_size, np.int32)
        self.rows = shared(1, np.int64)
        self.step, self.key = shared(1, np.int32), shared(2, np.uint64)  # where the dropout bits come from
        self.scalars = shared(optimizer.width, np.float64)  # the step's optimiser scalars
        count = min(threads, shards) - 1
        self.assigned = [list(range(1 + w, shards, count)) for w in range(count)]  # each worker's shards
        self.own = [0] if count else list(range(shards))  # this process's shards
        updated = [optimizer.params, optimizer.grads, optimizer.tmp,
                   *(getattr(optimizer, name) for name in optimizer.state_names)]
        cores = count + 1 if all(map(in_shared_memory, updated)) else 1  # else this process updates alone
        edges = bounds(model.n_params, cores)
        self.parts = [slice(a, b) for a, b in zip(edges, edges[1:])]  # the update's part for each core
        self.workers = start_workers(count, self._serve) if count else None

    def _shard(self, k: int, edges: list[int], rows: int) -> None:
        first, last = edges[k], edges[k + 1]
        replica = self.replicas[k]
        noise = Noise(self.key, self.step, self.feed.batch_size, first_row=first)
        logits = replica.forward(self.inputs[first:last], training=True, rng=noise)
        replica.backward(self.losses[k].forward_backward(logits, self.labels[first:last], self.loss, self.correct,
                                                         self.slots[k:k + 1], total=rows))

    def _edges(self) -> list[int]:
        """Where the current step's shards start, and its end (a short batch may have fewer)."""
        return bounds(int(self.rows[0]), self.shards)

    def _run(self, shards) -> None:
        """Shards `shards` of the current step (those the batch has)."""
        edges = self._edges()
        for k in shards:
            if k < len(edges) - 1:
                self._shard(k, edges, edges[-1])

    def _update(self, k: int) -> None:
        """Part k of the update: the shards' gradients summed, in shard order, then the optimiser."""
        if k >= len(self.parts):
            return
        part = self.parts[k]
        used = len(self._edges()) - 1
        grads = self.model.grads_flat[part]
        for replica in self.replicas[1:used]:  # the same sum on every machine
            grads += replica.grads_flat[part]
        self.optimizer.apply(*(float(v) for v in self.scalars), part=part)  # Python floats, as `update` passes

    def _serve(self, worker: int, task: bytes) -> None:
        """A worker's share of a phase: b"g" its shards, b"u" its part of the update."""
        if task == b"g":
            self._run(self.assigned[worker])
        else:
            self._update(worker + 1)

    def _phase(self, task: bytes, mine) -> None:
        """A phase: the workers' shares started, this process's own share (`mine()`), the workers waited for."""
        if self.workers is None:
            mine()
            return
        self.workers.start(task)
        mine()
        self.workers.wait()

    def __call__(self, rows: int) -> None:
        feed = self.feed
        _, y = feed.batch(rows, out=self.inputs[:rows])
        self.labels[:rows] = y
        self.rows[0], self.step[...], self.key[...] = rows, feed.step, feed.key
        self._phase(b"g", lambda: self._run(self.own))
        used = len(self._edges()) - 1
        slot = int(feed.step[0])
        feed.losses[slot] = self.loss[:used].sum()  # NumPy adds a few values in order: shard 0 + shard 1
        feed.correct[slot] = int(self.correct[:used].sum())
        self.scalars[:] = self.optimizer.row(feed.step)
        self._phase(b"u", lambda: self._update(0))
        feed.advance()

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None

    def __enter__(self) -> ShardedStep:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
