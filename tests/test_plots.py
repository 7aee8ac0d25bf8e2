"""The figures: each returns a matplotlib Figure, writes a real PNG of a sensible size only when given a path,
and leaves no pyplot figure open."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from digits.evaluation.comparison import ModelSummary
from digits.evaluation.metrics import ClassScores, Mistake, score
from digits.reporting import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(figure, path):
    """The size of the PNG `figure` was saved as at `path`."""
    assert isinstance(figure, Figure)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()
        return image.size


@pytest.fixture
def history():
    epochs = np.arange(1, 11)
    return {"epoch": epochs, "loss": 1 / epochs, "accuracy": 1 - 0.1 / epochs,
            "val_loss": 1 / epochs + 0.01 * epochs, "val_accuracy": 1 - 0.12 / epochs}


def test_learning_curves_write_a_two_panel_png(tmp_path, history):
    path = tmp_path / "curves.png"
    width, height = read_png(plots.learning_curves(history, path, title="shallow"), path)
    assert width > 1.8 * height  # two panels side by side


def test_learning_curves_without_validation_still_draw(tmp_path, history, monkeypatch):
    monkeypatch.chdir(tmp_path)  # A file saved anywhere by default would land here.
    training_only = {key: history[key] for key in ("epoch", "loss", "accuracy")}
    figure = plots.learning_curves(training_only)
    assert [len(axes.get_lines()) for axes in figure.axes] == [1, 1]  # training only, nothing saved
    assert list(tmp_path.iterdir()) == []


def test_confusion_matrix_png(tmp_path):
    labels = np.repeat(np.arange(10), 20)
    probabilities = np.eye(10)[labels] * 0.9 + 0.01
    probabilities[:5] = np.eye(10)[9] * 0.9 + 0.01  # five 0s read as 9
    confusion = score(labels, probabilities).confusion

    path = tmp_path / "nested" / "confusion.png"
    width, height = read_png(plots.confusion_figure(confusion, path), path)
    assert 400 < width < 1200 and 400 < height < 1200


def test_mistakes_gallery_grows_with_the_mistakes_shown(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    mistakes = [Mistake(index=i, actual=4, predicted=9, confidence=0.97 - i / 100) for i in range(30)]

    five = read_png(plots.mistakes_gallery(images, mistakes[:5], tmp_path / "five.png"), tmp_path / "five.png")
    many = read_png(plots.mistakes_gallery(images, mistakes, tmp_path / "many.png", count=24, columns=8),
                    tmp_path / "many.png")
    none = read_png(plots.mistakes_gallery(images, [], tmp_path / "none.png"), tmp_path / "none.png")

    assert many[1] > 2.5 * five[1]  # three rows of eight against one row of five
    assert none[1] < five[1]  # a one-line "no mistakes" note


def test_comparison_chart_handles_unknown_training_time(tmp_path):
    models = [ModelSummary("cnn", 0.99, 0.03, 100, 10_000, 95.0, 4, 34_826),
              ModelSummary("ensemble", 0.995, 0.02, 50, 10_000)]
    path = tmp_path / "comparison.png"
    width, height = read_png(plots.comparison_chart(models, path), path)
    assert width > height


def test_per_class_table_lists_every_digit():
    scores = [ClassScores(digit, 0.99, 0.98 - (digit == 7) * 0.1, 0.985 - (digit == 7) * 0.05, 1000)
              for digit in range(10)]
    figure = plots.per_class_table(scores)
    cells = figure.axes[0].tables[0].get_celld()
    assert cells[(0, 3)].get_text().get_text() == "F1"
    assert [cells[(row, 0)].get_text().get_text() for row in range(1, 11)] == [str(digit) for digit in range(10)]
    assert cells[(8, 3)].get_text().get_text() == "0.935"  # digit 7, the weakest


def test_figures_without_a_path_write_nothing(tmp_path, monkeypatch, history):
    monkeypatch.chdir(tmp_path)
    figures = [plots.learning_curves(history), plots.confusion_figure(np.eye(10, dtype=int)),
               plots.sample_grid(np.zeros((12, 28, 28), np.uint8), np.arange(12))]
    assert all(isinstance(figure, Figure) for figure in figures)
    assert plots.to_png(figures[0])[:8] == PNG_SIGNATURE
    assert list(tmp_path.iterdir()) == []


def test_figures_leave_no_pyplot_figure_open(tmp_path, history):
    import matplotlib.pyplot as pyplot

    before = len(pyplot.get_fignums())
    plots.learning_curves(history, tmp_path / "curves.png")
    plots.confusion_figure(np.eye(10, dtype=int), tmp_path / "confusion.png")
    assert len(pyplot.get_fignums()) == before


def test_the_reliability_diagram_shows_every_bin_of_both_curves():
    from digits.evaluation.calibration import reliability

    generator = np.random.default_rng(0)
    labels = generator.integers(0, 10, 2000)
    # Mostly confident, right predictions, and a few unsure ones (top probability 0.2–0.4) that are mostly wrong.
    logits = generator.normal(size=(2000, 10))
    logits[np.arange(2000), labels] += np.where(np.arange(2000) < 1900, 8.0, 0.0)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    softened = np.exp(logits / 3) / np.exp(logits / 3).sum(axis=1, keepdims=True)  # a higher temperature
    before, after = reliability(labels, probabilities), reliability(labels, softened)
    axes = plots.reliability_diagram(before, after).axes[0]
    (x_low, x_high), (y_low, y_high) = axes.get_xlim(), axes.get_ylim()
    for bins in (before, after):
        filled = bins.counts > 0
        assert (x_low <= bins.confidence[filled]).all() and (bins.confidence[filled] <= x_high).all()
        assert (y_low <= bins.accuracy[filled]).all() and (bins.accuracy[filled] <= y_high).all()
