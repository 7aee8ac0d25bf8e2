"""The study from data to conclusions: report on runs, compare them, and train-report-compare in one go.

This is the glue behind `digits evaluate`, `digits compare` and `digits run`. It reads run folders through
digits.training.runs, predicts their test sets (digits.inference.runtime) and hands the probabilities to
digits.reporting.evaluated_model's `report_predictions`, which scores them and writes the figures and report. A
model just trained is scored as it is in memory; `compare_runs` only reads the runs it compares and writes every
evaluation into its own folder.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digits.data.mnist import Mnist
from digits.errors import DigitsError
from digits.evaluation.calibration import calibrate_run, fit_run_not_a_digit, recorded_temperature
from digits.evaluation.comparison import Comparison, compare
from digits.evaluation.conclusions import configurations_sentence, model_conclusion
from digits.inference.runtime import TTA_WORDS
from digits.inference.runtime import probabilities as model_probabilities
from digits.reporting import display, plots
from digits.reporting.evaluated_model import (
    EVALUATION_FILE,
    REPORT_FILE,
    EvaluatedModel,
    describe_data,
    json_safe,
    report_predictions,
)
from digits.reporting.html import ComparisonSection, write_report
from digits.training.runs import Run, check_new_folder, load_run, new_output_folder, write_json

# A run's own evaluation goes to RUN/evaluation/ (RUN/evaluation-tta/ with test-time augmentation).
EVALUATION_DIR = "evaluation"
# The presets `digits run` trains: the study's two shallow configurations, the shallow network at its best and
# the CNN, fast by default; the study's own three recipes with --exact.
QUICK_PRESETS = ("quick-shallow-mse", "quick-shallow-poisson", "quick-shallow", "quick-cnn")
EXACT_PRESETS = ("seed-shallow-mse", "seed-shallow-poisson", "seed-cnn")
STUDY_FILE = "study.json"
# One thread draws figures and writes reports beside training: more would only take cores from training.
DRAWING_THREADS = 1


@dataclass
class StudyResult:
    """Models evaluated and compared, and the folder holding their report (`compare` and `run_study`)."""

    folder: Path
    models: list[EvaluatedModel]
    comparison: Comparison
    conclusions: list[str] = field(default_factory=list)  # the study's findings, one sentence each
    seconds: dict[str, float] = field(default_factory=dict)
    """Where `run_study`'s time went: wall seconds per phase ("train quick-cnn", "figures and report quick-cnn",
    ...), in the order the phases started; models trained together share one phase ("train quick-shallow-mse +
    quick-shallow-poisson + quick-shallow"); figures and reports are drawn while the next model trains, so their
    seconds overlap training's."""

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


def report_run(run: Run | str | Path, data: Mnist, out_dir: str | Path | None = None, *, model=None,
               with_data_section: bool = True, tta: bool = False, test_limit: int | None = None,
               calibrate: bool = False) -> EvaluatedModel:
    """Predict a finished run's test set and write evaluation.json, figures and report.html.

    The same as `prepare_report(...)()`: the model's part, then the drawing and writing.
    """
    return prepare_report(run, data, out_dir, model=model, with_data_section=with_data_section, tta=tta,
                          test_limit=test_limit, calibrate=calibrate)()


def prepare_report(run: Run | str | Path, data: Mnist, out_dir: str | Path | None = None, *, model=None,
                   with_data_section: bool = True, tta: bool = False, test_limit: int | None = None,
                   calibrate: bool = False) -> Callable[[], EvaluatedModel]:
    """What `report_run` does with the model (predict, and calibrate if asked), now; returns the rest, which
    scores, draws the figures and writes the folder without touching the model, to call when convenient
    (`run_study` calls it in a second thread while the next model trains).

    model: the run's Keras model when it is in memory already (a TrainedRun's), scored as it is; without it the
    model is loaded from the run folder.

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
    model = model if model is not None else load_model(run)
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
    return functools.partial(
        report_predictions, name, labels, probabilities, images, Path(out_dir) if out_dir else default_dir,
        source=str(run.path), config=config, metrics=run.metrics, history=run.history,
        layers=architecture(model), data=data if with_data_section else None, temperature=temperature,
        not_a_digit={**not_a_digit.settings, "sentence": not_a_digit.line()} if not_a_digit else None,
    )


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
    write_json(out_dir / json_name, json_safe({
        **(extra or {}),
        "models": {model.name: {"source": model.source, "evaluation": str(model.out_dir / EVALUATION_FILE)}
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
                 models: Sequence | None = None, command: str | None = None) -> StudyResult:
    """Evaluate each run and write a comparison folder: out_dir (new or empty), else a new
    `<first run's runs folder>/<time>-comparison/`.

    Each run's evaluation goes into a folder of its own inside the comparison folder, so the runs' folders are
    only read, never written. models: the runs' Keras models where they are in memory (None for one to load).
    """
    # Check every folder before the slow part starts.
    runs = [path if isinstance(path, Run) else load_run(path) for path in paths]
    if len({run.path.resolve() for run in runs}) < len(runs):
        raise DigitsError("The same run folder was given twice; name each run to compare once.")
    in_memory = list(models) if models is not None else [None] * len(runs)
    folder = new_output_folder(out_dir, runs[0].path.parent, "comparison")
    # Runs tested on different numbers of images (--test-limit) are compared on the images they all saw.
    counts = {run.name: len(test_set(run, data)[1]) for run in runs}
    common = min(counts.values())
    notes = []
    if len(set(counts.values())) > 1:
        tested = ", ".join(f"{name} on {count:,}" for name, count in counts.items())
        notes.append(f"The runs were tested on different numbers of test images ({tested}), so every model here is "
                     f"scored on the first {common:,}, the images they were all tested on.")
    evaluated = [report_run(run, data, folder / name, model=model, test_limit=common)
                 for run, model, name in zip(runs, in_memory, _folder_names(runs), strict=True)]
    _disambiguate(evaluated)
    conclusions = notes + study_conclusions(evaluated)
    comparison = compare_models(evaluated, folder, data=data, command=command, conclusions=conclusions)
    return StudyResult(folder=folder, models=evaluated, comparison=comparison, conclusions=conclusions)


def run_study(data: Mnist, runs_dir: str | Path, *, exact: bool = False, train_limit: int | None = None,
              test_limit: int | None = None, epochs: int | None = None,
              out_dir: str | Path | None = None, command: str | None = None, verbose: int | str = "epochs",
              progress=print) -> StudyResult:
    """Train the study's models, evaluate them, compare them and write the study report.

    By default the quick presets: the shallow network under the study's two configurations (MSE + SGD, Poisson +
    Adadelta) with fast settings, the shallow network at its best (cross-entropy) and the CNN, each for a fixed
    number of epochs. With exact, the study's own three recipes, unchanged. The shallow networks are trained
    together, as branches of one model in one fit() (`digits.training.together`: each is the run it would be
    alone). Where the time went, phase by phase, is in the result's `seconds` and in study.json.
    """
    from digits.training.fit import train
    from digits.training.together import can_train_together, train_together

    presets = EXACT_PRESETS if exact else QUICK_PRESETS
    recipes = study_recipes(exact=exact, train_limit=train_limit, test_limit=test_limit, epochs=epochs)
    if out_dir is not None:
        check_new_folder(Path(out_dir))  # Refuse before minutes of training, not after.
    stopwatch = Stopwatch()
    reports: list[Future[EvaluatedModel]] = []
    # A model's figures and report are drawn in a second thread while the next model trains: TensorFlow runs a
    # whole epoch per call without Python's lock, and the small networks do not keep both cores busy.
    with ThreadPoolExecutor(max_workers=DRAWING_THREADS, thread_name_prefix="digits-report") as drawing:
        trained_count = 0
        for group in training_groups(recipes):
            for report in reports:
                if report.done():
                    report.result()  # A drawing that failed (a full disk) stops the study now, not at the end.
            numbers = list(range(trained_count + 1, trained_count + len(group) + 1))
            trained_count += len(group)
            for number, recipe in zip(numbers, group, strict=True):
                schedule = "" if recipe.schedule == "constant" else f" {recipe.schedule}"
                progress(f"[{number}/{len(recipes)}] training {recipe.preset}: {recipe.model}, {recipe.loss}, "
                         f"{recipe.optimizer}{schedule} lr {recipe.learning_rate:g}, batch {recipe.batch_size}, "
                         f"{recipe.epochs} epoch{'s' * (recipe.epochs != 1)}"
                         + (f" (in one graph with {', '.join(other.preset for other in group if other is not recipe)})"
                            if len(group) > 1 else ""))
            with stopwatch.phase("train " + " + ".join(recipe.preset for recipe in group)):
                if can_train_together(group):
                    trained_runs = train_together(group, data, runs_dir, verbose=verbose)
                else:
                    trained_runs = [train(group[0], data, runs_dir, verbose=verbose)]
            for number, trained in zip(numbers, trained_runs, strict=True):
                progress(f"[{number}/{len(recipes)}] evaluating {trained.folder}")
                with stopwatch.phase(f"predict {trained.recipe.preset}"):
                    # The model just trained, as it is in memory: nothing is loaded back from the run folder.
                    draw = prepare_report(trained.as_run(), data, model=trained.model)
                reports.append(drawing.submit(stopwatch.timed, f"figures and report {trained.recipe.preset}", draw))
        with stopwatch.phase("waiting for the last figures"):
            models = [report.result() for report in reports]
    _disambiguate(models)
    with stopwatch.phase("comparison and study report"):
        # Created last, so an interrupted study leaves no empty study folder behind.
        folder = new_output_folder(out_dir, Path(runs_dir), "study")
        conclusions = study_conclusions(models)
        comparison = compare_models(
            models, folder, data=data, title="digits · the study", command=command, conclusions=conclusions,
            extra={"exact": exact, "presets": list(presets),
                   "runs": [str(Path(model.source).resolve()) for model in models]},
            json_name=STUDY_FILE,
        )
    # Rewritten with the seconds of the comparison itself, which only end once it is written.
    summary = json.loads((folder / STUDY_FILE).read_text())
    write_json(folder / STUDY_FILE, {**summary, "seconds": stopwatch.seconds})
    return StudyResult(folder=folder, models=models, comparison=comparison, conclusions=conclusions,
                       seconds=stopwatch.seconds)


class Stopwatch:
    """Wall seconds per named phase, in the order the phases started (what `StudyResult.seconds` holds)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.seconds.setdefault(name, 0.0)  # Keeps the phases in the order they started.
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)

    def timed(self, name: str, work: Callable[[], EvaluatedModel]) -> EvaluatedModel:
        """`work()`, timed as the phase `name` (for work handed to another thread)."""
        with self.phase(name):
            return work()


def load_mnist_while_importing(data_dir: str | Path | None = None) -> Mnist:
    """MNIST as `digits.data.mnist.load_mnist(data_dir)` reads it, read and verified in a second thread while this
    one imports TensorFlow and Keras for training: decompressing and hashing run without Python's lock, so the
    data costs `digits run` almost nothing beside an import that takes seconds anyway."""
    from digits.data.mnist import load_mnist

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="digits-data") as reading:
        data = reading.submit(load_mnist, data_dir)
        import digits.training.fit  # noqa: F401  The import to overlap.
        return data.result()


def training_groups(recipes: Sequence) -> list[list]:
    """The recipes in the order given, with each run of neighbours that can be trained together
    (`digits.training.together.can_train_together`: the study's shallow networks) as one group."""
    from digits.training.together import can_train_together

    groups: list[list] = []
    for recipe in recipes:
        if groups and can_train_together([*groups[-1], recipe]):
            groups[-1].append(recipe)
        else:
            groups.append([recipe])
    return groups


def study_recipes(*, exact: bool = False, train_limit: int | None = None, test_limit: int | None = None,
                  epochs: int | None = None) -> list:
    """The recipes `digits run` trains, with the quick-try limits applied (DigitsError for bad values)."""
    from digits.training.presets import get_preset
    from digits.training.recipes import with_overrides

    return [with_overrides(get_preset(name), train_limit=train_limit, test_limit=test_limit, epochs=epochs)
            for name in (EXACT_PRESETS if exact else QUICK_PRESETS)]


def _folder_names(runs: Sequence[Run]) -> list[str]:
    """A folder name per run inside a comparison folder: the run's own, numbered when two runs share it."""
    names = [run.name for run in runs]
    return [name if names.count(name) == 1 else f"{name}-{number}" for number, name in enumerate(names, start=1)]


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
