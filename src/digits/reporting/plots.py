"""Figures: matplotlib only, drawing what data.py and evaluate.py computed.

Every function returns a `matplotlib.figure.Figure`, which a notebook shows inline, and writes a PNG only
when given a `path`. Figures are built with `Figure` rather than pyplot, so nothing stays registered (or
open) afterwards, and the CLI, the HTML report and a notebook draw with the same functions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from digits.errors import DigitsError

# --- sample grid ----------------------------------------------------------------------------------


def sample_grid(images: np.ndarray, labels: np.ndarray, path: str | Path | None = None, count: int = 12) -> Figure:
    """The first `count` images in a grid, each titled with its label; saved as a PNG at `path` if given."""
    count = min(count, len(images))
    # Shown as stored: white ink on black, pixel values 0..255.
    figure = tile_sheet(list(images[:count]), [str(label) for label in labels[:count]], columns=min(count, 6),
                        cell_width=1.3, caption_size=14, cmap="gray")
    return _save(figure, path)


def tile_sheet(tiles: list[np.ndarray], captions: list[str], *, columns: int, cell_width: float, caption_size: float,
               cmap: str, framed: bool = False, title: str | None = None) -> Figure:
    """28×28 images in rows of `columns`, each under its caption, drawn as one picture in one Axes.

    One Axes, not one per image: with a subplot and a layout pass per image, a gallery of 24 took about 2 s
    to draw; as one picture it takes a tenth of that. `cell_width` is the inches per image column.
    """
    rows = -(-len(tiles) // columns)  # Ceiling division: a last, partly filled row still gets drawn.
    side = tiles[0].shape[0] if tiles else 28
    gap = side // 4  # white space between neighbours, in image pixels
    units_per_inch = (side + gap) / cell_width
    lines = max(caption.count("\n") + 1 for caption in captions) if captions else 1
    caption_height = math.ceil(lines * caption_size * 1.3 / 72 * units_per_inch)
    title_height = math.ceil(0.4 * units_per_inch) if title else 0
    cell_height = caption_height + side + gap // 2
    width, height = columns * (side + gap), title_height + rows * cell_height + gap // 2
    # Masked pixels (the page between images) are drawn white whatever the colour map.
    sheet = np.ma.array(np.zeros((height, width)), mask=True)
    origins = []
    for number, tile in enumerate(tiles):
        row, column = divmod(number, columns)
        top, left = title_height + row * cell_height + caption_height, column * (side + gap) + gap // 2
        sheet[top:top + side, left:left + side] = tile
        origins.append((top, left))

    figure = Figure(figsize=(width / units_per_inch, height / units_per_inch), dpi=FIGURE_DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    colors = matplotlib.colormaps[cmap].with_extremes(bad="white")
    axes.imshow(sheet, cmap=colors, vmin=0, vmax=255, interpolation="nearest", aspect="auto",
                extent=(0, width, height, 0))
    for (top, left), caption in zip(origins, captions, strict=True):
        axes.text(left + side / 2, top - 1, caption, ha="center", va="bottom", fontsize=caption_size,
                  color=INK_COLOR, linespacing=1.15)
    if framed:  # A thin frame shows where each image ends on the white page.
        from matplotlib.collections import PatchCollection
        from matplotlib.patches import Rectangle

        frames = [Rectangle((left - 0.5, top - 0.5), side + 1, side + 1) for top, left in origins]
        axes.add_collection(PatchCollection(frames, facecolor="none", edgecolor=GRID_COLOR, linewidth=0.8))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    if title:
        axes.text(width / 2, title_height / 2, title, ha="center", va="center", fontsize=11, fontweight="bold",
                  color=INK_COLOR)
    return figure


# --- evaluation figures ---------------------------------------------------------------------------
# Each function draws only what digits.evaluate computed.

TRAIN_COLOR = "#2f6fdf"
VALIDATION_COLOR = "#ef7d32"
MODEL_COLORS = ["#2f6fdf", "#ef7d32", "#27a376", "#9b59b6", "#d64550", "#8c6d31"]
INK_COLOR = "#1f2430"
GRID_COLOR = "#e3e6ec"
# 110 dpi keeps figures sharp on screen while the embedded report stays a few hundred kilobytes.
FIGURE_DPI = 110
# Colours in a saved PNG's palette (to_png): as many as one palette holds.
PNG_COLOURS = 256
FIGURE_STYLE: dict[Any, Any] = {  # Any keys: matplotlib types them as a Literal of every rc name.
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.edgecolor": "#b8bdc7",
    "axes.labelcolor": INK_COLOR,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK_COLOR,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": "#555b66",
    "ytick.color": "#555b66",
    "legend.frameon": False,
}


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")


def _save(figure: Figure, path: str | Path | None) -> Figure:
    """Write `figure` as a PNG at `path` (when one is given) and return it."""
    if path is None:
        return figure
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_png(figure))
    except OSError as error:
        raise DigitsError(f"Cannot write {path} ({error.strerror or error}); choose a writable folder.") from None
    return figure


def to_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, as `_save` writes it (for pages, cards and notebooks that embed their figures).

    Stored with a palette of 256 colours: the figures draw few colours (and anti-aliased edges between them), so
    nothing visible changes, and each PNG is about a third of the size, which keeps a report or an executed
    notebook that embeds a dozen of them small (the executed study notebook: 443 KB, docs/notebook.md).
    """
    import io

    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    with Image.open(buffer) as drawn:
        palette = drawn.convert("RGB").quantize(PNG_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    compact = io.BytesIO()
    palette.save(compact, format="PNG", optimize=True)
    return compact.getvalue()


def loss_name(config: dict | None) -> str:
    """The loss a run's curves show, named for an axis ("categorical crossentropy", "mse", "poisson")."""
    return str((config or {}).get("recipe", {}).get("loss", "loss")).replace("_", " ")


def learning_curves(history: dict, path: str | Path | None = None, *, title: str | None = None,
                    loss_name: str = "loss") -> Figure:
    """Accuracy and loss per epoch, training against validation, side by side; marks the lowest validation loss."""
    epochs = np.asarray(history["epoch"])
    # A run trained with --validation none has nan in its val_ columns: it draws the training curves alone.
    has_validation = ("val_loss" in history and len(history["val_loss"]) == len(epochs) and len(epochs) > 0
                      and bool(np.isfinite(history["val_loss"]).all()))
    marker = "o" if len(epochs) <= 30 else None
    with matplotlib.rc_context(FIGURE_STYLE):
        figure = _new_figure(10, 3.6)
        accuracy_axes, loss_axes = figure.subplots(1, 2)
        for axes, key, label in ((accuracy_axes, "accuracy", "accuracy (%)"), (loss_axes, "loss", loss_name)):
            scale = 100 if key == "accuracy" else 1
            axes.plot(epochs, scale * np.asarray(history[key]), color=TRAIN_COLOR, marker=marker, markersize=3.5,
                      linewidth=1.8, label="training")
            if has_validation:
                axes.plot(epochs, scale * np.asarray(history[f"val_{key}"]), color=VALIDATION_COLOR, marker=marker,
                          markersize=3.5, linewidth=1.8, label="validation")
            axes.set_xlabel("epoch")
            axes.set_ylabel(label)
            axes.grid(True, color=GRID_COLOR, linewidth=0.8)
            axes.xaxis.get_major_locator().set_params(integer=True)
        accuracy_axes.set_title("Accuracy")
        loss_axes.set_title("Loss (the training objective)")
        if has_validation:
            best = int(np.argmin(history["val_loss"]))
            loss_axes.axvline(epochs[best], color="#9aa1ad", linestyle=":", linewidth=1.2)
            loss_axes.plot([epochs[best]], [history["val_loss"][best]], "o", color=VALIDATION_COLOR, markersize=8,
                           markerfacecolor="white", markeredgewidth=2,
                           label=f"lowest validation loss (epoch {epochs[best]})")
        accuracy_axes.legend(loc="lower right")
        loss_axes.legend(loc="best")
        if title:
            figure.suptitle(title, fontsize=12, fontweight="bold", color=INK_COLOR)
        return _save(figure, path)


def confusion_figure(confusion, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """The 10×10 confusion matrix with every non-zero count written in its cell (log colour scale)."""
    from matplotlib.colors import LogNorm

    confusion = np.asarray(confusion)
    classes = len(confusion)
    with matplotlib.rc_context(FIGURE_STYLE):
        figure = _new_figure(5.6, 5.2)
        axes = figure.subplots()
        # A log scale lets a handful of confusions show beside a thousand correct answers; empty cells stay white.
        shown = np.ma.masked_equal(confusion, 0)
        norm = LogNorm(vmin=1, vmax=max(int(confusion.max()), 2))
        axes.imshow(shown, cmap="Blues", norm=norm)
        for actual in range(classes):
            for predicted in range(classes):
                count = int(confusion[actual, predicted])
                if count == 0:
                    continue
                dark = norm(count) > 0.6
                wrong = actual != predicted
                axes.text(predicted, actual, f"{count}", ha="center", va="center",
                          fontsize=8 if count < 1000 else 7, fontweight="bold" if wrong else "normal",
                          color="white" if dark else ("#b3261e" if wrong else INK_COLOR))
        axes.set_xticks(range(classes))
        axes.set_yticks(range(classes))
        axes.set_xlabel("predicted digit")
        axes.set_ylabel("actual digit")
        axes.xaxis.set_label_position("top")
        axes.xaxis.tick_top()
        axes.tick_params(length=0)
        for spine in axes.spines.values():
            spine.set_visible(False)
        axes.set_xticks(np.arange(-0.5, classes), minor=True)
        axes.set_yticks(np.arange(-0.5, classes), minor=True)
        axes.grid(which="minor", color="white", linewidth=1.5)
        axes.tick_params(which="minor", length=0)
        if title:
            axes.set_title(title, pad=12)
        return _save(figure, path)


def mistakes_gallery(images, mistakes, path: str | Path | None = None, *, count: int = 24, columns: int = 8,
                     title: str | None = None) -> Figure:
    """The first `count` mistakes (most confident first) as digits captioned "actual 4 → predicted 9 (97 %)"."""
    shown = list(mistakes)[:count]
    with matplotlib.rc_context(FIGURE_STYLE):
        if not shown:
            figure = _new_figure(6, 1.2)
            figure.text(0.5, 0.5, "No mistakes: every image was read correctly.", ha="center", va="center",
                        fontsize=12, color=INK_COLOR)
            return _save(figure, path)
        # Dark ink on white reads like paper; MNIST stores bright ink on black.
        figure = tile_sheet(
            [images[mistake.index] for mistake in shown],
            [f"actual {mistake.actual} → predicted {mistake.predicted}\n({_confidence(mistake.confidence)})"
             for mistake in shown],
            columns=min(columns, len(shown)), cell_width=1.38, caption_size=7.5, cmap="gray_r", framed=True,
            title=title,
        )
        return _save(figure, path)


def _confidence(probability: float) -> str:
    """"97 %"; near-certain answers keep a decimal, so 99.6 % is not shown as a flat 100 %."""
    percent = 100 * probability
    if percent < 99:
        return f"{percent:.0f} %"
    return f"{percent:.1f} %" if percent < 99.95 else "> 99.9 %"


def comparison_chart(models, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Test error, test loss and training time of each model (digits.evaluation.comparison.ModelSummary rows), side by
    side.

    Every panel starts at zero, so bar lengths compare honestly: the error (100 % minus the accuracy) rather than
    the accuracy, whose bars would all look full or, cut off near the worst model, make a small gap fill the chart.
    """

    names = [model.name for model in models]
    colors = [MODEL_COLORS[index % len(MODEL_COLORS)] for index in range(len(models))]
    panels = [
        ("Test error (%, lower is better)", [100 * (1 - model.accuracy) for model in models], "{:.2f} %"),
        ("Test cross-entropy", [model.loss for model in models], "{:.3f}"),
        ("Training time (s)", [model.training_seconds for model in models], "{:,.1f}"),
    ]
    with matplotlib.rc_context(FIGURE_STYLE):
        figure = _new_figure(10, 0.9 + 0.55 * len(models))
        for index, (axes, (panel_title, values, label)) in enumerate(zip(figure.subplots(1, 3), panels, strict=True)):
            known = [value if value is not None else 0 for value in values]
            start = 0
            positions = range(len(models))
            axes.barh(positions, known, color=colors, height=0.6)
            right = (max(known) or 1) * 1.3
            axes.set_xlim(start, right)
            for position, value in zip(positions, values, strict=True):
                text = "n/a" if value is None else label.format(value)
                axes.text((value if value is not None else start) + (right - start) * 0.015, position, text,
                          va="center", fontsize=9, color=INK_COLOR)
            axes.set_yticks(list(positions), names if index == 0 else [""] * len(names))
            axes.invert_yaxis()
            axes.set_title(panel_title)
            axes.tick_params(axis="y", length=0)
            axes.grid(True, axis="x", color=GRID_COLOR, linewidth=0.8)
            axes.set_axisbelow(True)
        if title:
            figure.suptitle(title, fontsize=12, fontweight="bold", color=INK_COLOR)
        return _save(figure, path)


def per_class_table(per_class, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Precision, recall and F1 of each digit (`ClassScores` rows of digits.evaluation.metrics) as a table, the
    weakest F1 shaded."""
    rows = [[str(scores.digit), f"{scores.precision:.3f}", f"{scores.recall:.3f}", f"{scores.f1:.3f}",
             f"{scores.support:,}"] for scores in per_class]
    weakest = min(range(len(per_class)), key=lambda index: per_class[index].f1) if per_class else None
    with matplotlib.rc_context(FIGURE_STYLE):
        figure = _new_figure(4.8, 0.45 + 0.24 * (len(rows) + 1))
        axes = figure.subplots()
        axes.set_axis_off()
        table = axes.table(cellText=rows, colLabels=["digit", "precision", "recall", "F1", "images"],
                           loc="center", cellLoc="right", colLoc="right")
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        for (row, _column), cell in table.get_celld().items():
            cell.set_edgecolor(GRID_COLOR)
            if row == 0:
                cell.set_text_props(fontweight="bold", color=INK_COLOR)
            elif weakest is not None and row == weakest + 1:
                cell.set_facecolor("#fdecea")  # The digit the model reads worst.
        if title:
            axes.set_title(title)
        return _save(figure, path)


def reliability_diagram(before, after=None, path: str | Path | None = None, *, title: str | None = None) -> Figure:
    """Accuracy against confidence per bin (digits.evaluation.calibration.Reliability), before and, when given, after
    temperature scaling; the diagonal is a perfectly calibrated model. Saved only when given a path."""
    figure = _new_figure(4.6, 4.2)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="#9aa0a6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for reliability, colour, label in ((before, "#d93025", "as trained"), (after, "#1a73e8", "calibrated")):
        if reliability is None:
            continue
        filled = reliability.counts > 0
        axes.plot(reliability.confidence[filled], reliability.accuracy[filled], marker="o", color=colour,
                  label=f"{label} (ECE {100 * reliability.expected_calibration_error:.2f} %)")
    # Nearly every MNIST prediction is over 90 % sure, so the plot starts near the lowest point drawn rather than at
    # 0 — the lowest of both curves, on both axes (a calibrated curve sits lower; a bin's accuracy may fall below
    # its confidence), so no bin is cut off.
    drawn = [values[reliability.counts > 0] for reliability in (before, after) if reliability is not None
             for values in (reliability.confidence, reliability.accuracy)]
    lowest = float(np.nanmin(np.concatenate(drawn))) if drawn and any(len(values) for values in drawn) else 0.5
    low = max(0.0, math.floor(10 * min(0.5, lowest - 0.05)) / 10)
    axes.set(xlim=(low, 1.0), ylim=(low, 1.0), xlabel="confidence (top probability)", ylabel="accuracy",
             title=title or "Reliability on the test set")
    axes.legend(loc="upper left", fontsize=8)
    if path is not None:
        _save(figure, path)
    return figure
