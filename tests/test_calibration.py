"""Calibration: expected calibration error, temperature scaling, and `digits evaluate --calibrate`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from digits.data.mnist import load_mnist
from digits.evaluation.calibration import expected_calibration_error, fit_temperature, holdout_unseen, reliability
from digits.inference.classifier import Classifier, load_classifier
from digits.inference.export import inference_form
from digits.inference.runtime import with_temperature


def softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def calibrated_sample(count: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): a model whose probabilities are exactly right."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (count, 10))
    labels = np.array([rng.choice(10, p=row) for row in softmax(logits)])
    return logits, labels


def test_a_calibrated_model_has_a_small_error_and_an_overconfident_one_a_large_one():
    logits, labels = calibrated_sample()
    assert expected_calibration_error(labels, softmax(logits)) < 0.02
    assert expected_calibration_error(labels, softmax(2 * logits)) > 0.1


def test_the_fitted_temperature_undoes_overconfidence():
    logits, labels = calibrated_sample()
    overconfident = softmax(2 * logits)  # Logits twice too large: the right temperature is 2.
    temperature = fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(2.0, rel=0.1)
    np.testing.assert_allclose(with_temperature(overconfident, temperature), softmax(2 * logits / temperature),
                               atol=1e-5)
    assert expected_calibration_error(labels, with_temperature(overconfident, temperature)) < 0.02


def test_reliability_bins_count_every_prediction():
    logits, labels = calibrated_sample(1000)
    bins = reliability(labels, softmax(logits))
    assert bins.counts.sum() == 1000 and len(bins.edges) == len(bins.counts) + 1


def digits(*arguments, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digits", *map(str, arguments)], capture_output=True, text=True,
                          check=False, timeout=timeout)


@pytest.mark.slow
def test_evaluate_calibrate_fits_on_the_holdout_and_predict_uses_it(tmp_path):
    trained = digits("train", "quick-cnn", "--runs-dir", tmp_path, "--validation", "holdout", "--epochs", "1",
                     "--train-limit", "2000", "--test-limit", "500", "--quiet")
    assert trained.returncode == 0, trained.stderr
    (run,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    evaluated = digits("evaluate", run, "--calibrate")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "at temperature" in evaluated.stdout
    temperature = json.loads((run / "calibration.json").read_text())["temperature"]
    calibration = json.loads((run / "evaluation" / "evaluation.json").read_text())["calibration"]
    assert calibration["temperature"] == pytest.approx(temperature)
    assert (run / "evaluation" / "reliability.png").is_file()
    classifier = load_classifier(run)
    assert classifier.temperature == pytest.approx(temperature)

    # --calibrate also fits the run's own not-a-digit detector, which predict, serve and export then use.
    assert "Not a digit: the detector calls" in evaluated.stdout
    not_a_digit = json.loads((run / "calibration.json").read_text())["not_a_digit"]
    assert not_a_digit["score"] == "digit_score" and 0 < not_a_digit["threshold"] < 1
    assert calibration["not_a_digit"]["threshold"] == not_a_digit["threshold"]
    assert (run / "not_a_digit.npz").is_file() and classifier.detector is not None
    exported = digits("export", run)
    assert exported.returncode == 0 and "max |Δ digit score|" in exported.stdout, exported.stderr
    onnx_classifier = load_classifier(run / "model.onnx")
    # The run trained in mixed bfloat16; the export holds its weights in float32, so compare with those.
    float32_classifier = Classifier(name="float32", model=inference_form(classifier.model),
                                    temperature=classifier.temperature, not_a_digit=classifier.not_a_digit,
                                    detector=classifier.detector)
    images = load_mnist().test_images[1000:1300]  # Images the export's own check did not see.
    keras, onnx = float32_classifier.classify(images), onnx_classifier.classify(images)
    np.testing.assert_allclose(onnx.digit_scores, keras.digit_scores, atol=1e-4)
    np.testing.assert_array_equal(onnx.verdicts, keras.verdicts)


def test_only_a_run_that_never_saw_the_holdout_can_be_calibrated_on_it():
    assert holdout_unseen({"validation": "holdout", "train_limit": None}, 60_000)
    assert holdout_unseen({"validation": "test", "train_limit": 2000}, 60_000)
    assert not holdout_unseen({"validation": "test", "train_limit": None}, 60_000)
    assert not holdout_unseen({"validation": "none", "train_limit": 55_000}, 60_000)


def test_calibration_json_is_written_only_with_values_its_readers_accept(tmp_path):
    from digits.evaluation.calibration import read_settings, write_settings
    from digits.training.run_files import TEMPERATURE_RANGE
    from digits.training.runs import read_calibration

    path = tmp_path / "calibration.json"
    with pytest.raises(ValueError, match="temperature as nan, but it must be a finite number"):
        write_settings(path, {"temperature": float("nan")})
    assert not path.exists()
    write_settings(path, {"temperature": TEMPERATURE_RANGE[1], "note": "kept"})
    assert read_calibration(path) == {"temperature": 20.0, "note": "kept"}
    # A damaged file is what `digits evaluate --calibrate` replaces: it starts again from nothing.
    path.write_text('{"temperature": 1e-320, "not_a_digit": {"score": "digit_score", "threshold": 0.5}}')
    assert read_settings(path) == {}
