"""Run folders: creating them (atomically, never reused) and reading them back, checked.

A run folder `runs/<YYYYmmdd-HHMMSS>-<preset>[-2, -3…]/` holds config.json, history.csv (one row per
finished epoch), metrics.json (written last: it marks the run complete or interrupted) and model.keras.
Everyone reads runs through `load_run`, so a missing, unfinished or damaged run is always one sentence.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digits.errors import DigitsError

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


@dataclass(frozen=True)
class Run:
    """A run folder as read from disk."""

    path: Path
    name: str
    config: dict
    metrics: dict
    history: dict[str, np.ndarray]  # the columns of history.csv, one entry per finished epoch
    model_path: Path


def create_run_dir(runs_dir: str | Path, preset: str, *, now: datetime | None = None) -> Path:
    """Make a new, empty run folder named after the time and preset; never returns an existing one."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DigitsError(f"Cannot create the runs folder {runs_dir} ({error.strerror}); pass a writable --runs-dir.")
    stem = f"{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}-{preset}"
    for attempt in range(1, 1000):
        path = runs_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            # os.mkdir fails if the folder exists, so two runs started in the same second cannot share it.
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise DigitsError(f"Too many runs named {stem} in {runs_dir}; wait a second or use another --runs-dir.")


def write_json(path: Path, content: dict) -> None:
    """Write JSON through a temporary file, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(partial, path)


def load_run(path: str | Path, *, require_complete: bool = True) -> Run:
    """Read and check a run folder. With require_complete=False an interrupted run is returned too."""
    path = Path(path)
    if not path.exists():
        raise DigitsError(f"There is no run folder at {path}; give the path of a folder that `digits train` wrote.")
    if not path.is_dir() or not (path / CONFIG_FILE).is_file():
        raise DigitsError(
            f"{path} is not a run folder (it has no {CONFIG_FILE}); give a folder that `digits train` wrote."
        )
    config = _read_json(path / CONFIG_FILE)
    if (path / METRICS_FILE).is_file():
        metrics = _read_json(path / METRICS_FILE)
    elif require_complete:
        raise DigitsError(
            f"The run in {path} is incomplete (it has no {METRICS_FILE}: still training, or killed); "
            "wait for it to finish or train it again."
        )
    else:
        metrics = {"status": "unfinished"}
    status = metrics.get("status")
    if require_complete and status != "complete":
        raise DigitsError(
            f"The run in {path} is incomplete (status {status!r}, {metrics.get('epochs', 0)} epochs finished); "
            "train it again to completion."
        )
    history = _read_history(path / HISTORY_FILE)
    model_path = path / MODEL_FILE
    if require_complete and not model_path.is_file():
        raise DigitsError(f"The run in {path} has no {MODEL_FILE}; it was damaged, so train it again.")
    return Run(path=path, name=path.name, config=config, metrics=metrics, history=history, model_path=model_path)


def load_model(run: Run):
    """The run's trained Keras model."""
    if not run.model_path.is_file():
        raise DigitsError(f"The run in {run.path} has no {MODEL_FILE} (no epoch finished); train it again.")
    return load_keras_file(run.model_path, damaged=f"the file is damaged, so train {run.path.name} again")


# A model file bigger than this is not a digits model (the largest preset's is about 20 MB).
MAX_MODEL_BYTES = 2 * 2**30


def load_keras_file(path: Path, *, compile: bool = True, damaged: str = "give a .keras file saved by Keras 3"):
    """A Keras model from a .keras file, loaded in Keras's safe mode; DigitsError in one sentence otherwise.

    The path must name a regular file of sane size: a link to /dev/zero or a named pipe would otherwise grow
    without end or wait for ever. `damaged` ends the sentence for a file Keras cannot read.
    """
    import keras

    import digits.augment  # noqa: F401  Registers the augmentation layer a model.keras may hold.
    import digits.schedules  # noqa: F401  Registers the learning-rate schedules a model.keras may name.

    try:
        status = path.stat()
    except OSError as error:
        raise DigitsError(f"Cannot read the model {path} ({error.strerror}); check the path.") from None
    if not stat.S_ISREG(status.st_mode):
        raise DigitsError(f"The model {path} is not a regular file (a device, a pipe or a socket); give a .keras file.")
    if status.st_size > MAX_MODEL_BYTES:
        raise DigitsError(
            f"The model {path} is {status.st_size / 2**30:.1f} GB, more than the {MAX_MODEL_BYTES / 2**30:.0f} GB "
            "a digits model can be; give the right .keras file."
        )
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a damaged zip; all mean the same to a user.
        refused = refused_by_safe_mode(error)
        if refused:
            raise DigitsError(
                f"The model {path} was refused: it holds {refused}, which Keras's safe loading does not allow "
                "because it could run code; use a model saved by digits or built from standard Keras layers."
            ) from None
        raise DigitsError(f"Cannot read {path} ({type(error).__name__}); {damaged}.") from None


def refused_by_safe_mode(error: Exception) -> str | None:
    """What in a .keras file Keras's safe mode refused (code, or a name it does not know), or None."""
    message = str(error)
    if "safe_mode" in message or "arbitrary code" in message:
        return "Python code (a Lambda layer or a function)"
    unknown = re.search(r"Could not locate (class|function) '([^']{1,80})'", message)
    if unknown:
        module = re.search(r"'module': '([^']{1,80})'", message)
        name = f"{module.group(1)}.{unknown.group(2)}" if module else unknown.group(2)
        return f"a {unknown.group(1)} named {name!r} that Keras does not know"
    return None


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DigitsError(f"Cannot read {path} ({error}); the run is damaged, so train it again.")
    if not isinstance(content, dict):
        raise DigitsError(f"{path} does not hold a JSON object; the run is damaged, so train it again.")
    return content


def _read_history(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DigitsError(f"The run in {path.parent} has no {HISTORY_FILE}; it was damaged, so train it again.")
    try:
        with path.open(newline="") as file:
            rows = list(csv.reader(file))
        header, body = rows[0], rows[1:]
        if tuple(header) != HISTORY_COLUMNS:
            raise ValueError(f"header {','.join(header)}")
        columns = np.array(body, dtype=float).reshape(len(body), len(header)).T
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as error:
        raise DigitsError(f"Cannot read {path} ({error}); the run is damaged, so train it again.")
    history = dict(zip(HISTORY_COLUMNS, columns))
    history["epoch"] = history["epoch"].astype(int)
    return history
