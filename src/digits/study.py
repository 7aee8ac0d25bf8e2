"""The study from data to conclusions: evaluate runs, compare them, and train-evaluate-compare in one go.

This is the glue behind `digits evaluate`, `digits compare` and `digits run`. It reads run folders
through digits.training.runs, scores models with digits.evaluate, draws with digits.reporting.plots and writes pages
with digits.reporting.html. `evaluate_predictions` takes plain (labels, probabilities), so an ensemble's averaged
probabilities get the same evaluation folder, figures and report as one trained model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from digits.data.mnist import Mnist
from digits.data.statistics import class_counts
from digits.errors import DigitsError
from digits.evaluation.calibration import calibrate_run, fit_run_not_a_digit, recorded_temperature, reliability
from digits.evaluation.comparison import Comparison, ModelSummary, compare, join_names
from digits.evaluation.conclusions import configurations_sentence, model_conclusion
from digits.evaluation.metrics import Evaluation, OverfittingVerdict, overfitting_verdict, score
from digits.inference.runtime import TTA_WORDS, with_temperature
from digits.inference.runtime import probabilities as model_probabilities
from digits.reporting import display, plots
from digits.reporting.html import GALLERY_SIZE, ComparisonSection, DataSection, ModelSection, write_report
from digits.training.runs import Run, check_new_folder, load_run, make_folder, new_output_folder, write_json

EVALUATION_DIR = "evaluation"
REPORT_FILE = "report.html"
# The presets `digits run` trains: the study's two shallow configurations, the shallow network at its best and
# the CNN, fast by default; the study's own three recipes with --exact.
QUICK_PRESETS = ("quick-shallow-mse", "quick-shallow-poisson", "quick-shallow", "quick-cnn")
EXACT_PRESETS = ("seed-shallow-mse", "seed-shallow-poisson", "seed-cnn")


@dataclass
class EvaluatedModel:
    """A model's evaluation and where its figures and report were written."""

    name: str
    source: str  # the run folder, or how the probabilities were made (an ensemble's members)
    config: dict
    metrics: dict
    architecture: list[dict]
    evaluation: Evaluation
    overfitting: OverfittingVerdict | None  # None when there are no learning curves (an ensemble)
    figures: dict[str, Path]
    out_dir: Path
    images: np.ndarray | None = None  # the evaluated test images, for drawing the mistakes again
    history: dict | None = None  # the run's per-epoch history (curves, conclusions); None for an ensemble
    calibration: dict | None = None  # expected_calibration_error, temperature, ..._calibrated

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_FILE

    # Each figure method returns a matplotlib Figure (shown inline in a notebook); the files are in out_dir.

    def learning_curves(self):
        if not self.history or not len(self.history.get("loss", [])):
            raise DigitsError(f"{self.name} has no learning curves (it was not trained as one run).")
        return plots.learning_curves(self.history, title=self.name, loss_name=plots.loss_name(self.config))

    def confusion_matrix(self):
        return plots.confusion_figure(self.evaluation.confusion, title=self.name)

    def mistakes(self, count: int = GALLERY_SIZE):
        if self.images is None:
            raise DigitsError(f"The test images of {self.name} were not kept, so its mistakes cannot be drawn.")
        return plots.mistakes_gallery(self.images, self.evaluation.mistakes, count=count, title=self.name)

    def per_class_table(self):
        return plots.per_class_table(self.evaluation.per_class, title=self.name)

    def _repr_html_(self) -> str:
        return display.evaluation_card(self)

    def summary(self) -> ModelSummary:
        parameters = self.metrics.get("parameters") or sum(row["parameters"] for row in self.architecture) or None
        return ModelSummary.from_evaluation(self.name, self.evaluation,
                                            training_seconds=self.metrics.get("training_seconds"),
                                            epochs=self.metrics.get("epochs"), parameters=parameters)

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
        return ModelSection(name=self.name, run_path=self.source, config=self.config, metrics=self.metrics,
                            architecture=self.architecture, evaluation=self.evaluation,
                            overfitting=self.overfitting, figures=self.figures)


@dataclass
class StudyResult:
    """Models evaluated and compared, and the folder holding their report (`compare` and `run_study`)."""

    folder: Path
    models: list[EvaluatedModel]
    comparison: Comparison
    conclusions: list[str] = field(default_factory=list)  # the study's findings, one sentence each

    @property
    def report(self) -> Path:
        return self.folder / REPORT_FILE

    def chart(self):
        """Test error, cross-entropy and training time of each model, as a matplotlib Figure."""
        return plots.comparison_chart(self.comparison.models)

    def _repr_html_(self) -> str:
        return display.comparison_card(self)


# --- one model ------------------------------------------------------------------------------------


def test_set(run: Run, data: Mnist, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The test images and labels a run is scored on: all, or the first test_limit of its recipe (or fewer, when
    `limit` asks for fewer)."""
    own_limit = run.config.get("recipe", {}).get("test_limit")
    limits = [value for value in (own_limit, limit) if value is not None]
    count = min(limits) if limits else None
    return data.test_images[:count], data.test_labels[:count]


def architecture(model) -> list[dict]:
    """One row per layer: name, type, output shape without the batch axis ("26 × 26 × 32"), parameters,
    and how they add up ("784 × 64 + 64": the kernel's weights plus one bias per unit)."""
    rows = []
    for layer in model.layers:
        try:
            shape = " × ".join(str(size) for size in tuple(layer.output.shape)[1:])
        except (AttributeError, ValueError):  # A layer that was never called has no output shape.
            shape = "?"
        arithmetic = " + ".join(" × ".join(str(size) for size in weight.shape) for weight in layer.weights)
        rows.append({"layer": layer.name, "type": type(layer).__name__, "output_shape": shape,
                     "parameters": int(layer.count_params()), "arithmetic": arithmetic})
    return rows


def evaluate_run(run: Run | str | Path, data: Mnist, out_dir: str | Path | None = None, *,
                 with_data_section: bool = True, tta: bool = False, test_limit: int | None = None,
                 calibrate: bool = False) -> EvaluatedModel:
    """Predict a finished run's test set and write evaluation.json, figures and report.html.

    With tta, each test image is read 5 times (itself and 1-pixel shifts) and the probabilities averaged:
    still one model, 5 times the inference. The output goes to `<run>/evaluation/` (`evaluation-tta/`) unless
    out_dir says otherwise; evaluating again replaces it. test_limit scores only the first N test images. With
    calibrate, a temperature is fitted on the holdout (`calibrate_run`) and the report shows the reliability
    before and after; a temperature fitted earlier (calibration.json in the run) is shown the same way. calibrate
    also fits the run's not-a-digit detector and thresholds (`fit_run_not_a_digit`; about a minute).
    """
    from digits.training.runs import load_model

    run = run if isinstance(run, Run) else load_run(run)
    if not isinstance(run.config.get("recipe"), dict):
        raise DigitsError(f"{run.path / 'config.json'} holds no recipe; the run is damaged, so train it again.")
    model = load_model(run)
    images, labels = test_set(run, data, test_limit)
    probabilities = model_probabilities(model, images, tta=tta)  # (N, 28, 28) uint8 -> (N, 10)
    temperature = calibrate_run(run, model, data) if calibrate else recorded_temperature(run)
    # The not-a-digit detector reads the model's features, fitted with the temperature the verdict will use.
    not_a_digit = fit_run_not_a_digit(run, model, data, temperature or 1.0) if calibrate else None
    # The preset names the model in tables ("quick-cnn"); the run folder stays in `source`.
    name = str(run.config.get("preset") or run.name) + (" with TTA" if tta else "")
    config = run.config
    if tta:
        config = {**config, "recipe": {**config["recipe"], "test_time_augmentation": TTA_WORDS}}
    default_dir = run.path / (EVALUATION_DIR + ("-tta" if tta else ""))
    return evaluate_predictions(
        name, labels, probabilities, images, Path(out_dir) if out_dir else default_dir,
        source=str(run.path), config=config, metrics=run.metrics, history=run.history,
        layers=architecture(model), data=data if with_data_section else None, temperature=temperature,
        not_a_digit={**not_a_digit.settings, "sentence": not_a_digit.line()} if not_a_digit else None,
    )


def evaluate_predictions(name: str, labels: np.ndarray, probabilities: np.ndarray, images: np.ndarray,
                         out_dir: str | Path, *, source: str, config: dict | None = None,
                         metrics: dict | None = None, history: dict | None = None,
                         layers: list[dict] | None = None, data: Mnist | None = None,
                         temperature: float | None = None, not_a_digit: dict | None = None) -> EvaluatedModel:
    """Evaluate any (labels, probabilities) of `images`, and write its evaluation folder and report.

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
    evaluated = EvaluatedModel(name=name, source=source, config=config or {}, metrics=metrics or {},
                               architecture=layers or [], evaluation=evaluation, overfitting=verdict,
                               figures=figures, out_dir=out_dir, images=images, history=history,
                               calibration=calibration)
    data_section = describe_data(data, [evaluated], out_dir) if data is not None else None
    write_report(evaluated.report, title=f"digits · {name}", models=[evaluated.section()], data=data_section)
    write_json(out_dir / "evaluation.json", _finite({
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
    counts = {model.evaluation.count for model in models}
    return DataSection(source=data.source, verified=data.verified,
                       train_class_counts=[int(count) for count in class_counts(data.train_labels)],
                       test_class_counts=[int(count) for count in class_counts(data.test_labels)],
                       evaluated_count=max(counts) if counts else len(data.test_labels), sample_grid=grid,
                       notes=notes)


# --- several models -------------------------------------------------------------------------------


def compare_models(models: list[EvaluatedModel], out_dir: Path, *, data: Mnist | None = None,
                   title: str = "digits · comparison", command: str | None = None,
                   extra: dict | None = None, json_name: str = "comparison.json",
                   conclusions: list[str] | None = None) -> Comparison:
    """Write the comparison chart, a JSON summary and one report holding every model, into out_dir; the
    report ends with `conclusions` (see `study_conclusions`)."""
    comparison = compare([model.summary() for model in models])
    conclusions = conclusions or []
    chart = out_dir / "comparison.png"
    plots.comparison_chart(comparison.models, chart)
    data_section = describe_data(data, models, out_dir) if data is not None else None
    write_report(out_dir / REPORT_FILE, title=title, models=[model.section() for model in models],
                 data=data_section, comparison=ComparisonSection(comparison, chart, conclusions), command=command)
    write_json(out_dir / json_name, _finite({
        **(extra or {}),
        "models": {model.name: {"source": model.source, "evaluation": str(model.out_dir / "evaluation.json")}
                   for model in models},
        "comparison": comparison.to_dict(),
        "conclusions": conclusions,
        "report": REPORT_FILE,
    }))
    return comparison


def study_conclusions(models: list[EvaluatedModel]) -> list[str]:
    """The study's two shallow configurations against each other, then each trained model against the study."""
    configurations = configurations_sentence([(model.summary(), model.config) for model in models])
    per_model = [model_conclusion(model.name, model.summary(), model.config, model.metrics, model.history or {})
                 for model in models if model.config.get("recipe")]
    return ([configurations] if configurations else []) + per_model


def compare_runs(paths: Sequence[Run | str | Path], data: Mnist, out_dir: str | Path | None = None, *,
                 command: str | None = None) -> StudyResult:
    """Evaluate each run (refreshing its evaluation folder) and write a comparison folder."""
    # Check every folder before the slow part starts.
    runs = [path if isinstance(path, Run) else load_run(path) for path in paths]
    if len({run.path.resolve() for run in runs}) < len(runs):
        raise DigitsError("The same run folder was given twice; name each run to compare once.")
    folder = new_output_folder(out_dir, runs[0].path.parent, "comparison")
    # Runs tested on different numbers of images (--test-limit) are compared on the images they all saw.
    counts = {run.name: len(test_set(run, data)[1]) for run in runs}
    common = min(counts.values())
    notes = []
    if len(set(counts.values())) > 1:
        tested = ", ".join(f"{name} on {count:,}" for name, count in counts.items())
        notes.append(f"The runs were tested on different numbers of test images ({tested}), so every model here is "
                     f"scored on the first {common:,}, the images they were all tested on.")
        # Scored on fewer images than their own, runs keep their own evaluation folders untouched.
        models = [evaluate_run(run, data, folder / f"{run.name}-first-{common}", test_limit=common) for run in runs]
    else:
        models = [evaluate_run(run, data) for run in runs]
    _disambiguate(models)
    conclusions = notes + study_conclusions(models)
    comparison = compare_models(models, folder, data=data, command=command, conclusions=conclusions)
    return StudyResult(folder=folder, models=models, comparison=comparison, conclusions=conclusions)


def run_study(data: Mnist, runs_dir: str | Path, *, exact: bool = False, train_limit: int | None = None,
              test_limit: int | None = None, epochs: int | None = None,
              out_dir: str | Path | None = None, command: str | None = None, verbose: int | str = "epochs",
              progress=print) -> StudyResult:
    """Train the study's models, evaluate them, compare them and write the study report.

    By default the quick presets: the shallow network under the study's two configurations (MSE + SGD, Poisson +
    Adadelta) with fast settings, the shallow network at its best (cross-entropy) and the CNN, each for a fixed
    number of epochs. With exact, the study's own three recipes, unchanged.
    """
    from digits.training.fit import train

    presets = EXACT_PRESETS if exact else QUICK_PRESETS
    recipes = study_recipes(exact=exact, train_limit=train_limit, test_limit=test_limit, epochs=epochs)
    if out_dir is not None:
        check_new_folder(Path(out_dir))  # Refuse before minutes of training, not after.
    models = []
    for number, recipe in enumerate(recipes, start=1):
        schedule = "" if recipe.schedule == "constant" else f" {recipe.schedule}"
        progress(f"[{number}/{len(recipes)}] training {recipe.preset}: {recipe.model}, {recipe.loss}, "
                 f"{recipe.optimizer}{schedule} lr {recipe.learning_rate:g}, batch {recipe.batch_size}, "
                 f"{recipe.epochs} epoch{'s' * (recipe.epochs != 1)}")
        run_dir = train(recipe, data, runs_dir, verbose=verbose).folder
        progress(f"[{number}/{len(recipes)}] evaluating {run_dir}")
        models.append(evaluate_run(run_dir, data))
    _disambiguate(models)
    # Created last, so an interrupted study leaves no empty study folder behind.
    folder = new_output_folder(out_dir, Path(runs_dir), "study")
    conclusions = study_conclusions(models)
    comparison = compare_models(
        models, folder, data=data, title="digits · the study", command=command, conclusions=conclusions,
        extra={"exact": exact, "presets": list(presets),
               "runs": [str(Path(model.source).resolve()) for model in models]},
        json_name="study.json",
    )
    return StudyResult(folder=folder, models=models, comparison=comparison, conclusions=conclusions)


def study_recipes(*, exact: bool = False, train_limit: int | None = None, test_limit: int | None = None,
                  epochs: int | None = None) -> list:
    """The recipes `digits run` trains, with the quick-try limits applied (DigitsError for bad values)."""
    from digits.training.recipes import get_preset, with_overrides

    return [with_overrides(get_preset(name), train_limit=train_limit, test_limit=test_limit, epochs=epochs)
            for name in (EXACT_PRESETS if exact else QUICK_PRESETS)]


def _disambiguate(models: list[EvaluatedModel]) -> None:
    """Models of the same preset are named by their run folders instead, so tables tell them apart."""
    names = [model.name for model in models]
    for model in models:
        if names.count(model.name) > 1:
            model.name = Path(model.source).name
    names = [model.name for model in models]
    for number, model in enumerate(models, start=1):
        if names.count(model.name) > 1:  # Same folder name under different parents.
            model.name = f"{model.name} ({number})"


def _finite(value):
    """JSON has no NaN: undefined numbers (a verdict without validation curves) are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value

