"""evaluate: score the trained model on the test split.

-> reports/metrics.json (the numbers runs are compared by, which `dvc metrics show` prints in
one row: accuracy, loss, macro_f1, top3 - all on the test split - and the model's parameters),
reports/scores.json (every number measured: those four, errors and samples, and precision /
recall / F1 / support per class; what the plots stage reads), reports/confusion.json
({actual, predicted, count, actual_index, predicted_index} records, one per non-empty
cell of the confusion matrix, for `dvc plots` and its template
.dvc/plots/confusion_counts.json, which orders the axes by the indexes),
data/predictions/test.npz (the probabilities, for the plots stage). The test images
run through the model on evaluate.device (auto: a GPU where one is usable).
"""

from __future__ import annotations

import logging

import numpy as np

import params
from harness.command import run
from harness.device import backend_for
from harness.errors import StageError
from harness.files import (
    CONFUSION,
    DATA_PREPARED,
    METRICS,
    MODEL,
    PREDICTIONS,
    SCORES,
    check_model_fits,
    load_split,
    write_json,
)
from nn import serialize
from nn.atomic import write_npz

log = logging.getLogger(__name__)


def r6(x) -> float:
    return round(float(x), 6) + 0.0  # + 0.0: a perfect loss, -log(1) = -0.0, is written 0.0


def score(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Test scores from labels (N,), probabilities (N, C) and predicted classes (N,): accuracy,
    loss, macro_f1, top3 (accuracy), errors, samples, and per_class precision, recall, f1, support."""
    # scikit-learn is imported where it is used: it takes 1.7 s, and a stage stopped by a bad
    # input, or asked for --help, should answer at once
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    top3 = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    return {
        "accuracy": r6(accuracy_score(y, pred)),
        "loss": r6(-np.log(np.maximum(probs[np.arange(len(y)), y].astype(np.float64), 1e-12)).mean()),
        # over the classes in the test split or among the answers: a class with neither has no F1
        "macro_f1": r6(f1_score(y, pred, average="macro", labels=np.union1d(y, pred), zero_division=0)),
        "top3": r6((top3 == y[:, None]).any(axis=1).mean()),
        "errors": int((pred != y).sum()),
        "samples": len(y),
        "per_class": {name: {"precision": r6(precision[i]), "recall": r6(recall[i]), "f1": r6(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(classes)},
    }


HEADLINE = ("accuracy", "loss", "macro_f1", "top3")  # of the scores: the metrics, with the parameter count


def absent_note(per_class: dict) -> str | None:
    """A warning for the classes the test split has no image of (None when it has them all)."""
    absent = [name for name, c in per_class.items() if c["support"] == 0]
    if not absent:
        return None
    return (f"no test images of {', '.join(absent)}: {'its' if len(absent) == 1 else 'their'} recall is "
            "undefined (written 0), and macro F1 averages the classes in the test split or among the answers")


def confusion_records(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> list[dict]:
    """The confusion matrix's non-empty cells as {actual, predicted, count} records, row by row:
    at most C * C records however many test images (one per image made a 10,000-record page).
    Each also carries its classes' places in the class list (actual_index, predicted_index), by
    which the `dvc plots` template orders its axes: names alone would sort "10" before "2"."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(y, pred, labels=list(range(len(classes))))
    return [{"actual": classes[a], "predicted": classes[p], "count": int(counts[a, p]),
             "actual_index": int(a), "predicted_index": int(p)} for a, p in zip(*np.nonzero(counts))]


def main() -> None:
    pe = params.load("evaluate")["evaluate"]
    model = serialize.load(MODEL, backend=backend_for(pe, "evaluate"))
    x, y, classes = load_split(DATA_PREPARED / "test.npz")
    check_model_fits(model, MODEL, x, classes, DATA_PREPARED / "test.npz")
    with np.errstate(over="ignore", invalid="ignore"):  # the check below says it, once
        probs = model.predict_proba(x, batch_size=pe["batch_size"]).astype(np.float32)
    if not np.isfinite(probs).all():
        raise StageError(f"{MODEL}: its answers on the test images are not finite numbers (weights far too "
                         "large); retrain it (dvc repro -f train)")
    pred = probs.argmax(axis=1)
    scores = score(y, probs, pred, classes)
    write_json(METRICS, {**{key: scores[key] for key in HEADLINE}, "parameters": model.n_params})
    write_json(SCORES, scores)
    write_json(CONFUSION, confusion_records(y, pred, classes))
    write_npz(PREDICTIONS, {"probs": probs})
    if note := absent_note(scores["per_class"]):
        log.warning("%s", note)
    log.info("test accuracy %.4f, loss %.4f, macro F1 %.4f, top-3 accuracy %.4f", scores["accuracy"],
             scores["loss"], scores["macro_f1"], scores["top3"])


if __name__ == "__main__":
    run(main, memory_hint="lower evaluate.batch_size")
