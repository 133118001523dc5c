"""The figures about the test set: what the model answered, where it errs, how sure it is.

Pure functions: arrays in, a matplotlib Figure out (figures/report.py saves them).
x: (N, H, W) or (N, H, W, C) uint8 images, y: (N,) labels, probs: (N, C) probabilities, classes: C names.
"""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

OK, BAD = "#1a7f37", "#cf222e"
DIAGONAL = "#dcefdc"  # the right answers' cells in the confusion matrix


def sure(p: float) -> str:
    """A probability as a learner reads it: '87%', and '>99%' rather than a rounded '100%'."""
    return ">99%" if p > 0.99 else f"{100 * p:.0f}%"


def answer(pred: int, true: int, p: float, classes: list[str]) -> str:
    """A grid title: the answer and how sure; on a mistake, the true class below it."""
    said = f"{classes[pred]} ({sure(p)})"
    return said if pred == true else f"{said}\nbut is {classes[true]}"


def show_image(ax, img) -> None:
    """A uint8 image as its data means it: (H, W) a digit, dark ink on white paper as written;
    (H, W, 1) a grey picture and (H, W, 3) an RGB one, as they are."""
    if img.ndim == 2:
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=255)
    elif img.shape[2] == 3:
        ax.imshow(img)
    else:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255)


def image_grid(x, titles, colors, suptitle):
    n = len(x)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    width = max(1.6 * cols, 5.0)  # a few images still leave room for the title
    suptitle = "\n".join(textwrap.fill(line, int(width * 11)) for line in suptitle.splitlines())
    fig, axes = plt.subplots(rows, cols, figsize=(width, 1.9 * rows + 0.3 + 0.2 * suptitle.count("\n")),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title, color in zip(axes.flat, x, titles, colors):
        show_image(ax, img)
        ax.set_title(title, fontsize=8, color=color)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def predictions_figure(x, y, probs, classes, samples, rng):
    idx = np.sort(rng.choice(len(y), size=min(samples, len(y)), replace=False))
    pred = probs.argmax(axis=1)
    titles = [answer(pred[i], y[i], probs[i, pred[i]], classes) for i in idx]
    colors = [OK if pred[i] == y[i] else BAD for i in idx]
    wrong = int((pred[idx] != y[idx]).sum())
    tally = f"all {len(idx)} right" if wrong == 0 else f"{wrong} of {len(idx)} wrong"
    return image_grid(x[idx], titles, colors,
                      f"{len(idx)} random test image{'s' * (len(idx) != 1)}: the model's answer (how sure it is)\n"
                      f"green: right; red: wrong, with the true class below ({tally})")


def misclassified_figure(x, y, probs, classes, count):
    pred = probs.argmax(axis=1)
    errors = np.flatnonzero(pred != y)
    if errors.size == 0:
        order = np.argsort(probs[np.arange(len(y)), y], kind="stable")[:count]
        title = (f"No mistakes: the {len(order)} right answer{'s' * (len(order) != 1)} the model was least "
                 "sure of")
        colors = [OK] * len(order)
    else:
        order = errors[np.argsort(-probs[errors, pred[errors]], kind="stable")][:count]
        title = (f"The {len(order)} mistake{'s' * (len(order) != 1)} the model was surest of ({errors.size} in all):\n"
                 "its answer (how sure it was), then the true class")
        colors = [BAD] * len(order)
    titles = [answer(pred[i], y[i], probs[i, pred[i]], classes) for i in order]
    return image_grid(x[order], titles, colors, title)


def tick_labels(ax, classes):
    n = len(classes)
    long = max(len(c) for c in classes) > 2
    ax.set_xticks(range(n), classes, rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(n), classes)


def confusion_figure(y, probs, classes):
    """Counts in every cell; the mistakes coloured by their share of the true class
    (row-normalised), the right answers on the diagonal apart, in green."""
    n = len(classes)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (y, probs.argmax(axis=1)), 1)
    per_row = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    share = 100 * counts / per_row
    off = ~np.eye(n, dtype=bool)
    top = max(float(share[off].max()), 1.0)
    fig, ax = plt.subplots(figsize=(2.2 + 0.62 * n, 1.6 + 0.55 * n))
    errors = ax.imshow(np.ma.masked_where(~off | (counts == 0), share), cmap="Reds", vmin=0, vmax=top)
    ax.imshow(np.ma.masked_where(off, np.ones((n, n))), cmap=ListedColormap([DIAGONAL]))
    size = 9 if n <= 12 else 6
    for (i, j), c in np.ndenumerate(counts):
        if i == j:
            ax.text(j, i, f"{c}\n{share[i, i]:.1f}%", ha="center", va="center", fontsize=size - 1, color=OK)
        elif c:
            ax.text(j, i, str(c), ha="center", va="center", fontsize=size,
                    color="white" if share[i, j] > 0.6 * top else "black")
    tick_labels(ax, classes)
    ax.set(xlabel="predicted class", ylabel="true class")
    wrong = int(counts[off].sum())
    ax.set_title(f"Confusion matrix: {len(y):,} test images, {wrong:,} wrong\n"
                 "green: right (count, % of the class); red: mistakes; empty: none", fontsize=10)
    fig.colorbar(errors, ax=ax, shrink=0.8, label="mistakes, % of the true class's images", format="{x:g}%")
    fig.tight_layout()
    return fig


def per_class_figure(y, probs, classes):
    """The share of each class's test images the model gets wrong, worst on top."""
    n = len(classes)
    pred = probs.argmax(axis=1)
    support = np.bincount(y, minlength=n)
    wrong = np.bincount(y[pred != y], minlength=n)
    rate = 100 * wrong / np.maximum(support, 1)
    order = np.argsort(-rate, kind="stable")[::-1]  # barh draws bottom-up: worst ends on top
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.38 * n))
    ax.barh(range(n), rate[order], color=BAD, height=0.6)
    right = max(float(rate.max()), 0.5)
    for row, c in enumerate(order):
        said = f"{wrong[c]} of {support[c]:,} wrong ({100 - rate[c]:.1f}% right)" if support[c] else "no test images"
        ax.text(rate[c] + right * 0.02, row, said,
                va="center", fontsize=8, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    overall = 100 * float((pred != y).mean())
    ax.axvline(overall, color="gray", linestyle="--", linewidth=1)
    ax.text(overall, n - 0.4, f" all classes: {overall:.2f}%", color="gray", fontsize=8, va="bottom")
    ax.set_yticks(range(n), [classes[c] for c in order])
    ax.set_xlim(0, right * 1.6)
    ax.set_ylim(-0.6, n + 0.2)
    ax.set(xlabel="wrong answers, % of the class's test images", ylabel="true class")
    ax.xaxis.set_major_formatter("{x:g}%")
    ax.set_title(f"Accuracy per class: how often each class is missed, worst on top\n"
                 f"({len(y):,} test images; overall accuracy {100 - overall:.2f}%)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def confidence_figure(y, probs, classes):
    """How sure the model is (its top probability) when it is right and when it is wrong."""
    top = probs.max(axis=1)
    right = probs.argmax(axis=1) == y
    bins = np.linspace(0, 1, 21)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for mask, color, name in ((right, OK, "right"), (~right, BAD, "wrong")):
        count = int(mask.sum())
        share = 100 * np.histogram(top[mask], bins=bins)[0] / max(count, 1)
        above = 100 * float((top[mask] > 0.99).mean()) if count else 0.0
        ax.stairs(share, bins, fill=True, alpha=0.35, color=color)
        ax.stairs(share, bins, color=color, linewidth=1.5,
                  label=f"{count:,} {name} answers: {above:.0f}% of them >99% sure")
    ax.axvline(1 / len(classes), color="gray", linestyle=":", linewidth=1)
    ax.text(1 / len(classes), 0.5, f"the lowest it can be: 1/{len(classes)} ", transform=ax.get_xaxis_transform(),
            rotation=90, ha="right", va="center", color="gray", fontsize=8)
    ax.set(xlim=(0, 1), xlabel="the model's top probability for the image (how sure it is)",
           ylabel="% of the group's answers")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"How sure is the model? Its right answers vs its wrong ones ({len(y):,} test images)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
