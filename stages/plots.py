"""plots: the pictures and the one-page report.

-> reports/figures/{predictions,misclassified,confusion_matrix,training_curves}.png,
reports/report.md, and reports/train/history.json (the training history the model
carries, for `dvc plots`). PNGs carry no timestamp or version metadata, so a rerun
gives the same bytes.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from nn import serialize  # noqa: E402
from nn.atomic import atomic_file, write_text  # noqa: E402
from stages import params as P  # noqa: E402
from stages.common import (  # noqa: E402
    DATA_PREPARED,
    FIGURES,
    HISTORY,
    METRICS,
    MODEL,
    PREDICTIONS,
    REPORT,
    StageError,
    check_model_fits,
    load_split,
    log,
    read_json,
    read_npz,
    run,
    write_json,
)

OK, BAD = "#1a7f37", "#cf222e"


def save(fig, name: str, dpi: int) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    with atomic_file(FIGURES / name) as f:
        f.write(buf.getvalue())


def image_grid(x, titles, colors, suptitle):
    n = len(x)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.7 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title, color in zip(axes.flat, x, titles, colors):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8, color=color)
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def predictions_figure(x, y, probs, classes, samples, rng):
    idx = np.sort(rng.choice(len(y), size=min(samples, len(y)), replace=False))
    pred = probs.argmax(axis=1)
    titles = [f"{classes[pred[i]]} ({probs[i, pred[i]]:.2f})" if pred[i] == y[i]
              else f"{classes[pred[i]]}, true {classes[y[i]]}" for i in idx]
    colors = [OK if pred[i] == y[i] else BAD for i in idx]
    wrong = int((pred[idx] != y[idx]).sum())
    return image_grid(x[idx], titles, colors, f"Random test images: predicted (confidence); {wrong} wrong in red")


def misclassified_figure(x, y, probs, classes, count):
    pred = probs.argmax(axis=1)
    errors = np.flatnonzero(pred != y)
    if errors.size == 0:
        errors = np.argsort(probs[np.arange(len(y)), y], kind="stable")[:count]  # least confident
    order = errors[np.argsort(-probs[errors, pred[errors]], kind="stable")][:count]
    titles = [f"true {classes[y[i]]} → {classes[pred[i]]} ({probs[i, pred[i]]:.2f})" for i in order]
    return image_grid(x[order], titles, [BAD] * len(order),
                      f"The {len(order)} most confident mistakes of {errors.size}")


def confusion_figure(y, probs, classes):
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay.from_predictions(y, probs.argmax(axis=1), labels=list(range(len(classes))),
                                            display_labels=classes, values_format="d", cmap="Blues",
                                            colorbar=False, ax=ax, xticks_rotation=45 if len(classes[0]) > 2 else 0)
    ax.set_title(f"Confusion matrix on {len(y)} test images")
    fig.tight_layout()
    return fig


def curves_figure(history):
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss", yscale="log")
    ax2.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax2.plot(epochs, [100 * r["val_acc"] for r in history], "o-", label="validation")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def report(model, metrics: dict, history: list[dict]) -> str:
    t = metrics["test"]
    training = model.spec.get("training", {})
    layers = " → ".join(layer.describe() for layer in model.layers)
    lines = [
        "# Run report",
        "",
        "Written by the plots stage (`dvc repro`); every number below comes from the files of this run.",
        "",
        "## Model and training",
        "",
        f"- layers: {layers}",
        f"- parameters: {model.n_params:,}; input normalised as (x − {model.normalize['mean']}) / "
        f"{model.normalize['std']}",
        "- training: " + ", ".join(f"{k} = {v}" for k, v in training.items()),
        f"- epochs run: {len(history)}; final val accuracy {100 * history[-1]['val_acc']:.2f} %",
        "",
        "## Test metrics",
        "",
        "| accuracy | loss | macro F1 | top-3 accuracy | errors |",
        "|---|---|---|---|---|",
        f"| {100 * t['accuracy']:.2f} % | {t['loss']:.4f} | {t['macro_f1']:.4f} | {100 * t['top3_accuracy']:.2f} % "
        f"| {t['errors']} of {t['samples']} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |"
              for name, c in metrics["per_class"].items()]
    lines += ["", "## Figures", ""]
    lines += [f"![{name}](figures/{name}.png)" for name in
              ("training_curves", "confusion_matrix", "predictions", "misclassified")]
    return "\n".join(lines) + "\n"


HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")


def check_history(history) -> list[dict]:
    """The training history inside the model, as train writes it: one record of numbers per epoch."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(history, list) or not history:
        raise StageError(f"{MODEL}: its training history must be a list with one record per epoch; "
                         "rerun the train stage (dvc repro)")
    for i, record in enumerate(history):
        if not isinstance(record, dict) or not all(number(record.get(k)) for k in HISTORY_KEYS):
            raise StageError(f"{MODEL}: record {i} of its training history must have the numbers "
                             f"{', '.join(HISTORY_KEYS)}; rerun the train stage (dvc repro)")
    return history


def check_metrics(metrics, classes: list[str]) -> dict:
    """reports/metrics.json as evaluate writes it, for these classes."""
    test = metrics.get("test") if isinstance(metrics, dict) else None
    keys = ("accuracy", "loss", "macro_f1", "top3_accuracy", "errors", "samples")
    per_class = metrics.get("per_class") if isinstance(test, dict) else None
    if not (isinstance(test, dict) and all(isinstance(test.get(k), (int, float)) for k in keys)
            and isinstance(per_class, dict) and list(per_class) == classes):
        raise StageError(f"{METRICS}: not the metrics of this test split; rerun the evaluate stage (dvc repro)")
    return metrics


def main() -> None:
    pp = P.load("plots")["plots"]
    x, y, classes = load_split(DATA_PREPARED / "test.npz")
    probs = read_npz(PREDICTIONS, ("probs",), "evaluate")["probs"]
    if probs.shape != (len(y), len(classes)) or probs.dtype.kind != "f" or not np.isfinite(probs).all():
        raise StageError(f"{PREDICTIONS}: not finite probabilities of shape {(len(y), len(classes))} for the test "
                         f"split (got {probs.dtype} {probs.shape}); rerun evaluate (dvc repro)")
    metrics = check_metrics(read_json(METRICS), classes)
    model = serialize.load(MODEL)
    check_model_fits(model, MODEL, x, classes, DATA_PREPARED / "test.npz")
    history = check_history(model.spec.get("history"))
    write_json(HISTORY, history)
    dpi, rng = pp["dpi"], np.random.default_rng(pp["seed"])
    save(predictions_figure(x, y, probs, classes, pp["samples"], rng), "predictions.png", dpi)
    save(misclassified_figure(x, y, probs, classes, pp["misclassified"]), "misclassified.png", dpi)
    save(confusion_figure(y, probs, classes), "confusion_matrix.png", dpi)
    save(curves_figure(history), "training_curves.png", dpi)
    write_text(REPORT, report(model, metrics, history))
    log.info("wrote 4 figures to %s and %s", FIGURES, REPORT)


if __name__ == "__main__":
    run(main)
