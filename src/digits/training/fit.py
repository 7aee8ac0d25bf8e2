"""Training: the only place that calls `fit()`. One recipe in, one run folder (and trained model) out.

`train` runs four named steps: prepare the data, build and compile the model, fit with interrupts, then
save and describe. The run folder is written as training goes: config.json before the first step, a
history.csv row after every epoch, then model.keras and, last, metrics.json. The returned TrainedRun holds the
same model, history and metrics in memory, so nothing is read back from the folder. Ctrl-C stops training
cleanly: the folder keeps the finished epochs, the model of the last finished epoch, and metrics.json with
status "interrupted".
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import keras
import numpy as np

from digits import __version__
from digits.data.mnist import CLASSES, Mnist, to_model_input
from digits.errors import DigitsError
from digits.training.callbacks import RunRecorder, StopAtAccuracy, epoch_progress
from digits.training.graph_loop import fit_in_graph
from digits.training.models import build_model
from digits.training.precision import PrecisionChoice, choose_precision
from digits.training.recipes import HOLDOUT_SIZE, Recipe
from digits.training.runs import (
    CONFIG_FILE,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    TENSORBOARD_DIR,
    Run,
    check_writable,
    create_run_dir,
    save_model,
    write_json,
)
from digits.training.schedules import OneCycle

REPRODUCIBILITY_NOTE = (
    "The seed fixes weight initialisation, shuffling, dropout and augmentation, so the same seed, versions and "
    "machine give the same run; oneDNN kernels and thread scheduling may still make the last digits of losses "
    "and accuracies differ slightly between runs and machines."
)
BFLOAT16_NOTE = (
    "This run computed in bfloat16 (mixed precision: float32 weights, float32 softmax and loss). bfloat16 keeps "
    "about 3 significant digits, so results differ slightly from a float32 run of the same recipe, and more "
    "between machines than float32 results do."
)
# Validation images per batch: large batches make validation cheap without changing its result.
VALIDATION_BATCH_SIZE = 1000


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the run folder was closed consistently and marked "interrupted"."""

    def __init__(self, run_dir: Path, epochs: int, total_epochs: int, model_epoch: int | None):
        super().__init__(f"training interrupted after {epochs} of {total_epochs} epochs")
        self.run_dir = run_dir
        self.epochs = epochs
        self.total_epochs = total_epochs
        self.model_epoch = model_epoch


@dataclass(frozen=True)
class TrainingData:
    """What one run trains and validates on: model input and one-hot labels, and how they were chosen."""

    train_images: np.ndarray  # (N, 28, 28, 1) float32 in [0, 1]
    train_labels: np.ndarray  # (N, 10) one-hot
    validation_images: np.ndarray  # (M, 28, 28, 1); M = 0 with validation "none"
    validation_labels: np.ndarray  # (M, 10)
    description: str  # which images validate, in words, for config.json
    train_pixels: np.ndarray  # (N, 28, 28) uint8: train_images as stored, which the graph training loop feeds


def prepare_data(recipe: Recipe, data: Mnist) -> TrainingData:
    """Step 1: the training and validation arrays the recipe asks for (its validation and limits)."""
    if recipe.validation == "test":
        train_images, train_labels = data.train_images, data.train_labels
        validation_images, validation_labels = data.test_images, data.test_labels
        description = f"the test set ({len(validation_images):,} images)"
    elif recipe.validation == "none":
        # The final model of a recipe chosen on the holdout: every training image, nothing scored per epoch.
        train_images, train_labels = data.train_images, data.train_labels
        validation_images, validation_labels = data.train_images[:0], data.train_labels[:0]
        description = (f"none: training uses all {len(train_images):,} training images and nothing is scored per "
                       "epoch; the test set is not used")
    else:
        split = len(data.train_images) - HOLDOUT_SIZE
        if split < 1:
            raise DigitsError(
                f"`validation=holdout` needs more than {HOLDOUT_SIZE:,} training images, but the data has "
                f"{len(data.train_images):,}; use `validation=test`."
            )
        train_images, train_labels = data.train_images[:split], data.train_labels[:split]
        validation_images, validation_labels = data.train_images[split:], data.train_labels[split:]
        description = (
            f"holdout: the last {HOLDOUT_SIZE:,} training images (indices {split:,}–{len(data.train_images) - 1:,}); "
            f"training uses the first {split:,}; the test set is not used"
        )
    train_images, train_labels = train_images[: recipe.train_limit], train_labels[: recipe.train_limit]
    validation_images = validation_images[: recipe.test_limit]
    validation_labels = validation_labels[: recipe.test_limit]
    if recipe.validation == "none" and recipe.train_limit:
        description += f", limited to {len(train_images):,} training images"
    elif recipe.validation != "none" and (recipe.train_limit or recipe.test_limit):
        description += f", limited to {len(train_images):,} training and {len(validation_images):,} validation images"
    one_hot = np.eye(CLASSES, dtype="float32")
    return TrainingData(
        train_images=to_model_input(train_images),  # (N, 28, 28) uint8 -> (N, 28, 28, 1) float32 in [0, 1]
        train_labels=one_hot[train_labels],  # (N,) -> (N, 10)
        validation_images=to_model_input(validation_images),
        validation_labels=one_hot[validation_labels],
        description=description,
        train_pixels=train_images,
    )


def steps_per_epoch(recipe: Recipe, train_count: int) -> int:
    return math.ceil(train_count / recipe.batch_size)


def make_optimizer(recipe: Recipe, total_steps: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer and schedule: Keras defaults for everything the recipe does not set."""
    learning_rate = recipe.learning_rate
    if recipe.schedule == "one-cycle":
        learning_rate = OneCycle.for_run(recipe.learning_rate, total_steps)
    # use_ema keeps a moving average of the weights; Keras swaps it into the model when fit() ends.
    averaging = {"use_ema": True} if recipe.weight_averaging else {}
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                    **averaging)
    if recipe.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=recipe.beta_1, beta_2=recipe.beta_2,
                                     **averaging)
    others = {"adadelta": keras.optimizers.Adadelta, "rmsprop": keras.optimizers.RMSprop}
    return others[recipe.optimizer](learning_rate=learning_rate, **averaging)


def make_loss(recipe: Recipe):
    if recipe.label_smoothing:
        return keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
    return recipe.loss


def library_versions() -> dict[str, str]:
    backend = keras.backend.backend()
    versions = {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__}
    try:
        versions[backend] = importlib.metadata.version(backend)
    except importlib.metadata.PackageNotFoundError:
        versions[backend] = "unknown"
    return versions


def build_and_compile(recipe: Recipe, train_count: int, precision: str) -> keras.Model:
    """Step 2: the recipe's model, seeded, compiled with its optimizer, loss and schedule."""
    keras.utils.set_random_seed(recipe.seed)
    model = build_model(recipe.model, precision=precision, shift=recipe.augment_shift, rotation=recipe.augment_rotation,
                        zoom=recipe.augment_zoom, elastic=recipe.augment_elastic)
    steps = steps_per_epoch(recipe, train_count)
    # A whole epoch per graph call by default: the same math, without a Python round trip per batch.
    model.compile(optimizer=make_optimizer(recipe, steps * recipe.epochs), loss=make_loss(recipe),
                  metrics=["accuracy"], steps_per_execution=min(recipe.steps_per_execution or steps, steps),
                  jit_compile=recipe.jit_compile)
    return model


def describe_run(recipe: Recipe, data: Mnist, split: TrainingData, model: keras.Model,
                 precision: PrecisionChoice) -> dict:
    """config.json: the recipe and everything else a reader needs to reproduce or trust the run."""
    return {
        "preset": recipe.preset,
        "recipe": recipe.model_dump(),
        "digits_version": __version__,
        "backend": keras.backend.backend(),
        "seed": recipe.seed,
        "versions": library_versions(),
        "cpu_count": os.cpu_count(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "data": {
            "source": data.source,
            "verified": data.verified,
            "train_images": len(split.train_images),
            "validation_images": len(split.validation_images),
        },
        "validation": split.description,
        "precision": precision.precision,
        "precision_choice": precision.to_dict(),
        "steps_per_execution": model.steps_per_execution,
        "jit_compile": recipe.jit_compile,
        "reproducibility": REPRODUCIBILITY_NOTE + (" " + BFLOAT16_NOTE if precision.precision != "float32" else ""),
    }


@contextlib.contextmanager
def failed_writes_explained(run_dir: Path):
    """Turn a failed write in the run folder (a full disk) into one sentence; metrics.json is then never written,
    so the folder never looks complete."""
    try:
        yield
    except OSError as error:
        raise DigitsError(
            f"Writing the run folder {run_dir} failed ({error.strerror or error}); it is incomplete (no "
            f"{METRICS_FILE}). Free disk space and train again."
        ) from None


@dataclass
class FitOutcome:
    """How fit() ended: "complete" or "interrupted" (Ctrl-C), and what the callbacks saw."""

    status: str
    recorder: RunRecorder
    stopper: StopAtAccuracy | None
    seconds: float


def raised_during_interrupt(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt stands anywhere behind `error` (its cause or the exception it was raised in)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def until_interrupted(train: Callable[[], object]) -> str:
    """Call `train`; "complete", or "interrupted" when Ctrl-C ended it.

    A Ctrl-C that lands while TensorFlow leaves a device scope surfaces as that scope's "Exiting device scope
    without proper scope nesting", with the KeyboardInterrupt behind it (CI saw it once in a sweep)."""
    try:
        train()
    except KeyboardInterrupt:
        return "interrupted"
    except RuntimeError as error:
        if not raised_during_interrupt(error):
            raise
        return "interrupted"
    return "complete"


def fit_with_interrupts(model: keras.Model, recipe: Recipe, split: TrainingData, run_dir: Path, *, verbose: int,
                        callbacks: Sequence[keras.callbacks.Callback]) -> FitOutcome:
    """Step 3: fit, recording each epoch into the run folder; Ctrl-C ends it with the last finished epoch."""
    history_path = run_dir / HISTORY_FILE
    history_path.write_text(",".join(HISTORY_COLUMNS) + "\n")
    recorder = RunRecorder(history_path)
    stopper = None if recipe.target_accuracy is None else StopAtAccuracy(recipe.target_accuracy)
    has_validation = len(split.validation_images) > 0
    validation = (split.validation_images, split.validation_labels) if has_validation else None
    every_callback = [recorder, *([stopper] if stopper else []), *callbacks]

    def train() -> None:
        if recipe.training_loop == "graph":
            fit_in_graph(model, split.train_pixels, split.train_labels, batch_size=recipe.batch_size,
                         epochs=recipe.epochs, seed=recipe.seed, validation=validation,
                         validation_batch_size=VALIDATION_BATCH_SIZE, callbacks=every_callback, verbose=verbose)
        else:
            model.fit(split.train_images, split.train_labels, batch_size=recipe.batch_size, epochs=recipe.epochs,
                      validation_data=validation, validation_batch_size=VALIDATION_BATCH_SIZE,
                      callbacks=every_callback, verbose=verbose)

    started = time.perf_counter()
    status = until_interrupted(train)
    seconds = time.perf_counter() - started
    if status == "interrupted" and recorder.weights is not None:
        # On Ctrl-C the weights are part-way through an epoch; keep those of the last finished one.
        model.set_weights(recorder.weights)
    return FitOutcome(status=status, recorder=recorder, stopper=stopper, seconds=seconds)


def save_and_describe(model: keras.Model, recipe: Recipe, split: TrainingData, run_dir: Path,
                      outcome: FitOutcome) -> dict:
    """Step 4: save model.keras (when an epoch finished) and write metrics.json, which closes the run."""
    recorder = outcome.recorder
    averaged = None
    if (outcome.status == "complete" and recipe.weight_averaging and recorder.epochs
            and len(split.validation_images)):
        # fit() has swapped the averaged weights in; score them on the same validation images.
        averaged = model.evaluate(split.validation_images, split.validation_labels, batch_size=VALIDATION_BATCH_SIZE,
                                  verbose=0, return_dict=True)
    if recorder.weights is not None:
        save_model(model, run_dir / MODEL_FILE)
    logs = dict(recorder.last_logs)
    if averaged:
        # The saved model is the average, so its scores are the run's; the last epoch's raw ones are kept too.
        logs["raw_val_accuracy"], logs["raw_val_loss"] = logs["val_accuracy"], logs["val_loss"]
        logs["val_accuracy"], logs["val_loss"] = averaged["accuracy"], averaged["loss"]
    metrics = {
        "status": outcome.status,
        "epochs": recorder.epochs,
        "validation": recipe.validation,
        # None when no epoch finished or nothing was validated (validation "none").
        "validation_accuracy": float(logs["val_accuracy"]) if "val_accuracy" in logs else None,
        "validation_loss": float(logs["val_loss"]) if "val_loss" in logs else None,
        "training_seconds": round(outcome.seconds, 3),
        "parameters": model.count_params(),
        "samples_per_second": round(len(split.train_images) * recorder.epochs / outcome.seconds, 1),
        "model_epoch": recorder.weights_epoch,  # the epoch model.keras holds; None: no model saved
        # Whether and when validation accuracy reached the recipe's target (training stopped there).
        "target_accuracy": outcome.stopper.summary() if outcome.stopper else None,
        # With weight averaging, the last epoch's scores of the raw (not averaged) weights.
        **({"raw_validation_accuracy": float(logs["raw_val_accuracy"]),
            "raw_validation_loss": float(logs["raw_val_loss"])} if averaged else {}),
    }
    write_json(run_dir / METRICS_FILE, metrics)
    return metrics


@dataclass(eq=False, repr=False)
class TrainedRun:
    """A finished run: the trained Keras model, its per-epoch history, and the folder that keeps both.

    It is path-like (`os.fspath(run)` is its folder), so `load_run(run)` and `open(Path(run) / ...)` work.
    In a notebook it shows itself as a card with the result and the learning curves (`digits.reporting.display`).
    """

    folder: Path
    model: keras.Model
    recipe: Recipe
    config: dict
    metrics: dict
    history: dict[str, np.ndarray]  # the columns of history.csv: epoch, loss, accuracy, val_loss, ...

    def __fspath__(self) -> str:
        return str(self.folder)

    def as_run(self) -> Run:
        """The run as `digits.training.runs.load_run` reads its folder, from memory instead: what training
        recorded, with nothing read back."""
        return Run(path=self.folder, name=self.folder.name, config=self.config, metrics=self.metrics,
                   history=self.history, model_path=self.folder / MODEL_FILE)

    def __str__(self) -> str:
        return str(self.folder)

    def __repr__(self) -> str:
        accuracy = self.metrics.get("validation_accuracy")
        result = "no validation" if accuracy is None else f"validation accuracy {accuracy:.4f}"
        return f"TrainedRun({str(self.folder)!r}, {self.recipe.preset}, {self.metrics.get('epochs')} epochs, {result})"


def train(
    recipe: Recipe,
    data: Mnist,
    runs_dir: str | Path,
    *,
    verbose: int | str = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    tensorboard: bool = False,
) -> TrainedRun:
    """Train `recipe` on `data` in a new run folder in `runs_dir`; returns the run (model, history, folder).

    verbose is Keras's (0 silent, 1 progress bar, 2 one line per epoch), or "epochs": one progress bar per training
    with the last epoch's metrics and an ETA, updated in place in Jupyter and in a terminal, and one short line per
    epoch in a log file or a pipe (callbacks.epoch_progress). `callbacks` run after the one that records each epoch.
    With tensorboard, TensorBoard logs go to `<run>/tensorboard/` (per epoch only, so training is not slowed).
    Raises RunInterrupted (a KeyboardInterrupt) after closing the folder consistently if the user presses Ctrl-C.
    """
    if verbose not in ("epochs", 0, 1, 2):
        raise DigitsError(f'`verbose` is 0, 1, 2 or "epochs", not {verbose!r}.')
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise DigitsError("`tensorboard` needs the tensorboard package, which TensorFlow no longer brings; "
                          "install it with: pip install 'digits[tensorboard]'.")
    check_writable(runs_dir)  # Before compiling: a read-only or full runs folder costs no waiting.
    split = prepare_data(recipe, data)
    # Measured before build_and_compile seeds: building the models it times must not move the run's random state.
    precision = choose_precision(recipe.precision, recipe.model)
    model = build_and_compile(recipe, len(split.train_images), precision.precision)
    run_dir = create_run_dir(runs_dir, recipe.preset)
    config = describe_run(recipe, data, split, model, precision)
    with failed_writes_explained(run_dir):  # A full disk ends in one sentence, not a traceback.
        write_json(run_dir / CONFIG_FILE, config)
    extra = list(callbacks)
    if verbose == "epochs":
        extra.insert(0, epoch_progress(recipe.epochs, recipe.preset or recipe.model))
        verbose = 0
    if tensorboard:
        # Written once per epoch, without weight histograms, graphs or profiling: nothing runs per batch.
        extra.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / TENSORBOARD_DIR), update_freq="epoch",
                                                 histogram_freq=0, write_graph=False, profile_batch=0))
    with failed_writes_explained(run_dir):
        outcome = fit_with_interrupts(model, recipe, split, run_dir, verbose=int(verbose), callbacks=extra)
        metrics = save_and_describe(model, recipe, split, run_dir, outcome)
    if outcome.status == "interrupted":
        raise RunInterrupted(run_dir, outcome.recorder.epochs, recipe.epochs, outcome.recorder.weights_epoch)
    return TrainedRun(folder=run_dir, model=model, recipe=recipe, config=config, metrics=metrics,
                      history=outcome.recorder.history())
