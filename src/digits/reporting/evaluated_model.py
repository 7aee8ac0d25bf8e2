"""A model's evaluation together with its figures and report: what `digits.evaluate` returns.

`report_predictions` takes plain (labels, probabilities) and the images they read, scores them
(digits.evaluation.metrics.score), draws the figures, writes evaluation.json and report.html into a folder, and
returns an `EvaluatedModel`: the Evaluation's own fields (accuracy, mistakes, confusion, ...) plus where the model
came from and where its files went. A trained run and an ensemble's averaged probabilities go through the same
function, so both get the same folder, figures and report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digits.data.mnist import Mnist
from digits.data.statistics import class_counts
from digits.errors import DigitsError
from digits.evaluation.calibration import reliability
from digits.evaluation.comparison import ModelSummary, join_names
from digits.evaluation.metrics import Evaluation, OverfittingVerdict, evaluation_fields, overfitting_verdict, score
from digits.inference.runtime import with_temperature
from digits.reporting import display, plots
from digits.reporting.html import GALLERY_SIZE, DataSection, ModelSection, write_report
from digits.training.runs import make_folder, write_json

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class PerClassTable:
    """Each digit's precision, recall, F1 and test images (`ClassScores` rows), the weakest F1 marked."""

    name: str
    rows: list  # ClassScores, digit 0 to 9

    @property
    def weakest(self) -> int | None:
        """The digit read worst (lowest F1)."""
        return min(self.rows, key=lambda scores: scores.f1).digit if self.rows else None

    def figure(self):
        return plots.per_class_table(self.rows, title=self.name)

    def __repr__(self) -> str:
        lines = [f"{self.name}: per digit", "digit  precision  recall     F1  images"]
        lines += [f"{scores.digit:>5}  {scores.precision:>9.3f}  {scores.recall:>6.3f}  {scores.f1:>5.3f}  "
                  f"{scores.support:>6,}{'  (weakest)' if scores.digit == self.weakest else ''}"
                  for scores in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return display.per_class_table(self)
EVALUATION_FILE = "evaluation.json"


@dataclass(repr=False)
class EvaluatedModel(Evaluation):
    """A model's evaluation (accuracy, loss, count, confusion, mistakes, per_class, confused_pairs and
    mistake_count, as in an Evaluation) and where it came from and its figures and report were written."""

    name: str
    source: str  # the run folder, or how the probabilities were made (an ensemble's members)
    config: dict
    metrics: dict  # the run's metrics.json: training time, epochs, parameters
    architecture: list[dict]
    overfitting: OverfittingVerdict | None  # None when there are no learning curves (an ensemble)
    figures: dict[str, Path]
    out_dir: Path
    images: np.ndarray | None = None  # the evaluated test images, for drawing the mistakes again
    history: dict | None = None  # the run's per-epoch history (curves, conclusions); None for an ensemble
    calibration: dict | None = None  # expected_calibration_error, temperature, ..._calibrated

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_FILE

    def __repr__(self) -> str:
        return (f"EvaluatedModel({self.name!r}, accuracy {self.accuracy:.4f}, {self.mistake_count:,} mistakes in "
                f"{self.count:,}, report {str(self.report)!r})")

    # Each figure method returns a matplotlib Figure (shown inline in a notebook); the files are in out_dir.

    def learning_curves(self):
        if not self.history or not len(self.history.get("loss", [])):
            raise DigitsError(f"{self.name} has no learning curves (it was not trained as one run).")
        return plots.learning_curves(self.history, title=self.name, loss_name=plots.loss_name(self.config))

    def confusion_matrix(self):
        return plots.confusion_figure(self.confusion, title=self.name)

    def mistakes_gallery(self, count: int = GALLERY_SIZE):
        """The `count` most confident mistakes, drawn (`mistakes` holds them as data)."""
        if self.images is None:
            raise DigitsError(f"The test images of {self.name} were not kept, so its mistakes cannot be drawn.")
        return plots.mistakes_gallery(self.images, self.mistakes, count=count, title=self.name)

    def per_class_table(self) -> PerClassTable:
        """Precision, recall and F1 of each digit: an HTML table in a notebook, text in a terminal; `.figure()`
        draws it as the report does."""
        return PerClassTable(self.name, list(self.per_class))

    def _repr_html_(self) -> str:
        # Jupyter also finds this card by the class's name (digits/__init__.py), before the Evaluation's table.
        return display.evaluation_card(self)

    def summary(self) -> ModelSummary:
        parameters = self.metrics.get("parameters") or sum(row["parameters"] for row in self.architecture) or None
        recipe = (self.config or {}).get("recipe", {})
        calibration = self.calibration or {}
        return ModelSummary.from_evaluation(self.name, self, training_seconds=self.metrics.get("training_seconds"),
                                            epochs=self.metrics.get("epochs"), parameters=parameters,
                                            label_smoothing=recipe.get("label_smoothing"),
                                            calibration_error=calibration.get("expected_calibration_error"))

    def calibration_line(self) -> str:
        """One sentence on the expected calibration error, before and after the temperature if there is one, and
        one on the not-a-digit detector when it was fitted now."""
        calibration = self.calibration or {}
        line = f"Expected calibration error: {100 * calibration.get('expected_calibration_error', float('nan')):.2f} %"
        if calibration.get("temperature"):
            line += (f", {100 * calibration['expected_calibration_error_calibrated']:.2f} % at temperature "
                     f"{calibration['temperature']:.3f} (fitted on the holdout)")
        not_a_digit = calibration.get("not_a_digit")
        return line + "." + (f"\n{not_a_digit['sentence']}" if not_a_digit else "")

    def section(self) -> ModelSection:
        return ModelSection(**evaluation_fields(self), name=self.name, run_path=self.source, config=self.config,
                            metrics=self.metrics, architecture=self.architecture, overfitting=self.overfitting,
                            figures=self.figures)


def report_predictions(name: str, labels: np.ndarray, probabilities: np.ndarray, images: np.ndarray,
                       out_dir: str | Path, *, source: str, config: dict | None = None,
                       metrics: dict | None = None, history: dict | None = None,
                       layers: list[dict] | None = None, data: Mnist | None = None,
                       temperature: float | None = None, not_a_digit: dict | None = None) -> EvaluatedModel:
    """Score any (labels, probabilities) of `images`, and write its evaluation folder and report into out_dir.

    The reliability diagram shows the probabilities as given and, with a temperature, rescaled by it.
    not_a_digit: the settings and sentence of a not-a-digit detector fitted now, kept with the calibration.
    """
    out_dir = Path(out_dir)
    make_folder(out_dir, "choose a writable `out_dir`")
    evaluation = score(labels, probabilities)
    history = history or {}
    has_curves = len(history.get("loss", [])) > 0
    verdict = overfitting_verdict(history) if has_curves else None
    figures = {}
    if has_curves:
        figures["curves"] = out_dir / "learning_curves.png"
        plots.learning_curves(history, figures["curves"], loss_name=plots.loss_name(config))
    figures["confusion"] = out_dir / "confusion.png"
    plots.confusion_figure(evaluation.confusion, figures["confusion"])
    figures["mistakes"] = out_dir / "mistakes.png"
    plots.mistakes_gallery(images, evaluation.mistakes, figures["mistakes"], count=GALLERY_SIZE)
    before = reliability(labels, probabilities)
    after = reliability(labels, with_temperature(probabilities, temperature)) if temperature else None
    figures["reliability"] = out_dir / "reliability.png"
    plots.reliability_diagram(before, after, figures["reliability"])
    calibration = {"expected_calibration_error": before.expected_calibration_error, "temperature": temperature,
                   "expected_calibration_error_calibrated": after.expected_calibration_error if after else None,
                   "not_a_digit": not_a_digit}
    evaluated = EvaluatedModel(**evaluation_fields(evaluation), name=name, source=source, config=config or {},
                               metrics=metrics or {}, architecture=layers or [], overfitting=verdict,
                               figures=figures, out_dir=out_dir, images=images, history=history,
                               calibration=calibration)
    data_section = describe_data(data, [evaluated], out_dir) if data is not None else None
    write_report(evaluated.report, title=f"digits · {name}", models=[evaluated.section()], data=data_section)
    # The file keeps its layout (the scores under "evaluation"), so what earlier versions wrote still reads.
    write_json(out_dir / EVALUATION_FILE, json_safe({
        "name": name,
        "source": source,
        "evaluated": datetime.now().astimezone().isoformat(timespec="seconds"),
        "test_images": evaluation.count,
        "parameters": evaluated.summary().parameters,
        "training": evaluated.metrics,
        "architecture": evaluated.architecture,
        "evaluation": evaluation.to_dict(),
        "overfitting": verdict.to_dict() if verdict else None,
        "calibration": calibration,
        "figures": {key: path.name for key, path in figures.items()},
        "report": REPORT_FILE,
    }))
    return evaluated


def describe_data(data: Mnist, models: list[EvaluatedModel], out_dir: Path) -> DataSection:
    """The report's data section, with a sample grid written next to the report."""
    grid = out_dir / "samples.png"
    plots.sample_grid(data.train_images, data.train_labels, grid, count=12)
    # One line per distinct training setup; models trained alike share it.
    setups: dict[str, list[str]] = {}
    for model in models:
        trained_on = model.config.get("data", {}).get("train_images")
        if trained_on is not None:
            setup = f"trained on {trained_on:,} images; validation: {model.config.get('validation', 'unknown')}."
            setups.setdefault(setup, []).append(model.name)
    notes = [f"{join_names(names)} {setup}" for setup, names in setups.items()]
    for model in models:
        trained_source = model.config.get("data", {}).get("source")
        if trained_source and trained_source != data.source:
            notes.append(f"{model.name} was trained on data from {trained_source}, but is scored here on "
                         f"{data.source}.")
    counts = {model.count for model in models}
    return DataSection(source=data.source, verified=data.verified,
                       train_class_counts=[int(count) for count in class_counts(data.train_labels)],
                       test_class_counts=[int(count) for count in class_counts(data.test_labels)],
                       evaluated_count=max(counts) if counts else len(data.test_labels), sample_grid=grid,
                       notes=notes)


def json_safe(value):
    """JSON has no NaN: undefined numbers (a verdict without validation curves) are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value
