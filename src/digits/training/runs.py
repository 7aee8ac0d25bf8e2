"""Run folders: creating them (atomically, never reused) and reading them back, checked.

A run folder `runs/<YYYYmmdd-HHMMSS>-<preset>[-2, -3…]/` holds config.json, history.csv (one row per
finished epoch), metrics.json (written last: it marks the run complete or interrupted) and model.keras.
Everyone reads runs through `load_run`, so a missing, unfinished or damaged run is always one sentence.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from digits.errors import DigitsError
from digits.training import run_files
from digits.training.file_access import MAX_RUN_FILE_BYTES, new_partial, publish, read_bounded, write_atomically
from digits.training.recipes import Recipe
from digits.training.run_files import CONFIG_FILE, METRICS_FILE, problem_in

HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
# `digits train --tensorboard` writes TensorBoard's event files here: `tensorboard --logdir RUN/tensorboard`.
TENSORBOARD_DIR = "tensorboard"
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
    runs_dir = make_folder(Path(runs_dir), "pass a writable `runs_dir`")
    stem = f"{(now or datetime.now()).strftime('%Y%m%d-%H%M%S')}-{preset}"
    for attempt in range(1, 1000):
        path = runs_dir / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            # os.mkdir fails if the folder exists, so two runs started in the same second cannot share it.
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise DigitsError(f"Too many runs named {stem} in {runs_dir}; wait a second or use another `runs_dir`.")


def check_writable(runs_dir: str | Path) -> None:
    """Raise DigitsError at once if runs cannot be written in `runs_dir`: not a folder, read-only, or full.

    Called before data loading and compiling, so a bad --runs-dir costs no waiting.
    """
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir) as probe:  # Gone when closed, whatever happens.
            probe.write(bytes(64 * 1024))  # Room for at least a run's small files.
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise DigitsError(f"Cannot write runs in {runs_dir} ({error.strerror or error}); free disk space there or "
                          "pass a writable `runs_dir`.") from None


def make_folder(folder: Path, fix: str) -> Path:
    """Create `folder` and its parents if needed; one that cannot be created is one sentence ending in `fix`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DigitsError(f"Cannot create {folder} ({error.strerror or error}); {fix}.") from None
    return folder


def write_json(path: Path, content: dict) -> None:
    """Write JSON atomically (`write_atomically`)."""
    write_atomically(path, json.dumps(content, indent=2) + "\n")


def save_model(model, path: Path) -> None:
    """`model.save(path)` through a temporary file (`new_partial`): on a full disk no truncated model.keras is left."""
    with new_partial(path, suffix=path.suffix) as partial:  # Keras insists on the .keras suffix.
        model.save(partial)
        publish(partial, path)


def load_run(path: str | Path, *, require_complete: bool = True) -> Run:
    """Read and check a run folder. With require_complete=False an interrupted run is returned too."""
    path = Path(path)
    if not path.exists():
        raise DigitsError(f"There is no run folder at {path}; give the path of a folder that `digits train` wrote.")
    # A config.json that is there but not a regular file (a pipe, a link to a device) is refused by _read_json.
    if not path.is_dir() or not os.path.lexists(path / CONFIG_FILE):
        raise DigitsError(
            f"{path} is not a run folder (it has no {CONFIG_FILE}); give a folder that `digits train` wrote."
        )
    config = _read_json(path / CONFIG_FILE)
    if os.path.lexists(path / METRICS_FILE):
        metrics = _read_json(path / METRICS_FILE)
    elif require_complete:
        raise DigitsError(
            f"The run in {path} is incomplete (it has no {METRICS_FILE}: still training, killed, or its disk was "
            "full); wait for it to finish or train it again."
        )
    else:
        metrics = {"status": "unfinished"}
    status = metrics.get("status")
    if require_complete and status != "complete":
        raise DigitsError(
            f"The run in {path} is incomplete (status {status!r}, {metrics.get('epochs', 0)} epochs finished); "
            "train it again to completion."
        )
    history = read_history(path / HISTORY_FILE)
    model_path = path / MODEL_FILE
    if require_complete and not os.path.lexists(model_path):
        raise DigitsError(f"The run in {path} has no {MODEL_FILE}; it was damaged, so train it again.")
    return Run(path=path, name=path.name, config=config, metrics=metrics, history=history, model_path=model_path)


def load_model(run: Run):
    """The run's trained Keras model."""
    if not os.path.lexists(run.model_path):
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

    import digits.training.augment  # noqa: F401  Registers the augmentation layer a model.keras may hold.
    import digits.training.schedules  # noqa: F401  Registers the learning-rate schedules a model.keras may name.

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
    except Exception as error:  # noqa: BLE001  Keras raises many types for a damaged zip; all mean the same.
        refused = refused_by_safe_mode(error, path)
        if refused:
            raise DigitsError(
                f"The model {path} was refused: it holds {refused}, which Keras's safe loading does not allow "
                "because it could run code; use a model saved by digits or built from standard Keras layers."
            ) from None
        raise DigitsError(f"Cannot load a Keras model from {path} ({type(error).__name__}); {damaged}.") from None


def refused_by_safe_mode(error: Exception, path: Path | None = None) -> str | None:
    """What in a .keras file Keras's safe mode refused (code, or a name it does not know), or None.

    Keras's message names the unknown class or function but, for one nested in a layer, prints the outer object's
    module beside it ("keras.system"); the module is therefore read from the file's own config.json (`path`).
    """
    message = str(error)
    if "safe_mode" in message or "arbitrary code" in message:
        return "Python code (a Lambda layer or a function)"
    unknown = re.search(r"Could not locate (class|function) '([^']{1,80})'", message)
    if unknown:
        kind, name = unknown.groups()
        return f"a {kind} named {foreign_name(path, name) if path else repr(name)} that Keras does not know"
    return None


# Modules whose classes and functions a digits model may name: Keras's own and digits's registered layers.
KNOWN_MODULES = ("keras", "digits")


def foreign_name(path: Path, name: str) -> str:
    """`name` as the .keras file at `path` spells it, with its module ('os.system'): the first object in the file's
    config.json of that class or function name whose module is not Keras's or digits's; `name` alone if none is.
    The config is walked with a list, not recursion, and read with a size cap."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = archive.getinfo("config.json")
            if member.file_size > MAX_RUN_FILE_BYTES:
                return repr(name)
            with archive.open(member) as stream:
                config = json.loads(stream.read(MAX_RUN_FILE_BYTES))
    except (OSError, KeyError, ValueError, RecursionError, zipfile.BadZipFile):
        return repr(name)
    waiting = [config]
    while waiting:
        item = waiting.pop()
        if isinstance(item, list):
            waiting.extend(reversed(item))
        elif isinstance(item, dict):
            module, class_name = item.get("module"), item.get("class_name")
            named = item.get("config") if class_name == "function" else class_name
            if (named == name and isinstance(module, str)
                    and module.split(".")[0] not in KNOWN_MODULES):
                return repr(f"{module}.{name}")
            waiting.extend(reversed(list(item.values())))
    return repr(name)


DAMAGED_RUN = "the run is damaged, so train it again"


def _read_json(path: Path, fix: str = DAMAGED_RUN) -> dict:
    """A run file's JSON object, checked against its declared model (run_files.MODELS); one sentence ending in
    `fix` when it cannot be read (a pipe, a device, too big, nested too deeply) or holds a value digits cannot
    use."""
    try:
        content = json.loads(read_bounded(path))
    except RecursionError:
        raise DigitsError(f"Cannot read {path} (it is nested too deeply); {fix}.") from None
    except OSError as error:
        raise DigitsError(f"Cannot read {path} ({error.strerror or error}); {fix}.") from None
    except ValueError as error:  # UnicodeDecodeError and json's errors are ValueErrors too.
        raise DigitsError(f"Cannot read {path} ({str(error)[:200]}); {fix}.") from None
    if not isinstance(content, dict):
        raise DigitsError(f"{path} does not hold a JSON object; {fix}.")
    problem = problem_in(content, run_files.MODELS[path.name]) if path.name in run_files.MODELS else None
    if problem:
        raise DigitsError(f"{path} {problem}; {fix}.")
    return content


def stored_recipe(run: Run) -> Recipe:
    """The Recipe a run's config.json records (keys a newer digits added are left out), checked like any recipe."""
    stored = run.config.get("recipe")
    path = run.path / CONFIG_FILE
    if not isinstance(stored, dict):
        raise DigitsError(f"{path} holds no recipe; {DAMAGED_RUN}.")
    try:
        return Recipe(**{name: value for name, value in stored.items() if name in Recipe.model_fields})
    except DigitsError as error:
        raise DigitsError(f"{path} holds a recipe digits cannot use ({str(error).rstrip('.')}); "
                          f"{DAMAGED_RUN}.") from None


RECALIBRATE = "delete it, or calibrate the run again (`digits evaluate RUN --calibrate`)"


def read_calibration(path: Path) -> dict:
    """A calibration.json's settings, checked: {} when there is none; one sentence naming the file when it cannot
    be read or holds a temperature or threshold digits cannot use (NaN, infinite, out of range)."""
    if not os.path.lexists(path):
        return {}
    return _read_json(path, fix=RECALIBRATE)


def check_calibration(settings: dict, path: Path) -> dict:
    """`settings` (the temperature and not-a-digit keys of `path`, an exported model's sidecar) checked like a
    calibration.json; one sentence naming the file otherwise."""
    problem = problem_in(settings, run_files.CalibrationFile)
    if problem:
        raise DigitsError(f"{path} {problem}; export the model again.")
    return settings


def read_history(path: Path) -> dict[str, np.ndarray]:
    """The columns of a history.csv, one entry per finished epoch (`epoch` as integers)."""
    if not os.path.lexists(path):
        raise DigitsError(f"The run in {path.parent} has no {HISTORY_FILE}; it was damaged, so train it again.")
    try:
        rows = list(csv.reader(io.StringIO(read_bounded(path).decode("utf-8"), newline="")))
        header, body = rows[0], rows[1:]
        if tuple(header) != HISTORY_COLUMNS:
            raise ValueError(f"header {','.join(header)}")
        return history_columns(body)
    except (OSError, UnicodeDecodeError, IndexError, ValueError, csv.Error) as error:
        raise DigitsError(f"Cannot read {path} ({str(error)[:80]}); the run is damaged, so train it again.") from None


def history_columns(rows: Sequence[Sequence]) -> dict[str, np.ndarray]:
    """history.csv's rows (one per finished epoch, values as numbers or their text) as its columns, `epoch` as
    integers: what a run's `history` holds, whether read back from the file or recorded in memory."""
    columns = np.array(rows, dtype=float).reshape(len(rows), len(HISTORY_COLUMNS)).T  # (epochs, 6) -> (6, epochs)
    history = dict(zip(HISTORY_COLUMNS, columns, strict=True))
    history["epoch"] = history["epoch"].astype(int)
    return history


def new_output_folder(out_dir: str | Path | None, runs_dir: Path, kind: str) -> Path:
    """The given `out_dir` folder (new or empty), else a fresh runs/<time>-<kind>/ that no one else uses."""
    if out_dir is None:
        return create_run_dir(runs_dir, kind)
    out_dir = Path(out_dir)
    check_new_folder(out_dir)
    make_folder(out_dir, "choose a writable `out_dir`")
    return out_dir


def check_new_folder(folder: str | Path) -> None:
    """Refuse an `out_dir` folder that already holds files, so no earlier result is overwritten."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DigitsError(f"{folder} already exists and is not an empty folder; choose a new `out_dir`, "
                          "so nothing is overwritten.")
