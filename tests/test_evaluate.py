"""The evaluate stage's scores: scikit-learn's, over the right classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from stages.evaluate import absent_note, score

CLASSES = ["zero", "one", "two", "three"]


def probs_for(pred: np.ndarray) -> np.ndarray:
    p = np.full((len(pred), len(CLASSES)), 0.1, np.float32)
    p[np.arange(len(pred)), pred] = 0.7
    return p


def test_scores_of_a_split_with_every_class():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    pred = np.array([0, 1, 2, 3, 1, 1, 2, 0])
    m = score(y, probs_for(pred), pred, CLASSES)
    assert m["accuracy"] == 0.75 and m["errors"] == 2 and m["samples"] == 8
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-6)
    # ties rank the lower class first: the last image (a 3 answered 0) has 0, 1, 2 as its top three
    assert m["top3"] == 0.875
    assert m["per_class"]["one"] == {"precision": pytest.approx(2 / 3, abs=1e-6), "recall": 1.0,
                                     "f1": 0.8, "support": 2}
    assert absent_note(m["per_class"]) is None


def test_a_class_with_no_test_images_and_no_answers_is_left_out_of_macro_f1():
    """Every answer right, but "two" is in no test image: macro F1 is 1, not 3/4, and a note says why."""
    y = pred = np.array([0, 1, 3, 0, 1, 3])
    m = score(y, probs_for(pred), pred, CLASSES)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert m["per_class"]["two"]["support"] == 0
    note = absent_note(m["per_class"])
    assert note.startswith("no test images of two: its recall is undefined")
    # answered though absent: every such answer is a mistake, and the class's F1 of 0 counts
    pred = np.array([0, 1, 3, 0, 1, 2])
    m = score(y, probs_for(pred), pred, CLASSES)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1, 2, 3]), abs=1e-6)
    assert m["macro_f1"] < 0.8
