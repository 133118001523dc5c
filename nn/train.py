"""The fit loop: seeded shuffling, minibatches on the device, history, early stopping.

There is no device->host synchronisation per batch: the running loss and the
count of correct predictions are summed on the device and read once per epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from nn.augment import random_shift
from nn.losses import SoftmaxCrossEntropy
from nn.model import Sequential
from nn.optim import Optimizer, Schedule

DIVERGED = 10.0  # an epoch's mean loss above this many times chance level counts as divergence


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite, or exploded far above chance."""


@dataclass
class FitOptions:
    epochs: int
    batch_size: int
    patience: int = 0  # early stopping on val loss; 0 = off
    shift: int = 0  # random-shift augmentation, in pixels; 0 = off
    progress: bool | None = None  # None: a bar only on a terminal


def evaluate(model: Sequential, loss_fn: SoftmaxCrossEntropy, x, y, batch_size: int = 2048):
    """Mean loss and accuracy over (x, y) in inference mode -> (loss, acc) floats."""
    backend = model.backend
    xd, yd = backend.to_device(x), backend.to_device(y.astype(np.intp))
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model.forward(model.prepare(xd[i:i + batch_size]))
        yb = yd[i:i + batch_size]
        loss_sum = loss_sum + loss_fn.forward(logits, yb) * len(yb)
        correct = correct + (logits.argmax(axis=1) == yb).sum()
    return float(loss_sum) / len(x), int(correct) / len(x)


def fit(model: Sequential, optimizer: Optimizer, schedule: Schedule, x_train, y_train,
        x_val, y_val, opts: FitOptions, rng: np.random.Generator,
        loss_fn: SoftmaxCrossEntropy | None = None, log=None) -> list[dict]:
    """Train in place; return one history record per epoch.

    x_*: (N, *input_shape) raw (uint8) host arrays; y_*: (N,) integer labels.
    Each record: epoch, lr, train_loss, train_acc, val_loss, val_acc, and seconds
    (the training pass alone, without the validation pass).
    With `opts.patience`, stops after that many epochs without a lower val loss
    and restores the best weights.
    """
    backend = model.backend
    loss_fn = loss_fn or SoftmaxCrossEntropy(backend)
    n, bs = len(x_train), opts.batch_size
    steps = math.ceil(n / bs)
    sizes = np.full(steps, bs)  # samples in each batch: the last may be short
    sizes[-1] = n - bs * (steps - 1)
    chance = math.log(model.output_shape[-1])  # the loss of a uniform guess
    history: list[dict] = []
    best_loss, best_params, wait = math.inf, None, 0
    for epoch in range(1, opts.epochs + 1):
        start = time.perf_counter()
        perm = rng.permutation(n)
        x_epoch = random_shift(x_train[perm], opts.shift, rng)
        xd, yd = backend.to_device(x_epoch), backend.to_device(y_train[perm].astype(np.intp))
        batch_losses = backend.xp.zeros(steps, dtype=model.dtype)  # summed once per epoch
        predicted = backend.xp.empty(n, dtype=np.intp)
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{opts.epochs}", leave=False,
                   disable=None if opts.progress is None else not opts.progress)
        for b in bar:
            t = (epoch - 1) * steps + b
            rows = slice(b * bs, (b + 1) * bs)
            logits = model.forward(model.prepare(xd[rows]), training=True, rng=rng)
            batch_losses[b] = loss_fn.forward(logits, yd[rows])
            model.backward(loss_fn.backward())
            optimizer.step(schedule(t))
            predicted[rows] = logits.argmax(axis=1)
        train_loss = float(backend.to_host(batch_losses) @ sizes) / n  # the epoch's device->host sync
        seconds = time.perf_counter() - start
        if not math.isfinite(train_loss) or train_loss > DIVERGED * chance:
            raise DivergenceError(
                f"training diverged in epoch {epoch} (mean loss {train_loss:.4g}, a uniform guess "
                f"scores {chance:.3g}); try a lower learning rate")
        val_loss, val_acc = evaluate(model, loss_fn, x_val, y_val)
        record = {"epoch": epoch, "lr": schedule(t), "train_loss": train_loss,
                  "train_acc": int((predicted == yd).sum()) / n, "val_loss": val_loss, "val_acc": val_acc,
                  "seconds": seconds}
        history.append(record)
        if log:
            log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  (%.2fs)",
                     epoch, opts.epochs, train_loss, record["train_acc"], val_loss, val_acc,
                     record["seconds"])
        if opts.patience:
            if val_loss < best_loss:
                best_loss, best_params, wait = val_loss, model.params_flat.copy(), 0
            else:
                wait += 1
                if wait >= opts.patience:
                    if log:
                        log.info("early stop: val loss has not improved for %d epochs", wait)
                    break
    if best_params is not None:
        model.params_flat[...] = best_params
    return history
