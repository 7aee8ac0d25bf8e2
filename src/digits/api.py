"""The Python API: the few functions a notebook (and the `digits` command) calls.

`import digits` exposes each of them lazily (`digits.train`, `digits.evaluate`, ...), so importing the
package, or running `digits --help`, loads no TensorFlow. Every function takes library words
(`epochs=3`, `validation="holdout"`) and returns an object that shows itself in a notebook.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

import numpy as np

from digits.data.mnist import Mnist, load_mnist
from digits.errors import DigitsError
from digits.training.presets import PRESETS, Presets
from digits.training.presets import get_preset as preset_recipe  # this module's get_preset takes overrides too
from digits.training.recipes import Recipe, with_overrides

if TYPE_CHECKING:
    from digits.inference.files import FileResults
    from digits.inference.prediction import Predictions

__all__ = ["load_mnist", "presets", "get_preset", "build_model", "train", "load_run", "evaluate", "compare",
           "predict", "run_study"]


def presets() -> Presets:
    """The named presets (a dict): each a recipe, what it is for, and what the study reported for it."""
    return Presets(PRESETS)


def get_preset(name: str, **overrides) -> Recipe:
    """The recipe of preset `name` with some fields replaced, e.g. `get_preset("quick-cnn", epochs=2)`; None
    values keep the preset's value (no preset has a stopping target, so `target_accuracy=None` means none)."""
    return with_overrides(preset_recipe(name), **overrides)


def build_model(name: str, **options):
    """A fresh, uncompiled Keras model of an architecture ("shallow", "cnn", "cnn-bn"); see `digits models`.

    `precision="auto"` takes bfloat16 where a short measurement on this CPU found it faster (digits.training.precision).
    """
    # Imported here: Keras (and TensorFlow) load only once a model is needed, not to list presets or data.
    from digits.training.models import build_model as build

    if options.get("precision") == "auto":
        from digits.training.precision import choose_precision

        options["precision"] = choose_precision("auto", name).precision
    return build(name, **options)


def train(recipe: str | Recipe = "quick-cnn", data: Mnist | None = None, runs_dir: str | Path = "runs", *,
          verbose: int | str = "epochs", tensorboard: bool = False, callbacks: Sequence = (), **overrides):
    """Train a preset (by name) or a Recipe, with field overrides; returns the run (a `TrainedRun`).

    `data` defaults to the MNIST that ships with digits. verbose: "epochs" shows one progress bar per training
    (epochs, ETA, the last epoch's metrics; in Jupyter and terminals it updates in place, in logs and pipes it is
    one line per epoch), 0 nothing, 1 Keras's progress bar. With tensorboard=True the run folder gets TensorBoard logs
    (`tensorboard --logdir <run>/tensorboard`).
    """
    from digits.training.fit import train as train_recipe

    if isinstance(recipe, Mnist):
        raise DigitsError('`recipe` comes first and `data` second, as in digits.train("quick-cnn", data); '
                          'the first argument here is the MNIST data.')
    if not isinstance(recipe, str | Recipe):
        raise DigitsError(f"`recipe` is a preset's name (see digits.presets()) or a Recipe, not {_described(recipe)}.")
    data = _mnist(data)
    if isinstance(recipe, str):
        recipe = get_preset(recipe, **overrides)
    elif overrides:
        recipe = with_overrides(recipe, **overrides)
    return train_recipe(recipe, data, runs_dir, verbose=verbose,
                        callbacks=callbacks, tensorboard=tensorboard)


def load_run(path: str | Path):
    """A finished run folder, read back as a `TrainedRun` (its model loaded) that shows itself in a notebook."""
    from digits.training import runs
    from digits.training.fit import TrainedRun

    run = runs.load_run(path)
    return TrainedRun(folder=run.path, model=runs.load_model(run), recipe=runs.stored_recipe(run), config=run.config,
                      metrics=run.metrics, history=run.history)


def evaluate(run, data: Mnist | None = None, out_dir: str | Path | None = None, *, tta: bool = False,
             calibrate: bool = False):
    """Score a run on the test set; returns its evaluation (an `EvaluatedModel`).

    Writes evaluation.json, the figures and report.html into `<run>/evaluation/` (or out_dir). A `TrainedRun` is
    scored with the model it holds in memory; a run folder's model is loaded from it. The result carries the
    scores themselves (`.accuracy`, `.loss`, `.mistake_count`, `.mistakes`, `.confusion`, `.per_class`) and draws
    the figures again inline: `learning_curves()`, `confusion_matrix()`, `mistakes_gallery()`,
    `per_class_table()`. calibrate fits a temperature and the not-a-digit detector on the holdout first (see
    `digits evaluate --calibrate`).
    """
    from digits.study import report_run

    model = run.model if _is_trained_run(run) else None
    folder = run.as_run() if model is not None else _run_folder(run)
    return report_run(folder, _mnist(data), out_dir, model=model, tta=tta, calibrate=calibrate)


def compare(*runs, data: Mnist | None = None, out_dir: str | Path | None = None, command: str | None = None):
    """Evaluate two or more runs and compare them; returns the models, the verdict and the report's folder.

    Everything is written into out_dir (new or empty), else a new `<time>-comparison/` folder beside the first
    run; the runs' own folders are only read. A `TrainedRun` is scored with the model it holds in memory.
    """
    from digits.study import compare_runs

    if len(runs) < 2:
        raise DigitsError("Comparing needs at least two runs; pass two or more to compare().")
    folders = [run.as_run() if _is_trained_run(run) else _run_folder(run, "runs") for run in runs]
    models = [run.model if _is_trained_run(run) else None for run in runs]
    return compare_runs(folders, _mnist(data), out_dir, models=models, command=command)


def run_study(data: Mnist | None = None, runs_dir: str | Path = "runs", **options):
    """The whole study: train its four models (the study's three recipes with exact=True), evaluate them, compare
    them and write one report.

    `options` are those of `digits.study.run_study` (epochs, train_limit, test_limit, out_dir, ...).
    """
    from digits import study

    options.setdefault("verbose", "epochs")
    return study.run_study(_mnist(data), runs_dir, **options)


@overload
def predict(images: np.ndarray | Sequence[np.ndarray], model=None, *,
            keep_originals: bool = False) -> Predictions: ...


@overload
def predict(images: str | Path | Iterable[str | Path], model=None, *,
            keep_originals: bool = False) -> FileResults: ...


def predict(images, model=None, *, keep_originals: bool = False) -> Predictions | FileResults:
    """Read digits in `images`: uint8 MNIST-style arrays, or picture files and folders (paths).

    Arrays, (N, 28, 28) or one (28, 28) image (or a list of such arrays, read as one batch), give `Predictions`
    holding arrays, as scikit-learn's `predict` does: `.digits` (N,), `.probabilities` (N, 10), `.digit_scores` (N,)
    (NaN for a model without a not-a-digit detector) and `.verdicts` (N,); indexing gives one image's `Prediction`
    (`.digit`, `.probability`, `.top(3)`, `.to_dict()`). Paths (a path, or a list of them; folders are walked in
    sorted order) give one `FileResult` per file: its `.prediction`, or its `.error` for a file that cannot be read,
    in a list (`FileResults`) that a notebook shows as a summary and each file's card.
    `model` is None (the shipped model), a run (or its folder), a .keras or .onnx file, or a loaded Classifier.
    keep_originals keeps a small copy of each picture (for `digits.inference.files.save_views`).
    """
    from digits.inference.classifier import Classifier, load_classifier
    from digits.inference.files import find_image_files, predict_files

    classifier = model if isinstance(model, Classifier) else load_classifier(
        None if model is None else _run_folder(model, "model"))
    if isinstance(images, np.ndarray):
        return classifier.classify(_mnist_style(images, "images"))
    if not isinstance(images, str | Path | Iterable):
        raise DigitsError(f"`images` is uint8 arrays or picture paths, not {_described(images)}.")
    given = [images] if isinstance(images, str | Path) else list(images)
    if not given:
        raise DigitsError("`images` is empty; give uint8 arrays, picture files or folders holding some.")
    arrays = [image for image in given if isinstance(image, np.ndarray)]
    if given and len(arrays) == len(given):
        # A list of images, as a notebook often gathers them: one batch, each checked and quoted as it was given.
        return classifier.classify(np.concatenate([_mnist_style(image, f"images[{index}]")
                                                   for index, image in enumerate(arrays)]))
    if not all(isinstance(image, str | Path) for image in given):
        strays = sorted({_described(image) for image in given if not isinstance(image, str | Path | np.ndarray)})
        if not strays:
            raise DigitsError("`images` holds both arrays and paths; give a list of one kind.")
        raise DigitsError(f"`images` is uint8 arrays or picture paths, not a list holding {', '.join(strays)}.")
    paths = given
    files = find_image_files(paths)
    if not files:
        raise DigitsError(f"No files found in {', '.join(map(str, paths))}; give pictures or folders holding some.")
    return predict_files(classifier, files, keep_originals=keep_originals)


def _is_trained_run(run) -> bool:
    """Whether `run` is a TrainedRun (a model in memory), asked without importing Keras: one can exist only once
    digits.training.fit is loaded."""
    fit = sys.modules.get("digits.training.fit")
    return fit is not None and isinstance(run, fit.TrainedRun)


def _run_folder(run, parameter: str = "run") -> Path:
    """The folder of a run given as a `TrainedRun`, a `digits.training.runs.Run`, an evaluation of one, or a path."""
    if isinstance(run, str | Path):
        return Path(run)
    # Only digits' own objects are asked for their folder: a Keras model has a `path` too (its name).
    ours = type(run).__module__.split(".")[0] == "digits" and not isinstance(run, Mnist)
    folder = None
    if ours:
        folder = getattr(run, "folder", None) or getattr(run, "path", None) or getattr(run, "source", None)
    if not isinstance(folder, str | Path):
        what = ("None (the shipped model), a run, a run folder, a .keras or .onnx file, or a Classifier"
                if parameter == "model" else
                "a run (what digits.train or digits.load_run returns, or an evaluation of one) or a run folder's path")
        hint = (" — a model is scored once trained: digits.evaluate(digits.train(...))"
                if _is_keras_model(run) and parameter != "model" else "")
        if isinstance(run, Mnist):
            hint = f" — `{parameter}` comes first and `data` second"
        opening = f"`{parameter}` is" if parameter == "model" else f"Expected a run: `{parameter}` is"
        raise DigitsError(f"{opening} {what}, not {_described(run)}{hint}.")
    return Path(folder)


def _mnist(data) -> Mnist:
    """`data` as given, or the MNIST that ships with digits for None."""
    if data is None:
        return load_mnist()
    if not isinstance(data, Mnist):
        raise DigitsError(f"`data` is what digits.load_mnist() returns (or leave it out for that), "
                          f"not {_described(data)}.")
    return data


def _mnist_style(images: np.ndarray, parameter: str) -> np.ndarray:
    """(N, 28, 28) uint8 images from (N, 28, 28) or one (28, 28); anything else is quoted as it was given."""
    arrays = images if images.ndim != 2 else images[np.newaxis]  # (28, 28) -> (1, 28, 28)
    if arrays.dtype != np.uint8 or arrays.ndim != 3 or arrays.shape[1:] != (28, 28):
        raise DigitsError(f"`{parameter}` is uint8 images of shape (N, 28, 28) or (28, 28) as MNIST stores them, "
                          f"not {images.dtype} {images.shape}; pass picture files to have them prepared.")
    return arrays


def _is_keras_model(value) -> bool:
    return type(value).__module__.split(".")[0] == "keras" and hasattr(value, "count_params")


def _described(value) -> str:
    """A wrong argument, named for a sentence: "the text 'mnist'", "a float64 array of shape (5, 784)"."""
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if _is_keras_model(value):
        return f"a Keras model ({value.name})"
    if isinstance(value, Mnist):
        return "the MNIST data"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"
