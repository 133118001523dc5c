"""train: fit the network on data/prepared/train.npz, validating on val.npz.

-> models/model.npz, with the training history inside it (one record per epoch,
no timings, so it is reproducible to the byte; the plots stage writes it out as
reports/train/history.json) - the stage's only output, so DVC's run cache can
restore a whole training run from a remote. The time it took is in the log's last line and in
reports/train/timing.json (seconds, throughput, where it ran): git-ignored and no stage's
output, since a timing never repeats - dvc.lock and git stay clean after a rerun.
"""

from __future__ import annotations

import logging
import math
import statistics

import numpy as np

import params
from harness.command import run
from harness.device import backend_for, machine_memory
from harness.errors import StageError
from harness.files import DATA_PREPARED, MODEL, TIMING, load_split, write_json
from nn import serialize
from nn.data import ink_frame
from nn.losses import SoftmaxCrossEntropy
from nn.model import Sequential, cnn_spec, mlp_spec, training_bytes
from nn.optim import OPTIMIZERS, SCHEDULES
from nn.shards import thread_cap
from nn.train import DivergenceError, FitOptions, fit, kept_epoch

log = logging.getLogger(__name__)


def model_spec(pm, input_shape, classes, x_train) -> dict:
    """The model section of params.yaml -> a Sequential spec (with its normalisation)."""
    kind, channels, hidden, dropout = pm["kind"], pm["channels"], pm["hidden"], pm["dropout"]
    activation = pm["activation"]
    if kind == "cnn":
        if activation != "relu":
            raise StageError(f"params.yaml: model.activation {activation!r}: the cnn uses relu; set it to relu")
        side = min(input_shape[:2])
        if side >> len(channels) < 1:  # each block halves the image (rounding down)
            most = side.bit_length() - 1
            blocks = f"{len(channels)} conv block{'s' * (len(channels) != 1)}"
            remedy = f"at most {most} (each halves the image); use fewer" if most else \
                "none (each halves the image); use model.kind: mlp"
            raise StageError(f"params.yaml: model.channels has {blocks}, but {side}-pixel images allow {remedy}")
        spec = cnn_spec(input_shape, channels, hidden, dropout, len(classes))
    else:
        spec = mlp_spec(input_shape, hidden, activation, dropout, len(classes))
    spec["kind"] = kind
    std = float(x_train.std()) or 1.0
    spec["normalize"] = {"mean": round(float(x_train.mean()), 6), "std": round(std, 6)}
    spec["classes"] = list(classes)
    if len(input_shape) == 2:  # digits: where their ink sits, for predict to frame yours alike
        spec["ink"] = ink_frame(x_train)
    return spec


def check_memory(spec: dict, pm, pt, rows: int) -> None:
    """Refuse, before anything is allocated, a network that cannot be trained in this machine's memory;
    `rows`: the most images of a pass (a batch is never more than its split: a batch_size over it is fine)."""
    copies = {"sgd": 1, "adam": 2, "adamw": 2}[pt["optimizer"]] + (1 if pt["patience"] else 0)
    need, have = training_bytes(spec, min(pt["batch_size"], rows), copies), machine_memory()
    if need > have:
        keys = "model.channels, model.hidden" if pm["kind"] == "cnn" else "model.hidden"
        raise StageError(f"params.yaml: {keys} and train.batch_size ask for about {need / 2 ** 30:.1f} GiB to train, "
                         f"more than the {max(have, 0) / 2 ** 30:.1f} GiB available; use a smaller network or batch")


def make_optimizer(pt, model: Sequential):
    kw = {"weight_decay": pt["weight_decay"], "n_decayed": model.n_decayed, "backend": model.backend}
    momentum = pt["momentum"]
    if pt["optimizer"] == "sgd":
        kw.update(momentum=momentum, nesterov=momentum > 0)
    return OPTIMIZERS[pt["optimizer"]](model.params_flat, model.grads_flat, **kw)


def check_schedule(pt) -> None:
    """A warm-up longer than the run is refused; one as long as it, or a step schedule that never
    decays, is said in the log (the learning rate stays at its peak from the warm-up's end)."""
    epochs, warmup = pt["epochs"], pt["warmup_epochs"]
    if warmup > epochs:
        raise StageError(f"params.yaml: train.warmup_epochs = {warmup} is longer than the run (train.epochs = "
                         f"{epochs}); set it to at most {epochs} (0 turns the warm-up off)")
    if warmup == epochs and pt["schedule"] != "constant":
        log.warning("the warm-up takes the whole run (train.warmup_epochs = train.epochs = %d): the learning rate "
                    "rises to its peak and the %s schedule never starts", epochs, pt["schedule"])
    elif pt["schedule"] == "step" and pt["step_epochs"] >= epochs - warmup:
        log.warning("train.step_epochs = %d is not less than the %d epoch%s after the warm-up: the step schedule "
                    "never decays", pt["step_epochs"], epochs - warmup, "s" * (epochs - warmup != 1))


def make_schedule(pt, steps_per_epoch: int):
    total = pt["epochs"] * steps_per_epoch
    warmup = min(pt["warmup_epochs"] * steps_per_epoch, total - 1)
    step_epochs, gamma = pt["step_epochs"], pt["gamma"]
    name = pt["schedule"]
    if name == "step":
        return SCHEDULES[name](pt["lr"], total, warmup, step_size=step_epochs * steps_per_epoch, gamma=gamma)
    return SCHEDULES[name](pt["lr"], total, warmup)


def main() -> None:
    sections = params.load("model", "train")
    pm, pt = sections["model"], sections["train"]
    thread_cap()  # a bad NN_THREADS stops the stage here, before any work
    check_schedule(pt)
    backend = backend_for(pt, "train")
    x_train, y_train, classes = load_split(DATA_PREPARED / "train.npz")
    x_val, y_val, _ = load_split(DATA_PREPARED / "val.npz")
    if x_val.shape[1:] != x_train.shape[1:]:
        raise StageError(f"{DATA_PREPARED / 'val.npz'}: images of shape {x_val.shape[1:]} but "
                         f"{DATA_PREPARED / 'train.npz'} holds {x_train.shape[1:]}; "
                         "rerun the prepare stage (dvc repro)")
    rng = np.random.default_rng(pt["seed"])
    spec = model_spec(pm, x_train.shape[1:], classes, x_train)
    # every train key but device (where the weights were computed): unused ones too (momentum with
    # adamw), so that any key's value can be read back from the model
    spec["training"] = {k: pt[k] for k in params.SCHEMA["train"] if k != "device"}
    check_memory(spec, pm, pt, max(len(x_train), len(x_val)))
    model = Sequential(spec, backend=backend)
    model.init_params(rng)
    log.info("model:\n%s", model.summary())
    steps = math.ceil(len(x_train) / pt["batch_size"])
    opts = FitOptions(epochs=pt["epochs"], batch_size=pt["batch_size"], patience=pt["patience"],
                      shift=pt["shift"])
    loss_fn = SoftmaxCrossEntropy(backend, smoothing=pt["label_smoothing"])
    try:
        history = fit(model, make_optimizer(pt, model), make_schedule(pt, steps), x_train, y_train,
                      x_val, y_val, opts, rng, loss_fn=loss_fn, log=log)
    except DivergenceError as exc:
        raise StageError(f"params.yaml: train.lr = {pt['lr']}: {exc}; no model was written") from None
    seconds = [r.pop("seconds") for r in history]
    total, per_epoch = sum(seconds), statistics.median(seconds)
    model.spec["history"] = history  # the model carries its training record (plots writes it out)
    model.spec["epoch"] = kept = kept_epoch(history, pt["patience"])  # whose weights these are
    serialize.save(model, MODEL)
    write_json(TIMING, {
        "backend": backend.name, "device": backend.device_name, "epochs_run": len(history),
        "seconds": round(total, 3), "seconds_per_epoch": round(per_epoch, 4),
        "samples_per_second": round(len(x_train) / per_epoch),
    })
    log.info("trained %s parameters for %d epoch%s in %.1f s (%s); %sval acc %.4f", f"{model.n_params:,}",
             len(history), "s" * (len(history) != 1), total, backend.describe(),
             "" if kept == len(history) else f"kept the weights of epoch {kept} (lowest val loss): ",
             history[kept - 1]["val_acc"])


if __name__ == "__main__":
    run(main, memory_hint="use a smaller network (model.hidden, model.channels) or train.batch_size")
