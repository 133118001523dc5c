"""The fit loop: seeded shuffling, minibatches on the device, history, early stopping.

A training step only queues device work: its batch, dropout noise, loss slot and
optimiser scalars are found from a step counter on the device (nn/feed.py), so on
a GPU the whole step is captured once as a CUDA graph and replayed
(`Backend.graph`). The host reads the device once per epoch: the batches' losses
and correct counts, then the validation pass's. On the CPU the step is cut into a
fixed number of batch shards run side by side (nn/shards.py), the same
bits whatever the number of cores.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from nn.feed import Feed, batch_sizes
from nn.losses import SoftmaxCrossEntropy
from nn.model import Sequential
from nn.optim import Optimizer, Schedule
from nn.shards import ShardedStep, default_threads, one_blas_thread, shard_count

DIVERGED = 10.0  # an epoch's val loss above this many times chance level counts as divergence
MAX_WEIGHT = 1e4  # so does a weight this large: inputs are normalised, a trained weight stays near 1


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite, or exploded far above chance."""


@dataclass
class FitOptions:
    epochs: int
    batch_size: int
    patience: int = 0  # early stopping on val loss; 0 = off
    shift: int = 0  # random-shift augmentation, in pixels; 0 = off
    progress: bool | None = None  # None: a bar only on a terminal
    threads: int | None = None  # CPU: cores the step's shards use at once; None: one per shard, at most one per core


def kept_epoch(history: list[dict], patience: int) -> int:
    """The epoch whose weights `fit` leaves in the model: with early stopping (patience > 0)
    the first epoch of lowest (finite) val loss, restored at the end; otherwise the last."""
    finite = [r for r in history if math.isfinite(r["val_loss"])]
    if not patience or not finite:
        return history[-1]["epoch"]
    return min(finite, key=lambda r: r["val_loss"])["epoch"]


def evaluate(model: Sequential, loss_fn: SoftmaxCrossEntropy, x, y, batch_size: int = 2048):
    """Mean loss and accuracy over (x, y) in inference mode -> (loss, acc) floats.
    x, y may already be on the device; per-batch results are read back once."""
    backend, xp = model.backend, model.backend.xp
    xd, yd = backend.to_device(x), backend.to_device(y).astype(np.int32, copy=False)
    n, sizes = len(x), batch_sizes(len(x), batch_size)
    batches = len(sizes)
    losses, correct = xp.zeros(batches, dtype=model.dtype), xp.zeros(batches, dtype=np.int32)
    slots = xp.arange(batches, dtype=np.int32)
    for b in range(batches):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        loss_fn.score(model.forward(model.normalized(xd[rows])), yd[rows], losses, correct, slots[b:b + 1])
    return float(backend.to_host(losses) @ sizes) / n + 0.0, int(backend.to_host(correct).sum()) / n  # not -0.0


def fit(model: Sequential, optimizer: Optimizer, schedule: Schedule, x_train, y_train,
        x_val, y_val, opts: FitOptions, rng: np.random.Generator,
        loss_fn: SoftmaxCrossEntropy | None = None, log=None, on_epoch=None) -> list[dict]:
    """Train in place; return one history record per epoch.

    x_*: (N, *input_shape) raw (uint8) host arrays; y_*: (N,) integer labels.
    Each record: epoch, lr, train_loss, train_acc, val_loss, val_acc, and seconds
    (the training pass alone, without the validation pass).
    With `opts.patience`, stops after that many epochs without a lower val loss
    and restores the weights of `kept_epoch(history, patience)`. `on_epoch(record)`, if given, is called after
    each epoch; returning False stops training there.
    """
    backend = model.backend
    loss_fn = loss_fn or SoftmaxCrossEntropy(backend)
    chance = math.log(model.output_shape[-1])  # the loss of a uniform guess
    history: list[dict] = []
    best_params, wait = None, 0
    shards = 1 if backend.is_gpu else shard_count(model, opts.batch_size)
    threads = opts.threads or default_threads(shards)
    if log and not backend.is_gpu:
        cores = min(shards, threads)
        log.info("each step in %d shard%s on %d core%s (nn/shards.py)", shards, "s" * (shards > 1), cores,
                 "s" * (cores > 1))
    # overflow and NaN are what divergence looks like: the epoch's loss check reports them, once
    quiet = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    with backend.session(), one_blas_thread(), quiet, contextlib.ExitStack() as stack:
        feed = Feed(model, x_train, y_train, opts.batch_size, opts.shift)
        x_val, y_val = backend.to_device(x_val), backend.to_device(np.asarray(y_val).astype(np.int32))

        def train_step(rows: int) -> None:  # on a GPU: captured once, replayed
            x, y = feed.batch(rows)
            logits = model.forward(x, training=True, rng=feed.noise)
            model.backward(loss_fn.forward_backward(logits, y, feed.losses, feed.correct, feed.step))
            optimizer.update(feed.step)
            feed.advance()

        if backend.is_gpu:
            step = train_step
        else:  # its workers start now, with BLAS already held to one thread, and end with the block
            step = stack.enter_context(ShardedStep(model, loss_fn, optimizer, feed, shards, threads))
        steps = {rows: backend.graph(functools.partial(step, int(rows))) for rows in set(feed.sizes)}
        plan, t = feed.draw(rng), 0
        for epoch in range(1, opts.epochs + 1):
            start = time.perf_counter()
            feed.load(plan)
            optimizer.schedule([schedule(t + b) for b in range(feed.steps)])
            for rows in tqdm(feed.sizes, desc=f"epoch {epoch}/{opts.epochs}", leave=False,
                             disable=None if opts.progress is None else not opts.progress):
                steps[rows]()
            t += feed.steps
            if epoch < opts.epochs:  # drawn while the device works
                plan = feed.draw(rng)
            losses, correct = feed.results()
            train_loss = float(losses @ feed.sizes) / feed.n + 0.0  # a perfect -0.0 reads 0.0
            seconds = time.perf_counter() - start
            val_loss, val_acc = evaluate(model, loss_fn, x_val, y_val)
            # judged by the weights and the val loss (without dropout), not the training loss: dropout
            # 0.99 scales the kept units x100, which alone puts it far above chance while the weights
            # are fine; a blown-up run can also answer near chance on val while its weights run away
            largest = float(backend.xp.abs(model.params_flat).max())  # one sync an epoch, with the losses'
            if not all(map(math.isfinite, (train_loss, val_loss, largest))) or val_loss > DIVERGED * chance \
                    or largest > MAX_WEIGHT:
                raise DivergenceError(
                    f"training diverged in epoch {epoch} (val loss {val_loss:.4g}, mean training loss "
                    f"{train_loss:.4g}, largest weight {largest:.3g}; a uniform guess scores {chance:.3g}); "
                    "try a lower learning rate")
            record = {"epoch": epoch, "lr": schedule(t - 1), "train_loss": train_loss,
                      "train_acc": int(correct.sum()) / feed.n, "val_loss": val_loss, "val_acc": val_acc,
                      "seconds": seconds}
            history.append(record)
            if log:
                log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  (%.2fs)",
                         epoch, opts.epochs, train_loss, record["train_acc"], val_loss, val_acc,
                         record["seconds"])
            if on_epoch is not None and on_epoch(record) is False:
                break
            if opts.patience:
                if kept_epoch(history, opts.patience) == epoch:
                    best_params, wait = model.params_flat.copy(), 0
                else:
                    wait += 1
                    if wait >= opts.patience:
                        if log and epoch < opts.epochs:  # at the last epoch, nothing is cut short
                            log.info("early stop: val loss has not improved for %d epoch%s", wait,
                                     "s" * (wait != 1))
                        break
        if best_params is not None:
            model.params_flat[...] = best_params
    return history
