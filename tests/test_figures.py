"""The plots stage's figures: all written, the same bytes on a rerun, no metadata that
changes, and drawn from the run's own numbers (the weights figure shows the model's weights)."""

from __future__ import annotations

import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from figures.report import FIGURES_SHOWN, save  # noqa: E402
from figures.test_set import confusion_figure  # noqa: E402
from figures.training import accuracy_note, first_layer_figure  # noqa: E402
from nn.model import Sequential, cnn_spec, mlp_spec  # noqa: E402
from stages.evaluate import confusion_records  # noqa: E402
from tests.project import DIGITS, Project  # noqa: E402

CLASSES = [str(c) for c in range(10)]


def png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append(kind)
        at += 12 + length
    return chunks


def model(spec: dict, seed: int = 0) -> Sequential:
    m = Sequential({**spec, "training": {"shift": 0}})
    m.init_params(np.random.default_rng(seed))
    return m


def drawn(fig) -> list[np.ndarray]:
    """The arrays of the figure's images, in panel order."""
    return [ax.images[0].get_array() for ax in fig.axes if ax.images]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    project = Project(tmp_path_factory.mktemp("figures") / "p", DIGITS)
    project.repro()
    return project


def test_plots_writes_every_figure_and_the_same_bytes_again(ran):
    figures = sorted(p.name for p in (ran.path / "reports/figures").iterdir())
    assert figures == sorted(f"{name}.png" for name in FIGURES_SHOWN)
    report = ran.read("reports/report.md").decode()
    assert all(f"(figures/{name}.png)" in report for name in FIGURES_SHOWN)
    rels = [f"reports/figures/{name}" for name in figures]
    before = ran.digests(rels)
    ran.stage("plots", check=True)
    assert ran.digests(rels) == before
    for rel in rels:  # no text chunks (Software, dates) and no timestamp
        assert set(png_chunks(ran.read(rel))) <= {b"IHDR", b"pHYs", b"IDAT", b"IEND"}, rel


def test_first_layer_figure_shows_the_mlp_weights():
    """Each panel is one first-layer unit's input weights, reshaped to the image, on its own scale."""
    m = model(mlp_spec((8, 8), [12]))
    x = np.zeros((3, 8, 8), np.uint8)
    x[:, :, 1:] = 200  # column 0 never has ink: drawn blank (masked)
    fig = first_layer_figure(m, CLASSES, x)
    w = m.named_parameters()["1.dense.W"]
    images = drawn(fig)
    assert len(images) == 12
    for unit, img in enumerate(images):
        expected = w[:, unit].reshape(8, 8)
        assert img.mask[:, 0].all() and not img.mask[:, 1:].any()
        visible = expected[:, 1:]
        np.testing.assert_allclose(img[:, 1:], visible / np.abs(visible).max(), rtol=1e-6)
    plt.close(fig)


def test_first_layer_figure_changes_with_the_model(tmp_path, monkeypatch):
    import figures.report

    monkeypatch.setattr(figures.report, "FIGURES", tmp_path)
    x = np.full((2, 8, 8), 100, np.uint8)
    for name, seed in (("a", 0), ("b", 1), ("a_again", 0)):
        save(first_layer_figure(model(mlp_spec((8, 8), [16]), seed), CLASSES, x), f"{name}.png", 40)
    a, b, again = ((tmp_path / f"{n}.png").read_bytes() for n in ("a", "b", "a_again"))
    assert a != b and a == again


def test_first_layer_figure_of_a_cnn_shows_its_filters():
    m = model(cnn_spec((8, 8), [4], [8]))
    fig = first_layer_figure(m, CLASSES, np.zeros((1, 8, 8), np.uint8))
    w = m.named_parameters()["1.conv2d.W"]  # (3 * 3 * 1, 4), rows (i, j, channel)
    images = drawn(fig)
    assert len(images) == 4
    for f, img in enumerate(images):
        np.testing.assert_allclose(img, w[:, f].reshape(3, 3) / np.abs(w[:, f]).max(), rtol=1e-6)
    plt.close(fig)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_first_layer_figure_of_rgb_inputs_draws_each_unit_in_colour(kind):
    """(H, W, 3) inputs: a unit's weights are one colour picture, 0 at mid-grey, on its own scale."""
    spec = mlp_spec((6, 5, 3), [4]) if kind == "mlp" else cnn_spec((6, 5, 3), [4], [8])
    m = model(spec)
    fig = first_layer_figure(m, CLASSES, np.full((2, 6, 5, 3), 50, np.uint8))
    w = m.named_parameters()["1.dense.W" if kind == "mlp" else "0.conv2d.W"]
    shape = (6, 5, 3) if kind == "mlp" else (3, 3, 3)
    images = drawn(fig)
    assert len(images) == 4
    for unit, img in enumerate(images):
        expected = w[:, unit].reshape(shape)
        np.testing.assert_allclose(img, 0.5 + 0.5 * expected / np.abs(expected).max(), rtol=1e-6)
    plt.close(fig)


def test_first_layer_figure_of_one_channel_inputs_is_the_grey_picture():
    m = model(mlp_spec((6, 5, 1), [4]))
    fig = first_layer_figure(m, CLASSES, np.full((2, 6, 5, 1), 50, np.uint8))
    w = m.named_parameters()["1.dense.W"]
    for unit, img in enumerate(drawn(fig)):
        np.testing.assert_allclose(img, w[:, unit].reshape(6, 5) / np.abs(w[:, unit]).max(), rtol=1e-6)
    plt.close(fig)


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1), (6, 5, 3)])
def test_image_grids_show_digits_inverted_and_pictures_as_they_are(shape):
    from figures.test_set import predictions_figure

    x = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
    probs = np.eye(10)[[0, 1, 2, 3]]
    fig = predictions_figure(x, np.arange(4), probs, CLASSES, 4, np.random.default_rng(0))
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 4
    for im in images:
        assert im.get_array().shape == (shape if len(shape) == 2 or shape[2] == 3 else shape[:2])
        if len(shape) == 2:
            assert im.get_cmap().name == "gray_r"  # ink dark on white, as digits are written
        elif shape[2] == 1:
            assert im.get_cmap().name == "gray"
    assert sorted(tuple(im.get_array().ravel()[:3]) for im in images) == sorted(tuple(a.ravel()[:3]) for a in x)
    plt.close(fig)


def test_first_layer_figure_without_hidden_layers_names_the_classes():
    """No hidden layer: the first Dense is the output, one unit per class."""
    fig = first_layer_figure(model(mlp_spec((8, 8), [])), CLASSES, np.full((1, 8, 8), 9, np.uint8))
    assert [ax.get_title() for ax in fig.axes if ax.images] == CLASSES
    plt.close(fig)


@pytest.mark.parametrize(("dropout", "shift", "says", "never"), [
    (0.25, 2, ["dropout 25%", "up to 2 px"], []),
    (0.0, 0, [], ["dropout", "shifted"]),
    (0.5, 0, ["dropout 50%"], ["shifted"]),
])
def test_the_accuracy_note_is_true_for_the_run(dropout, shift, says, never):
    m = Sequential({**mlp_spec((8, 8), [4], dropout=dropout), "training": {"shift": shift}})
    history = [{"train_acc": 0.8, "val_acc": 0.9}]
    note = accuracy_note(m, history)
    assert note.startswith("Why is validation above training?")
    assert all(s in note for s in says) and not any(s in note for s in never), note
    assert accuracy_note(m, [{"train_acc": 0.95, "val_acc": 0.9}]).startswith("How the two are measured")


def test_confusion_records_are_one_per_cell():
    y = np.array([0, 0, 1, 1, 1, 2], np.uint8)
    pred = np.array([0, 1, 1, 1, 1, 0])
    cells = [(0, 0, 1), (0, 1, 1), (1, 1, 3), (2, 0, 1)]  # (actual, predicted, count)
    assert confusion_records(y, pred, ["c", "b", "a"]) == [  # names in the class list's order, not sorted
        {"actual": "cba"[a], "predicted": "cba"[p], "count": n, "actual_index": a, "predicted_index": p}
        for a, p, n in cells]


def test_confusion_figure_colours_the_mistakes_by_share_of_the_true_class():
    y = np.array([0] * 10 + [1] * 4, np.uint8)
    probs = np.eye(2, dtype=np.float32)[[0] * 9 + [1] + [1] * 2 + [0] * 2]
    fig = confusion_figure(y, probs, ["a", "b"])
    errors = fig.axes[0].images[0].get_array()  # the mistakes' layer: % of the true class, diagonal masked
    assert errors.mask.tolist() == [[True, False], [False, True]]
    np.testing.assert_allclose(errors.data[[0, 1], [1, 0]], [10.0, 50.0])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "9\n90.0%" in texts and "2\n50.0%" in texts and "1" in texts and "2" in texts
    plt.close(fig)


def test_a_perfect_loss_is_written_0_not_minus_0():
    """-log(1) is -0.0: metrics.json and report.md say 0.0 (a learner would ask what -0.0000 means)."""
    import json

    from stages.evaluate import r6

    assert json.dumps(r6(-np.log(np.float64(1.0)))) == "0.0" and json.dumps(r6(-0.0)) == "0.0"
    assert r6(0.1234567) == 0.123457


def test_after_early_stopping_the_report_and_curves_name_the_epoch_kept():
    """Early stopping keeps the weights of the lowest val loss: the report quotes that epoch's val
    accuracy, not the last one's, and the curves mark it; a model without early stopping holds the last."""
    from figures.report import report, weights_epoch
    from figures.training import curves_figure
    from harness.errors import StageError

    history = [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": 0.5, "val_loss": v, "val_acc": a}
               for e, v, a in ((1, 0.9, 0.40), (2, 0.5, 0.75), (3, 0.7, 0.60))]
    metrics = {"accuracy": 0.7, "loss": 0.6, "macro_f1": 0.7, "top3": 0.9, "errors": 3, "samples": 10,
               "per_class": {c: {"precision": 1, "recall": 1, "f1": 1, "support": 1} for c in CLASSES}}
    m = model(mlp_spec((8, 8), [4]))
    assert weights_epoch(m, history) == 3  # no "epoch" recorded: the last
    assert "final val accuracy 60.00 %" in report(m, metrics, history, CLASSES)
    m.spec["epoch"] = 2
    assert "weights of epoch 2 (early stopping kept the lowest val loss): val accuracy 75.00 %" in \
        report(m, metrics, history, CLASSES)
    fig = curves_figure(history, m, weights_epoch(m, history))
    assert all(any(list(line.get_xdata()) == [2, 2] for line in ax.lines) for ax in fig.axes)
    plt.close(fig)
    fig = curves_figure(history, m, 3)
    assert not any(list(line.get_xdata()) == [3, 3] for ax in fig.axes for line in ax.lines)
    plt.close(fig)
    for bad in (0, 4, "2", True):
        m.spec["epoch"] = bad
        with pytest.raises(StageError, match="'epoch' must be one of the 3 epochs"):
            weights_epoch(m, history)


def test_titles_count_one_image_in_the_singular():
    from figures.test_set import misclassified_figure, predictions_figure

    x, y = np.zeros((3, 8, 8), np.uint8), np.array([0, 1, 2])
    probs = np.eye(10, dtype=np.float32)[[0, 1, 5]]  # the third is a mistake
    titles = [predictions_figure(x, y, probs, CLASSES, 1, np.random.default_rng(0))._suptitle.get_text(),
              misclassified_figure(x, y, probs, CLASSES, 1)._suptitle.get_text(),
              misclassified_figure(x, y, np.eye(10, dtype=np.float32)[[0, 1, 2]], CLASSES, 1)._suptitle.get_text()]
    plt.close("all")
    assert titles[0].startswith("1 random test image:")
    assert titles[1].startswith("The 1 mistake the model was surest of (1 in all)")
    assert titles[2].startswith("No mistakes: the 1 right answer the model")


def test_a_class_without_test_images_is_said_to_have_none():
    from figures.test_set import per_class_figure

    y = np.array([0, 0, 1, 1], np.uint8)  # no image of class "c"
    probs = np.eye(3, dtype=np.float32)[[0, 2, 1, 1]]
    fig = per_class_figure(y, probs, ["a", "b", "c"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    assert {"no test images", "1 of 2 wrong (50.0% right)", "0 of 2 wrong (100.0% right)"} <= set(texts)


def test_a_one_epoch_run_ticks_its_epoch_not_fractions():
    from figures.training import curves_figure

    history = [{"epoch": 1, "lr": 0.1, "train_loss": 0.9, "train_acc": 0.5, "val_loss": 0.8, "val_acc": 0.6}]
    fig = curves_figure(history, model(mlp_spec((8, 8), [4])))
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks) and 1 in ticks, ticks
    plt.close(fig)


def test_with_label_smoothing_the_loss_curves_say_so_and_draw_the_floor():
    """With label smoothing the history's losses are against the smoothed targets, which no model
    scores below: the curves say what they measure and draw that floor; without, neither."""
    from figures.training import curves_figure, target_entropy

    history = [{"epoch": e, "lr": 0.1, "train_loss": 0.9 / e, "train_acc": 0.5, "val_loss": 0.8 / e, "val_acc": 0.6}
               for e in (1, 2)]
    m = model(mlp_spec((8, 8), [4]))
    probs = np.full(10, 0.1 / 10) + np.eye(10)[3] * 0.9  # smoothing 0.1 over 10 classes
    assert target_entropy(0.1, 10) == pytest.approx(-(probs * np.log(probs)).sum(), rel=1e-12)
    assert target_entropy(0.1, 10) == pytest.approx(0.5003, abs=1e-4) and target_entropy(0.0, 10) == 0.0
    for smoothing, floors in ((0.1, [target_entropy(0.1, 10)]), (0.0, [])):
        m.spec["training"] = {"shift": 0, "label_smoothing": smoothing}
        fig = curves_figure(history, m)
        loss = fig.axes[0]
        flat = [line.get_ydata()[0] for line in loss.lines if len(set(line.get_ydata())) == 1]
        assert flat == pytest.approx(floors), flat
        assert ("smoothed targets (label_smoothing 0.1)" in loss.get_ylabel()) == bool(smoothing), loss.get_ylabel()
        plt.close(fig)
