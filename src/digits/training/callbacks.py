"""The Keras callbacks training uses, all acting at epoch ends only: a per-batch callback would force a return to
Python after every batch, which the whole-epoch graph calls of digits.train avoid.
"""

from __future__ import annotations

import math
import sys
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


def epoch_summary(logs: dict) -> str:
    """An epoch's metrics in words: loss and accuracy, and the validation's when there is one."""
    parts = [f"loss {logs.get('loss', math.nan):.4f}", f"accuracy {100 * logs.get('accuracy', math.nan):.2f} %"]
    if "val_loss" in logs:
        parts += [f"validation loss {logs['val_loss']:.4f}",
                  f"validation accuracy {100 * logs.get('val_accuracy', math.nan):.2f} %"]
    return " · ".join(parts)


def epoch_progress(total_epochs: int, title: str) -> keras.callbacks.Callback:
    """How `verbose="epochs"` shows training where it runs: in Jupyter, one tqdm bar per training drawn as one
    output updated in place; in a terminal, one tqdm bar redrawn in place; in a log file or a pipe, one line per
    epoch, which reads well there.

    In Jupyter the bar is tqdm's text bar in a display updated in place rather than tqdm's ipywidgets bar: a saved
    notebook then holds each training's last line, which every viewer shows (GitHub, nbconvert, the docs), and
    none of the widgets' state (about 10 KB a training, which nbclient keeps even for closed widgets)."""
    if _in_jupyter():
        return EpochBar(total_epochs, title, _displayed_bar_class())
    # Both streams: `digits train ... | tee train.log` pipes stdout, and that log should get its lines.
    if _is_terminal(sys.stdout) and _is_terminal(sys.stderr):
        from tqdm import tqdm as terminal_bar

        return EpochBar(total_epochs, title, terminal_bar)
    return EpochLines(total_epochs)


class EpochBar(keras.callbacks.Callback):
    """One tqdm bar for the whole training: epochs done, elapsed time and ETA, and the last epoch's metrics."""

    # The bar is 20 characters wide, so the metrics after it never squeeze it to nothing.
    BAR_FORMAT = "{desc}: epoch {n_fmt}/{total_fmt} {bar:20} {elapsed}<{remaining}{postfix}"

    def __init__(self, total_epochs: int, title: str, bar_class):
        super().__init__()
        self.total_epochs = total_epochs
        self.title = title
        self.bar_class = bar_class
        self.bar = None

    def on_train_begin(self, logs=None):
        self.bar = self.bar_class(total=self.total_epochs, desc=self.title, unit="epoch", leave=True,
                                  bar_format=self.BAR_FORMAT)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix_str(epoch_summary(logs or {}), refresh=False)
            self.bar.update(1)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _in_jupyter() -> bool:
    """Whether this process is a Jupyter kernel (not a terminal IPython), asked without importing IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _displayed_bar_class():
    """A tqdm bar drawn as one notebook output updated in place (at most twice a second): the saved notebook keeps
    one line per training, its last state, not one per epoch."""
    import io

    from IPython.display import display
    from tqdm import tqdm

    class DisplayedBar(tqdm):
        def __init__(self, *args, **kwargs):
            self.handle = None
            # ascii=False: tqdm would draw "#" for a stream of unknown encoding; a notebook shows Unicode blocks.
            super().__init__(*args, file=io.StringIO(), mininterval=0.5, ascii=False, **kwargs)

        def display(self, msg=None, pos=None):
            line = {"text/plain": msg or self.__str__()}
            if self.handle is None:
                self.handle = display(line, raw=True, display_id=True)
            else:
                self.handle.update(line, raw=True)
            return True

    return DisplayedBar


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
        self.print_line(f"epoch {epoch + 1}/{self.total_epochs} · {time.perf_counter() - self.started:.1f} s · "
                        f"{epoch_summary(logs or {})}")
