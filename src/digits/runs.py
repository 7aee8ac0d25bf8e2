"""Run folders: creating them (atomically, never reused) and reading them back, checked.

A run folder `runs/<YYYYmmdd-HHMMSS>-<preset>[-2, -3…]/` holds config.json, history.csv (one row per
finished epoch), metrics.json (written last: it marks the run complete or interrupted) and model.keras.
Everyone reads runs through `load_run`, so a missing, unfinished or damaged run is always one sentence.
"""

from __future__ import annotations

import csv
import json
import os
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
    runs_dir = make_folder(Path(runs_dir), "pass a writable --runs-dir")
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


def make_folder(folder: Path, fix: str) -> Path:
    """Create `folder` and its parents if needed; one that cannot be created is one sentence ending in `fix`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DigitsError(f"Cannot create {folder} ({error.strerror or error}); {fix}.") from None
    return folder


def write_atomically(path: Path, text: str) -> None:
    """Write text (UTF-8) through a temporary file beside `path`, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_json(path: Path, content: dict) -> None:
    """Write JSON atomically (see `write_atomically`)."""
    write_atomically(path, json.dumps(content, indent=2) + "\n")


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
    import keras

    import digits.augment  # noqa: F401  Registers the augmentation layer a model.keras may hold.
    import digits.schedules  # noqa: F401  Registers the learning-rate schedules a model.keras may name.

    if not run.model_path.is_file():
        raise DigitsError(f"The run in {run.path} has no {MODEL_FILE} (no epoch finished); train it again.")
    try:
        return keras.saving.load_model(run.model_path)
    except Exception as error:  # Keras raises many types for a damaged zip; all mean the same to a user.
        raise DigitsError(
            f"Cannot read {run.model_path} ({type(error).__name__}); the file is damaged, so train again."
        ) from None


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DigitsError(f"Cannot read {path} ({error}); the run is damaged, so train it again.") from None
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
        raise DigitsError(f"Cannot read {path} ({error}); the run is damaged, so train it again.") from None
    history = dict(zip(HISTORY_COLUMNS, columns, strict=True))
    history["epoch"] = history["epoch"].astype(int)
    return history
