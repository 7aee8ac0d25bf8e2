"""The Keras callbacks training uses, all acting at epoch ends only: a per-batch callback would force a return to
Python after every batch, which the whole-epoch graph calls of digits.train avoid.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from digits.training.runs import HISTORY_COLUMNS, history_columns


class RunRecorder(keras.callbacks.Callback):
    """Appends one history.csv row per finished epoch, and keeps the rows and that epoch's weights in memory."""

    def __init__(self, history_path: Path):
        super().__init__()
        self.history_path = history_path
        self.epochs = 0  # epochs finished and written to history.csv
        self.rows: list[list[str]] = []  # history.csv's rows as written, so memory and file hold the same numbers
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
        self.rows.append(row)
        self.epochs, self.last_logs, self.weights, self.weights_epoch = epoch + 1, logs, weights, epoch + 1

    def history(self) -> dict[str, np.ndarray]:
        """The finished epochs' columns, as `digits.training.runs.read_history` would read them from history.csv."""
        return history_columns(self.rows)


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


class EpochLines(keras.callbacks.Callback):
    """One printed line per finished epoch, which reads the same in a terminal, a log file and a notebook."""

    def __init__(self, total_epochs: int, print_line=print):
        super().__init__()
        self.total_epochs = total_epochs
        self.print_line = print_line
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.total_epochs}", f"{time.perf_counter() - self.started:.1f} s",
                 f"loss {logs.get('loss', math.nan):.4f}", f"accuracy {100 * logs.get('accuracy', math.nan):.2f} %"]
        if "val_loss" in logs:
            parts += [f"validation loss {logs['val_loss']:.4f}",
                      f"validation accuracy {100 * logs.get('val_accuracy', math.nan):.2f} %"]
        self.print_line(" · ".join(parts))
