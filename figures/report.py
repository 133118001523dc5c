"""The one-page report, reports/report.md, and the checks of what it is written from: the
model's training history and reports/scores.json. Figures are saved here too, without
timestamps or version metadata, so a rerun gives the same bytes."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.errors import StageError  # noqa: E402
from harness.files import FIGURES, MODEL, SCORES  # noqa: E402
from nn.atomic import atomic_file  # noqa: E402

FIGURES_SHOWN = {  # file stem -> (title, what it shows), in report.md's order
    "training_curves": ("Training curves", "loss, accuracy and learning rate per epoch"),
    "confusion_matrix": ("Confusion matrix", "which classes are mistaken for which: counts, and the mistakes "
                                             "coloured by their share of the true class"),
    "per_class_accuracy": ("Accuracy per class", "how often each class is missed, worst first"),
    "confidence": ("Confidence", "how sure the model is when it is right, and when it is wrong"),
    "first_layer": ("First layer", "the first layer's weights drawn as images: what it looks for"),
    "predictions": ("Predictions", "random test images with the model's answer"),
    "misclassified": ("Mistakes", "the mistakes the model was surest of"),
}


def save(fig, name: str, dpi: int) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    with atomic_file(FIGURES / name) as f:
        f.write(buf.getvalue())


def report(model, scores: dict, history: list[dict], classes: list[str]) -> str:
    training = model.spec.get("training", {})
    kept = weights_epoch(model, history)
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
        f"- epochs run: {len(history)}; " + (
            f"final val accuracy {100 * history[-1]['val_acc']:.2f} %" if kept == len(history) else
            f"weights of epoch {kept} (early stopping kept the lowest val loss): "
            f"val accuracy {100 * history[kept - 1]['val_acc']:.2f} %"),
        "",
        "## Test metrics",
        "",
        "| accuracy | loss | macro F1 | top-3 accuracy | errors |",
        "|---|---|---|---|---|",
        f"| {100 * scores['accuracy']:.2f} % | {scores['loss']:.4f} | {scores['macro_f1']:.4f} "
        f"| {100 * scores['top3']:.2f} % | {scores['errors']} of {scores['samples']} |",
        "",
        "## Per class",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name in classes:  # in the class list's order (scores.json's keys are sorted)
        c = scores["per_class"][name]
        lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {c['support']} |")
    lines += ["", "## Figures", ""]
    for name, (title, what) in FIGURES_SHOWN.items():
        lines += [f"**{title}**: {what}.", "", f"![{title}](figures/{name}.png)", ""]
    return "\n".join(lines[:-1]) + "\n"


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


def weights_epoch(model, history: list[dict]) -> int:
    """The epoch whose weights the model holds (train records it: the last, or with early stopping
    the one of lowest val loss); a model from before it was recorded holds the last."""
    kept = model.spec.get("epoch", len(history))
    if not (isinstance(kept, int) and not isinstance(kept, bool) and 1 <= kept <= len(history)):
        raise StageError(f"{MODEL}: its 'epoch' must be one of the {len(history)} epochs of its history; "
                         "rerun the train stage (dvc repro)")
    return kept


def check_scores(scores, classes: list[str]) -> dict:
    """reports/scores.json as evaluate writes it, for these classes."""
    keys = ("accuracy", "loss", "macro_f1", "top3", "errors", "samples")
    per_class = scores.get("per_class") if isinstance(scores, dict) else None
    if not (isinstance(per_class, dict) and all(isinstance(scores.get(k), (int, float)) for k in keys)
            and sorted(per_class) == sorted(classes)):  # JSON keys are sorted
        raise StageError(f"{SCORES}: not the scores of this test split; rerun the evaluate stage (dvc repro)")
    return scores
