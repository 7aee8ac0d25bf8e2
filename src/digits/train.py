"""Training: the only place that calls `fit()`. One recipe in, one run folder out.

The run folder is written as training goes: config.json before the first step, a history.csv row after
every epoch, then model.keras and, last, metrics.json. Ctrl-C stops training cleanly: the folder keeps
the finished epochs, the model of the last finished epoch, and metrics.json with status "interrupted".
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import keras
import numpy as np

from digits import __version__
from digits.data import CLASSES, Mnist, to_model_input
from digits.errors import DigitsError
from digits.models import build_model
from digits.precision import choose_precision
from digits.recipes import HOLDOUT_SIZE, Recipe
from digits.runs import (CONFIG_FILE, HISTORY_COLUMNS, HISTORY_FILE, METRICS_FILE, MODEL_FILE, check_writable,
                         create_run_dir, save_model, write_json)
from digits.schedules import OneCycle

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


class RunRecorder(keras.callbacks.Callback):
    """Appends one history.csv row per finished epoch and keeps that epoch's weights in memory."""

    def __init__(self, history_path: Path):
        super().__init__()
        self.history_path = history_path
        self.epochs = 0  # epochs finished and written to history.csv
        self.last_logs: dict = {}
        self.weights: list[np.ndarray] | None = None  # weights after epoch `weights_epoch`
        self.weights_epoch: int | None = None
        self.epoch_started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_started
        logs = dict(logs or {})
        # Without validation (--validation none) the val_ columns hold nan: there was nothing to score.
        row = ([str(epoch + 1)] + [repr(float(logs.get(name, math.nan))) for name in HISTORY_COLUMNS[1:-1]]
               + [f"{seconds:.3f}"])
        # A copy of a few hundred kilobytes: cheaper than saving model.keras after every epoch. It is taken
        # before the row is written, so a Ctrl-C that follows a visible row always finds this epoch's weights.
        weights = self.model.get_weights()
        # Opening, appending and closing flushes the row, so a reader (or Ctrl-C) sees every finished epoch.
        with self.history_path.open("a") as file:
            file.write(",".join(row) + "\n")
        self.epochs, self.last_logs, self.weights, self.weights_epoch = epoch + 1, logs, weights, epoch + 1


def split_data(recipe: Recipe, data: Mnist) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Training and validation arrays (model input, one-hot labels) for the recipe, and a description."""
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
                f"--validation holdout needs more than {HOLDOUT_SIZE:,} training images, but the data has "
                f"{len(data.train_images):,}; use --validation test."
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
    return (
        to_model_input(train_images),  # (N, 28, 28) uint8 -> (N, 28, 28, 1) float32 in [0, 1]
        one_hot[train_labels],  # (N,) -> (N, 10)
        to_model_input(validation_images),
        one_hot[validation_labels],
        description,
    )


class StopAtAccuracy(keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose validation accuracy reaches `target`.

    It acts only at epoch ends: a callback on every batch would force a host sync per step.
    """

    def __init__(self, target: float):
        super().__init__()
        self.target = target
        self.reached_epoch: int | None = None
        self.reached_seconds: float | None = None
        self.started = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # Keras reports accuracy in float32, where 9,928 / 10,000 is 0.99279999...: allow for that rounding.
        if self.reached_epoch is None and (logs or {}).get("val_accuracy", -1.0) >= self.target - 1e-6:
            self.reached_epoch, self.reached_seconds = epoch + 1, time.perf_counter() - self.started
            self.model.stop_training = True

    def summary(self) -> dict:
        seconds = None if self.reached_seconds is None else round(self.reached_seconds, 3)
        return {"target": self.target, "reached": self.reached_epoch is not None, "epoch": self.reached_epoch,
                "seconds": seconds}


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
    others = {"adam": keras.optimizers.Adam, "adadelta": keras.optimizers.Adadelta, "rmsprop": keras.optimizers.RMSprop}
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


@contextlib.contextmanager
def failed_writes_explained(run_dir: Path):
    """Turn a failed write in the run folder (a full disk) into one sentence; metrics.json is then never written,
    so the folder never looks complete."""
    try:
        yield
    except OSError as error:
        raise DigitsError(
            f"Writing the run folder {run_dir} failed ({error.strerror or error}); it is incomplete (no {METRICS_FILE}). "
            "Free disk space and train again."
        ) from None


def train(
    recipe: Recipe,
    data: Mnist,
    runs_dir: str | Path,
    *,
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Path:
    """Train `recipe` on `data`, writing a new run folder in `runs_dir`; returns that folder.

    verbose is Keras's: 0 silent, 1 progress bar, 2 one line per epoch. `callbacks` run after the one that
    records each epoch. Raises RunInterrupted (a KeyboardInterrupt) after closing the folder consistently
    if the user presses Ctrl-C.
    """
    check_writable(runs_dir)  # Before compiling: a read-only or full --runs-dir costs no waiting.
    train_images, train_labels, validation_images, validation_labels, validation_description = split_data(recipe, data)
    # Measured before seeding: building the models it times must not move the run's random state.
    precision_choice = choose_precision(recipe.precision, recipe.model)
    precision = precision_choice.precision
    keras.utils.set_random_seed(recipe.seed)
    model = build_model(recipe.model, precision=precision, shift=recipe.augment_shift, rotation=recipe.augment_rotation,
                        zoom=recipe.augment_zoom, elastic=recipe.augment_elastic)
    steps = steps_per_epoch(recipe, len(train_images))
    # A whole epoch per graph call by default: the same math, without a Python round trip per batch.
    steps_per_execution = min(recipe.steps_per_execution or steps, steps)
    model.compile(optimizer=make_optimizer(recipe, steps * recipe.epochs), loss=make_loss(recipe),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution, jit_compile=recipe.jit_compile)

    run_dir = create_run_dir(runs_dir, recipe.preset)
    with failed_writes_explained(run_dir):  # A full disk ends in one sentence, not a traceback.
        write_json(
            run_dir / CONFIG_FILE,
            {
                "preset": recipe.preset,
                "recipe": asdict(recipe),
                "digits_version": __version__,
                "backend": keras.backend.backend(),
                "seed": recipe.seed,
                "versions": library_versions(),
                "cpu_count": os.cpu_count(),
                "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                "data": {
                    "source": data.source,
                    "verified": data.verified,
                    "train_images": len(train_images),
                    "validation_images": len(validation_images),
                },
                "validation": validation_description,
                "precision": precision,
                "precision_choice": precision_choice.to_dict(),
                "steps_per_execution": steps_per_execution,
                "jit_compile": recipe.jit_compile,
                "reproducibility": REPRODUCIBILITY_NOTE + (" " + BFLOAT16_NOTE if precision != "float32" else ""),
            },
        )
        history_path = run_dir / HISTORY_FILE
        history_path.write_text(",".join(HISTORY_COLUMNS) + "\n")

    recorder = RunRecorder(history_path)
    stopper = [] if recipe.target_accuracy is None else [StopAtAccuracy(recipe.target_accuracy)]
    started = time.perf_counter()
    try:
        model.fit(
            train_images,
            train_labels,
            batch_size=recipe.batch_size,
            epochs=recipe.epochs,
            validation_data=(validation_images, validation_labels) if len(validation_images) else None,
            validation_batch_size=VALIDATION_BATCH_SIZE,
            callbacks=[recorder, *stopper, *callbacks],
            verbose=verbose,
        )
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
    except OSError as error:  # The folder was removed or the disk filled up while training.
        raise DigitsError(
            f"Writing the run folder {run_dir} failed ({error}); free disk space, keep the folder, and train again."
        ) from None
    training_seconds = time.perf_counter() - started

    if status == "interrupted" and recorder.weights is not None:
        # On Ctrl-C the weights are part-way through an epoch; keep those of the last finished one.
        model.set_weights(recorder.weights)
    averaged = None
    if status == "complete" and recipe.weight_averaging and recorder.epochs and len(validation_images):
        # fit() has swapped the averaged weights in; score them on the same validation images.
        averaged = model.evaluate(validation_images, validation_labels, batch_size=VALIDATION_BATCH_SIZE,
                                  verbose=0, return_dict=True)
    with failed_writes_explained(run_dir):
        if recorder.weights is not None:
            save_model(model, run_dir / MODEL_FILE)
        logs = dict(recorder.last_logs)
        if averaged:
            # The saved model is the average, so its scores are the run's; the last epoch's raw ones are kept too.
            logs["raw_val_accuracy"], logs["raw_val_loss"] = logs["val_accuracy"], logs["val_loss"]
            logs["val_accuracy"], logs["val_loss"] = averaged["accuracy"], averaged["loss"]
        write_json(
            run_dir / METRICS_FILE,
            {
                "status": status,
                "epochs": recorder.epochs,
                "validation": recipe.validation,
                # None when no epoch finished or nothing was validated (--validation none).
                "validation_accuracy": float(logs["val_accuracy"]) if "val_accuracy" in logs else None,
                "validation_loss": float(logs["val_loss"]) if "val_loss" in logs else None,
                "training_seconds": round(training_seconds, 3),
                "parameters": model.count_params(),
                "samples_per_second": round(len(train_images) * recorder.epochs / training_seconds, 1),
                "model_epoch": recorder.weights_epoch,  # the epoch model.keras holds; None: no model saved
                # Whether and when validation accuracy reached the recipe's target (training stopped there).
                "target_accuracy": stopper[0].summary() if stopper else None,
                # With weight averaging, the last epoch's scores of the raw (not averaged) weights.
                **({"raw_validation_accuracy": float(logs["raw_val_accuracy"]),
                    "raw_validation_loss": float(logs["raw_val_loss"])} if averaged else {}),
            },
        )
    if status == "interrupted":
        raise RunInterrupted(run_dir, recorder.epochs, recipe.epochs, recorder.weights_epoch)
    return run_dir
