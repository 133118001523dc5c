"""plots: the pictures and the one-page report.

-> reports/figures/*.png (training curves, confusion matrix, accuracy per class, confidence,
first layer, predictions, mistakes: drawn by figures/test_set.py and figures/training.py),
reports/report.md (figures/report.py), and reports/train/history.json (the training history
the model carries, for `dvc plots`). PNGs carry no timestamp or version metadata, so a rerun
gives the same bytes.
"""

from __future__ import annotations

import logging

import numpy as np

import params
from figures.report import FIGURES_SHOWN, check_history, check_scores, report, save, weights_epoch
from figures.test_set import (
    confidence_figure,
    confusion_figure,
    misclassified_figure,
    per_class_figure,
    predictions_figure,
)
from figures.training import curves_figure, first_layer_figure
from harness.command import run
from harness.errors import StageError
from harness.files import (
    DATA_PREPARED,
    FIGURES,
    HISTORY,
    MODEL,
    PREDICTIONS,
    REPORT,
    SCORES,
    check_model_fits,
    load_split,
    read_json,
    read_npz,
    write_json,
)
from nn import serialize
from nn.atomic import write_text

log = logging.getLogger(__name__)


def main() -> None:
    pp = params.load("plots")["plots"]
    x, y, classes = load_split(DATA_PREPARED / "test.npz")
    probs = read_npz(PREDICTIONS, ("probs",), "evaluate")["probs"]
    if probs.shape != (len(y), len(classes)) or probs.dtype.kind != "f" or not np.isfinite(probs).all():
        raise StageError(f"{PREDICTIONS}: not finite probabilities of shape {(len(y), len(classes))} for the test "
                         f"split (got {probs.dtype} {probs.shape}); rerun evaluate (dvc repro)")
    scores = check_scores(read_json(SCORES), classes)
    model = serialize.load(MODEL)
    check_model_fits(model, MODEL, x, classes, DATA_PREPARED / "test.npz")
    history = check_history(model.spec.get("history"))
    kept = weights_epoch(model, history)
    write_json(HISTORY, history)
    dpi, rng = pp["dpi"], np.random.default_rng(pp["seed"])
    figures = {
        "predictions": lambda: predictions_figure(x, y, probs, classes, pp["samples"], rng),
        "misclassified": lambda: misclassified_figure(x, y, probs, classes, pp["misclassified"]),
        "confusion_matrix": lambda: confusion_figure(y, probs, classes),
        "per_class_accuracy": lambda: per_class_figure(y, probs, classes),
        "confidence": lambda: confidence_figure(y, probs, classes),
        "training_curves": lambda: curves_figure(history, model, kept),
        "first_layer": lambda: first_layer_figure(model, classes, x),
    }
    for name in FIGURES_SHOWN:  # one at a time: drawn, saved, closed
        save(figures[name](), f"{name}.png", dpi)
    write_text(REPORT, report(model, scores, history, classes))
    log.info("wrote %d figures to %s and %s", len(figures), FIGURES, REPORT)


if __name__ == "__main__":
    run(main)
