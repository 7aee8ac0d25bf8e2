"""How far a model's confidence can be trusted, and temperature scaling to make it trustworthy.

Pure NumPy on (labels, probabilities): `reliability` bins the predictions by confidence, and
`expected_calibration_error` is the bins' mean gap between confidence and accuracy, weighted by size
(Guo et al. 2017). `fit_temperature` finds the T that minimises the cross-entropy of softmax(log p / T) on
held-out images; `digits.inference.runtime.with_temperature` applies it. `calibrate_run` fits a run's temperature on
the holdout and keeps it in the run's calibration.json, where predict, serve and export read it;
`fit_run_not_a_digit` fits the run's not-a-digit detector and thresholds beside it (`digits.inference.not_a_digit_fit`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digits.data.mnist import Mnist
from digits.errors import DigitsError
from digits.inference.not_a_digit import DETECTOR_FILE
from digits.inference.runtime import CALIBRATION_FILE, with_temperature
from digits.inference.runtime import probabilities as model_probabilities
from digits.training.file_access import read_bounded
from digits.training.recipes import HOLDOUT_SIZE
from digits.training.run_files import TEMPERATURE_RANGE, CalibrationFile, problem_in
from digits.training.runs import Run, read_calibration, write_json

if TYPE_CHECKING:
    from digits.inference.not_a_digit_fit import NotADigitFit

# 15 equal-width confidence bins, as in Guo et al.; fewer hide the gap, more leave bins nearly empty.
BINS = 15


@dataclass
class Reliability:
    """Per confidence bin: its edges, how many predictions fall in it, their mean confidence and accuracy."""

    edges: np.ndarray  # (BINS + 1,)
    counts: np.ndarray  # (BINS,)
    confidence: np.ndarray  # (BINS,), NaN for an empty bin
    accuracy: np.ndarray  # (BINS,), NaN for an empty bin

    @property
    def expected_calibration_error(self) -> float:
        filled = self.counts > 0
        gaps = np.abs(self.confidence[filled] - self.accuracy[filled])
        return float(np.sum(gaps * self.counts[filled]) / np.sum(self.counts))


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> Reliability:
    """Bin (N,) labels and (N, 10) probabilities by the top probability."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    # Rows that do not quite sum to 1 (float32 rounding, or scores given as probabilities) are normalised.
    confidence = probabilities.max(axis=1) / probabilities.sum(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 cannot occur with 10 classes.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    return Reliability(edges=edges, counts=counts, confidence=mean_confidence, accuracy=accuracy)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> float:
    return reliability(labels, probabilities, bins).expected_calibration_error


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The temperature minimising the mean cross-entropy of the rescaled probabilities of held-out images."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("fit_temperature needs at least one labelled image")

    def cross_entropy(log_temperature: float) -> float:
        rescaled = with_temperature(probabilities, float(np.exp(log_temperature)))
        return float(-np.mean(np.log(np.maximum(rescaled[np.arange(len(labels)), labels], 1e-12))))

    # Searched on log T, where the loss is smooth and both directions are alike.
    best = minimize_scalar(cross_entropy, bounds=tuple(np.log(TEMPERATURE_RANGE)), method="bounded",
                           options={"xatol": 1e-4})
    return float(np.exp(best.x))


# --- a run's temperature ------------------------------------------------------------------------


def calibrate_run(run: Run, model, data: Mnist) -> float:
    """Fit the run's temperature on the holdout (the last 10,000 training images, never the test set) and
    record it in the run's calibration.json, which `digits predict`, `digits serve` and `digits export` read."""
    split = len(data.train_images) - HOLDOUT_SIZE
    if not holdout_unseen(run.config["recipe"], len(data.train_images)):
        raise DigitsError(f"The run in {run.path} was trained on the last {HOLDOUT_SIZE:,} training images, so "
                          "they cannot calibrate it; train with `validation=holdout` to use `calibrate`.")
    holdout_images, holdout_labels = data.train_images[split:], data.train_labels[split:]
    temperature = fit_temperature(holdout_labels, model_probabilities(model, holdout_images))
    path = run.path / CALIBRATION_FILE
    settings = read_settings(path)
    settings.update({"temperature": round(temperature, 6),
                     "fitted_on": f"the holdout: the last {HOLDOUT_SIZE:,} training images"})
    write_settings(path, settings)
    return temperature


def fit_run_not_a_digit(run: Run, model, data: Mnist, temperature: float) -> NotADigitFit:
    """Fit the run's not-a-digit detector and thresholds (`digits.inference.not_a_digit_fit`) and record them beside
    its model: not_a_digit.npz and calibration.json, which `digits predict`, `digits serve` and `digits export` read."""
    from digits.inference.not_a_digit_fit import fit_not_a_digit

    fit = fit_not_a_digit(model, data, temperature=temperature,
                          seen_holdout=not holdout_unseen(run.config["recipe"], len(data.train_images)))
    record_not_a_digit(run.path, fit, f"digits evaluate {run.path.name} --calibrate")
    return fit


def record_not_a_digit(folder: Path, fit: NotADigitFit, command: str) -> None:
    """Write a fitted detector into `folder` and its settings into the folder's calibration.json (other keys kept)."""
    fit.detector.save(folder / DETECTOR_FILE)
    path = folder / CALIBRATION_FILE
    settings = read_settings(path)
    settings["not_a_digit"] = {**fit.settings, "command": command}
    write_settings(path, settings)


def holdout_unseen(recipe: dict, train_count: int) -> bool:
    """Whether a run's recipe kept the last HOLDOUT_SIZE of `train_count` training images out of training."""
    limit = recipe.get("train_limit")
    return recipe.get("validation") == "holdout" or (limit is not None and limit <= train_count - HOLDOUT_SIZE)


def recorded_temperature(run: Run) -> float | None:
    """The temperature in the run's calibration.json (None without one); a damaged file is one sentence."""
    return read_calibration(run.path / CALIBRATION_FILE).get("temperature")


def read_settings(path: Path) -> dict:
    """A calibration.json's settings, to be updated: {} when there is none, or when it is damaged (a file that
    cannot be read, or holds values `CalibrationFile` refuses), since calibrating writes it anew."""
    try:
        content = json.loads(read_bounded(path))  # Never waits on a pipe or reads a huge file.
    except (OSError, ValueError, RecursionError):
        return {}
    return content if isinstance(content, dict) and problem_in(content, CalibrationFile) is None else {}


def write_settings(path: Path, settings: dict) -> None:
    """Write calibration.json, checked first against its declared model: never a NaN or out-of-range value."""
    problem = problem_in(settings, CalibrationFile)
    if problem:
        raise ValueError(f"calibration settings for {path} {problem}")
    write_json(path, settings)
