"""The figures about training and the trained model: the curves, and what the first layer learned.

Pure functions: history records / a loaded model in, a matplotlib Figure out.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # 0.05, 0.1, 0.002: no 5×10⁻² to decode
FIRST_UNITS = 64  # of an MLP's first hidden layer


def log_ticks(ax) -> None:
    """Label a log y axis 0.05, 0.1, 0.2, 0.5 (1-2-5 steps; every step where the range is short)."""
    lo, hi = ax.get_ylim()
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for steps in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in decades for m in steps if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 3:
            break
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_minor_formatter(NullFormatter())


def accuracy_note(model, history) -> str:
    """Why validation accuracy can beat training accuracy - true for this run's settings."""
    rates = sorted({layer.rate for layer in model.layers if layer.kind == "dropout" and layer.rate > 0})
    shift = model.spec.get("training", {}).get("shift", 0)
    handicaps = ([f"dropout {' / '.join(f'{100 * r:g}%' for r in rates)}"] if rates else []) + \
                ([f"images shifted by up to {shift} px"] if shift else [])
    above = history[-1]["val_acc"] > history[-1]["train_acc"]
    lines = ["Why is validation above training?" if above else "How the two are measured:",
             "- train: averaged over each epoch while the weights still change"
             + (",\n   with " + " and ".join(handicaps) + " (harder than the real task)" if handicaps else ""),
             "- validation: after the epoch, on unaltered images" + (", without dropout" if rates else "")]
    return "\n".join(lines)


def target_entropy(smoothing: float, classes: int) -> float:
    """The lowest cross-entropy any model can score against label-smoothed targets: the targets'
    own entropy ((1 - s) one-hot + s / k spread over k classes; 0 without smoothing)."""
    spread = smoothing / classes
    true = 1 - smoothing + spread
    return float(-(true * math.log(true) + (classes - 1) * spread * math.log(spread))) if smoothing else 0.0


def curves_figure(history, model, kept: int | None = None):
    """Loss, accuracy and learning rate per epoch; `kept`, if not the last epoch, is marked: the
    epoch whose weights early stopping kept."""
    epochs = [r["epoch"] for r in history]
    fig, (loss, acc, lr) = plt.subplots(1, 3, figsize=(15, 5.4), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    for key, name in (("train", "train"), ("val", "validation")):
        loss.plot(epochs, [r[f"{key}_loss"] for r in history], "o-", label=name)
        acc.plot(epochs, [100 * r[f"{key}_acc"] for r in history], "o-", label=name)
    ylabel = "cross-entropy loss (log scale)"
    smoothing = model.spec.get("training", {}).get("label_smoothing", 0)
    if smoothing:  # the losses are against the smoothed targets: they cannot fall below the targets' entropy
        floor = target_entropy(smoothing, model.output_shape[-1])
        loss.axhline(floor, color="0.5", linestyle="--", label=f"lowest possible: {floor:.3g}")
        ylabel += f"\nagainst smoothed targets (label_smoothing {smoothing:g})"
    loss.set(yscale="log", xlabel="epoch", ylabel=ylabel, title="Loss (lower is better)")
    log_ticks(loss)
    acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (higher is better)")
    lr.plot(epochs, [r["lr"] for r in history], "o-", color="0.35")
    lr.set(xlabel="epoch", ylabel="learning rate", title="Learning rate (at each epoch's end)",
           ylim=(0, 1.08 * max(r["lr"] for r in history)))
    lr.yaxis.set_major_locator(MaxNLocator(5))
    lr.yaxis.set_major_formatter(PLAIN)
    for ax in (loss, acc, lr):
        if kept is not None and kept != epochs[-1]:
            ax.axvline(kept, color="0.4", linestyle=":", label=f"kept: epoch {kept}" if ax is loss else None)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:  # one point: matplotlib would span 0.95..1.05 and tick fractions of it
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    loss.legend()
    acc.legend(loc="lower right")
    fig.tight_layout(rect=(0, 0.15, 1, 1))  # room below for the note, under the accuracy panel
    fig.text(acc.get_position().x0, 0.02, accuracy_note(model, history), va="bottom", fontsize=8.5,
             bbox={"boxstyle": "round", "facecolor": "#f6f8fa", "edgecolor": "0.8"})
    return fig


def first_layer(model):
    """(kind, index, W) of the first layer with weights, W as a host array; None if none."""
    params = model.named_parameters()
    for i, layer in enumerate(model.layers):
        if f"{i}.{layer.kind}.W" in params:
            return layer.kind, i, params[f"{i}.{layer.kind}.W"]
    return None


def _unit_scale(img):
    """`img` / its largest magnitude: values in [-1, 1] (all zeros stay zeros)."""
    return img / (float(np.abs(img).max()) or 1.0)


def weight_grid(images, titles, suptitle, label, blank=None):
    """Weights as pictures, each on its own symmetric scale. (h, w) ones: red raises the unit, blue
    lowers it; `blank` (h, w) True where no image has ink: those weights are drawn grey (they only add
    a constant). (h, w, 3) ones, of RGB inputs, in colour: mid-grey is 0, and a pixel's colour is the
    colour that raises the unit most there."""
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.8")
    n = len(images)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    colour = images[0].ndim == 3
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols + 1.2, 1.35 * rows + 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        if colour:
            ax.imshow(np.clip(0.5 + 0.5 * _unit_scale(img), 0, 1))
        else:  # the scale is that of the weights drawn
            img = np.ma.masked_where(np.zeros(img.shape, bool) if blank is None else blank, img)
            shown = ax.imshow(_unit_scale(img), cmap=cmap, vmin=-1, vmax=1)
        ax.set_title(title, fontsize=7)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    if not colour:
        bar = fig.colorbar(shown, cax=fig.add_axes((0.92, 0.15, 0.015, 0.6)), ticks=[-1, 0, 1])
        bar.ax.set_yticklabels(["most\nnegative", "0", "most\npositive"], fontsize=7)
        bar.set_label(label, fontsize=8)
    return fig


def pictures(columns: np.ndarray, shape: tuple[int, ...]) -> tuple[list[np.ndarray], str]:
    """Weight columns (inputs, units) -> one picture per unit, and what they show: (H, W) as they
    are, (H, W, 1) grey and (H, W, 3) RGB inputs by their channels, other C by the first channel."""
    images = [columns[:, u].reshape(shape) for u in range(columns.shape[1])]
    if len(shape) == 2 or shape[2] == 3:
        return images, ""
    return [img[..., 0] for img in images], "" if shape[2] == 1 else f" (input channel 1 of {shape[2]})"


def first_layer_figure(model, classes, x):
    """The weights of the first layer as images: an MLP's first Dense units as input-shaped
    pictures (its first FIRST_UNITS; grey where none of the images `x` (N, H, W[, C]) has ink),
    a CNN's first Conv2D kernels."""
    found = first_layer(model)
    shape = tuple(model.input_shape)
    if found and found[0] == "dense" and found[2].shape[0] == math.prod(shape) and len(shape) in (2, 3):
        _, i, w = found
        units = w.shape[1]
        if not any(layer.kind == "dense" for layer in model.layers[i + 1:]):  # no hidden layer: it is the output
            shown, titles, what = units, list(classes), f"the output layer's {units} units (one per class)"
        else:
            shown = min(units, FIRST_UNITS)
            titles = [f"unit {u}" for u in range(shown)]
            what = f"the first {shown} of the {units} hidden units" if shown < units else f"its {units} hidden units"
        images, which = pictures(w[:, :shown], shape)
        colour = images[0].ndim == 3
        blank = x.max(axis=0) == 0
        blank = blank if blank.ndim == 2 else blank.all(axis=2)
        how = ("Mid-grey: 0; a colour: that colour there raises the unit" if colour
               else "Red: ink there raises the unit; blue: ink there lowers it")
        suptitle = (f"What the first layer looks for: {what}, each one's {w.shape[0]} input weights drawn as\n"
                    f"a {shape[0]}x{shape[1]} image{which}. {how}"
                    + ("; grey: no test image\never has ink there (those weights only add a constant)"
                       if blank.any() and not colour else ""))
        return weight_grid(images, titles, suptitle, "weight (each picture on its own scale)", blank)
    if found and found[0] == "conv2d":
        _, i, w = found
        k = model.layers[i].kernel
        channels = w.shape[0] // (k * k)
        images, which = pictures(w, (k, k, channels))
        suptitle = (f"What the first convolution looks for: its {w.shape[1]} {k}x{k} filters{which}\n"
                    + ("mid-grey: 0; a colour: that colour there raises the filter's output"
                       if channels == 3 else "red: ink there raises the filter's output; blue: lowers it "
                       "(a red line between blue ones finds such strokes)"))
        return weight_grid(images, [f"filter {f}" for f in range(len(images))], suptitle,
                           "weight (each filter on its own scale)")
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, "This model's first layer has no image-shaped weights to draw.", ha="center", va="center")
    return fig
