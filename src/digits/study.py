"""The study from data to conclusions: evaluate runs, compare them, and train-evaluate-compare in one go.

This is the glue behind `digits evaluate`, `digits compare` and `digits run`. It reads run folders
through digits.runs, scores models with digits.evaluate, draws with digits.plots and writes pages with
digits.report. `evaluate_predictions` takes plain (labels, probabilities), so an ensemble's averaged
probabilities get the same evaluation folder, figures and report as one trained model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digits import plots
from digits.data import Mnist, class_counts
from digits.errors import DigitsError
from digits.evaluate import (
    Comparison,
    Evaluation,
    ModelSummary,
    OverfittingVerdict,
    compare,
    evaluate,
    overfitting_verdict,
)
from digits.report import GALLERY_SIZE, ComparisonSection, DataSection, ModelSection, write_report
from digits.runs import Run, create_run_dir, load_run, make_folder, write_json

EVALUATION_DIR = "evaluation"
REPORT_FILE = "report.html"
# The presets `digits run` trains: fast by default, the study's own recipes with --exact.
QUICK_PRESETS = ("quick-shallow", "quick-cnn")
EXACT_PRESETS = ("seed-shallow-mse", "seed-cnn")


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

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_FILE

    def summary(self) -> ModelSummary:
        parameters = self.metrics.get("parameters") or sum(row["parameters"] for row in self.architecture) or None
        return ModelSummary.from_evaluation(self.name, self.evaluation,
                                            training_seconds=self.metrics.get("training_seconds"),
                                            epochs=self.metrics.get("epochs"), parameters=parameters)

    def section(self) -> ModelSection:
        return ModelSection(name=self.name, run_path=self.source, config=self.config, metrics=self.metrics,
                            architecture=self.architecture, evaluation=self.evaluation,
                            overfitting=self.overfitting, figures=self.figures)


@dataclass
class StudyResult:
    folder: Path
    models: list[EvaluatedModel]
    comparison: Comparison

    @property
    def report(self) -> Path:
        return self.folder / REPORT_FILE


# --- one model ------------------------------------------------------------------------------------


def test_set(run: Run, data: Mnist) -> tuple[np.ndarray, np.ndarray]:
    """The test images and labels a run is scored on: all, or the first test_limit of its recipe."""
    limit = run.config.get("recipe", {}).get("test_limit")
    return data.test_images[:limit], data.test_labels[:limit]


def architecture(model) -> list[dict]:
    """One row per layer: name, type, output shape without the batch axis ("26 × 26 × 32"), parameters."""
    rows = []
    for layer in model.layers:
        try:
            shape = " × ".join(str(size) for size in tuple(layer.output.shape)[1:])
        except (AttributeError, ValueError):  # A layer that was never called has no output shape.
            shape = "?"
        rows.append({"layer": layer.name, "type": type(layer).__name__, "output_shape": shape,
                     "parameters": int(layer.count_params())})
    return rows


def evaluate_run(run: Run | str | Path, data: Mnist, out_dir: str | Path | None = None, *,
                 with_data_section: bool = True, tta: bool = False) -> EvaluatedModel:
    """Predict a finished run's test set and write evaluation.json, figures and report.html.

    With tta, each test image is read 5 times (itself and 1-pixel shifts) and the probabilities averaged:
    still one model, 5 times the inference. The output goes to `<run>/evaluation/` (`evaluation-tta/`) unless
    out_dir says otherwise; evaluating again replaces it.
    """
    from digits.ensemble import TTA_WORDS, predict_member
    from digits.runs import load_model

    run = run if isinstance(run, Run) else load_run(run)
    if not isinstance(run.config.get("recipe"), dict):
        raise DigitsError(f"{run.path / 'config.json'} holds no recipe; the run is damaged, so train it again.")
    model = load_model(run)
    images, labels = test_set(run, data)
    probabilities = predict_member(model, images, tta=tta)  # (N, 28, 28) uint8 -> (N, 10)
    # The preset names the model in tables ("quick-cnn"); the run folder stays in `source`.
    name = str(run.config.get("preset") or run.name) + (" with TTA" if tta else "")
    config = run.config
    if tta:
        config = {**config, "recipe": {**config["recipe"], "test_time_augmentation": TTA_WORDS}}
    default_dir = run.path / (EVALUATION_DIR + ("-tta" if tta else ""))
    return evaluate_predictions(
        name, labels, probabilities, images, Path(out_dir) if out_dir else default_dir,
        source=str(run.path), config=config, metrics=run.metrics, history=run.history,
        layers=architecture(model), data=data if with_data_section else None,
    )


def evaluate_predictions(name: str, labels: np.ndarray, probabilities: np.ndarray, images: np.ndarray,
                         out_dir: str | Path, *, source: str, config: dict | None = None,
                         metrics: dict | None = None, history: dict | None = None,
                         layers: list[dict] | None = None, data: Mnist | None = None) -> EvaluatedModel:
    """Evaluate any (labels, probabilities) of `images`, and write its evaluation folder and report."""
    out_dir = Path(out_dir)
    make_folder(out_dir, "choose a writable --out folder")
    evaluation = evaluate(labels, probabilities)
    history = history or {}
    has_curves = len(history.get("loss", [])) > 0
    verdict = overfitting_verdict(history) if has_curves else None
    loss_name = (config or {}).get("recipe", {}).get("loss", "loss").replace("_", " ")
    figures = {}
    if has_curves:
        figures["curves"] = plots.learning_curves(history, out_dir / "learning_curves.png",
                                                  loss_name=loss_name)
    figures["confusion"] = plots.confusion_figure(evaluation.confusion, out_dir / "confusion.png")
    figures["mistakes"] = plots.mistakes_gallery(images, evaluation.mistakes, out_dir / "mistakes.png",
                                                 count=GALLERY_SIZE)
    evaluated = EvaluatedModel(name=name, source=source, config=config or {}, metrics=metrics or {},
                               architecture=layers or [], evaluation=evaluation, overfitting=verdict,
                               figures=figures, out_dir=out_dir)
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
        "figures": {key: path.name for key, path in figures.items()},
        "report": REPORT_FILE,
    }))
    return evaluated


def describe_data(data: Mnist, models: list[EvaluatedModel], out_dir: Path) -> DataSection:
    """The report's data section, with a sample grid written next to the report."""
    grid = plots.sample_grid(data.train_images, data.train_labels, out_dir / "samples.png", count=12)
    # One line per distinct training setup; models trained alike share it.
    setups: dict[str, list[str]] = {}
    for model in models:
        trained_on = model.config.get("data", {}).get("train_images")
        if trained_on is not None:
            setup = f"trained on {trained_on:,} images; validation: {model.config.get('validation', 'unknown')}."
            setups.setdefault(setup, []).append(model.name)
    notes = [f"{' and '.join(names)} {setup}" for setup, names in setups.items()]
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
                   extra: dict | None = None, json_name: str = "comparison.json") -> Comparison:
    """Write the comparison chart, a JSON summary and one report holding every model, into out_dir."""
    comparison = compare([model.summary() for model in models])
    chart = plots.comparison_chart(comparison.models, out_dir / "comparison.png")
    data_section = describe_data(data, models, out_dir) if data is not None else None
    write_report(out_dir / REPORT_FILE, title=title, models=[model.section() for model in models],
                 data=data_section, comparison=ComparisonSection(comparison, chart), command=command)
    write_json(out_dir / json_name, _finite({
        **(extra or {}),
        "models": {model.name: {"source": model.source, "evaluation": str(model.out_dir / "evaluation.json")}
                   for model in models},
        "comparison": comparison.to_dict(),
        "report": REPORT_FILE,
    }))
    return comparison


def compare_runs(paths: Sequence[Run | str | Path], data: Mnist, out_dir: str | Path | None = None, *,
                 command: str | None = None) -> tuple[Path, list[EvaluatedModel], Comparison]:
    """Evaluate each run (refreshing its evaluation folder) and write a comparison folder."""
    # Check every folder before the slow part starts.
    runs = [path if isinstance(path, Run) else load_run(path) for path in paths]
    if len({run.path.resolve() for run in runs}) < len(runs):
        raise DigitsError("The same run folder was given twice; name each run to compare once.")
    folder = new_output_folder(out_dir, runs[0].path.parent, "comparison")
    models = [evaluate_run(run, data) for run in runs]
    _disambiguate(models)
    comparison = compare_models(models, folder, data=data, command=command)
    return folder, models, comparison


def run_study(data: Mnist, runs_dir: str | Path, *, exact: bool = False, train_limit: int | None = None,
              test_limit: int | None = None, epochs: int | None = None, stop_at_target: bool = True,
              out_dir: str | Path | None = None, command: str | None = None, verbose: int = 2,
              progress=print) -> StudyResult:
    """Train the shallow network and the CNN, evaluate both, compare them and write the study report.

    The quick presets stop at the study's accuracy unless stop_at_target is False; the exact ones never stop.
    """
    from digits.train import train

    presets = EXACT_PRESETS if exact else QUICK_PRESETS
    recipes = study_recipes(exact=exact, train_limit=train_limit, test_limit=test_limit, epochs=epochs,
                            stop_at_target=stop_at_target)
    if out_dir is not None:
        check_new_folder(Path(out_dir))  # Refuse before minutes of training, not after.
    models = []
    for number, recipe in enumerate(recipes, start=1):
        schedule = "" if recipe.schedule == "constant" else f" {recipe.schedule}"
        stop = (f"at most {recipe.epochs} epochs, stopping at {recipe.target_accuracy:.2%}"
                if recipe.target_accuracy is not None else "")
        progress(f"[{number}/{len(recipes)}] training {recipe.preset}: {recipe.model}, {recipe.loss}, "
                 f"{recipe.optimizer}{schedule} lr {recipe.learning_rate:g}, {stop or f'{recipe.epochs} epochs'}")
        run_dir = train(recipe, data, runs_dir, verbose=verbose)
        progress(f"[{number}/{len(recipes)}] evaluating {run_dir}")
        models.append(evaluate_run(run_dir, data))
    _disambiguate(models)
    # Created last, so an interrupted study leaves no empty study folder behind.
    folder = new_output_folder(out_dir, Path(runs_dir), "study")
    comparison = compare_models(
        models, folder, data=data, title="digits · the study", command=command,
        extra={"exact": exact, "presets": list(presets),
               "runs": [str(Path(model.source).resolve()) for model in models]},
        json_name="study.json",
    )
    return StudyResult(folder=folder, models=models, comparison=comparison)


def study_recipes(*, exact: bool = False, train_limit: int | None = None, test_limit: int | None = None,
                  epochs: int | None = None, stop_at_target: bool = True) -> list:
    """The recipes `digits run` trains, with the quick-try limits applied (DigitsError for bad values)."""
    import dataclasses

    from digits.recipes import get_preset, with_overrides

    recipes = [with_overrides(get_preset(name), train_limit=train_limit, test_limit=test_limit, epochs=epochs)
               for name in (EXACT_PRESETS if exact else QUICK_PRESETS)]
    if not stop_at_target:
        recipes = [dataclasses.replace(recipe, target_accuracy=None) for recipe in recipes]
    return recipes


def summary_table(models: list[ModelSummary]) -> str:
    """A fixed-width table for the terminal, one row per model, best first."""
    headers = ["model", "test accuracy", "mistakes", "loss", "training time", "epochs", "parameters"]
    rows = [[model.name, f"{100 * model.accuracy:.2f} %", f"{model.mistakes:,} / {model.count:,}",
             f"{model.loss:.4f}", "—" if model.training_seconds is None else f"{model.training_seconds:,.1f} s",
             "—" if model.epochs is None else str(model.epochs),
             "—" if model.parameters is None else f"{model.parameters:,}"] for model in models]
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]
    lines = ["  ".join(text.ljust(width) if column == 0 else text.rjust(width)
                       for column, (text, width) in enumerate(zip(row, widths, strict=True)))
             for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# --- folders --------------------------------------------------------------------------------------


def new_output_folder(out_dir: str | Path | None, runs_dir: Path, kind: str) -> Path:
    """The given --out folder (new or empty), else a fresh runs/<time>-<kind>/ that no one else uses."""
    if out_dir is None:
        return create_run_dir(runs_dir, kind)
    out_dir = Path(out_dir)
    check_new_folder(out_dir)
    make_folder(out_dir, "choose a writable --out folder")
    return out_dir


def check_new_folder(folder: str | Path) -> None:
    """Refuse a --out folder that already holds files, so no earlier result is overwritten."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DigitsError(f"{folder} already exists and is not an empty folder; choose a new --out folder, "
                          "so nothing is overwritten.")


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

