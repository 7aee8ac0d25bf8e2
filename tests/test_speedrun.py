"""The CPU speedrun: preset speedrun, its small network, Adam's betas, and a real run on a slice that evaluates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_digits
from digits.errors import DigitsError
from digits.training.recipes import PRESETS, get_preset, with_overrides


def test_speedrun_is_one_epoch_of_every_training_image_and_never_sees_the_test_set():
    recipe = get_preset("speedrun")
    assert (recipe.model, recipe.epochs, recipe.validation, recipe.batch_size) == ("cnn-speedrun", 1, "none", 256)
    assert (recipe.optimizer, recipe.learning_rate, recipe.beta_1, recipe.beta_2) == ("adam", 0.01, 0.7, 0.9)
    assert recipe.schedule == "one-cycle" and recipe.target_accuracy is None
    description = PRESETS["speedrun"].description
    # A user choosing it is told how it was chosen and what it gives up for its speed.
    assert "--validation holdout" in description and "trades away" in description


def test_adams_betas_reach_the_optimizer_and_default_to_keras_own():
    from digits.training.fit import make_optimizer

    speedrun = make_optimizer(get_preset("speedrun"), total_steps=100)
    assert (speedrun.beta_1, speedrun.beta_2) == (0.7, 0.9)
    default = make_optimizer(get_preset("quick-cnn"), total_steps=100)
    assert (default.beta_1, default.beta_2) == (0.9, 0.999)


def test_a_beta_of_one_is_one_sentence_naming_the_setting():
    with pytest.raises(DigitsError, match=r"^`beta_1` must be at least 0 and below 1, not 1\.0\.$"):
        with_overrides(get_preset("speedrun"), beta_1=1.0)


def test_the_speedrun_network_pools_before_its_relu_and_keeps_the_records_size():
    from digits.training.models import build_model

    model = build_model("cnn-speedrun")
    # tuomaso/train_mnist_fast's network: 24 5x5 and 32 3x3 convolutions, a dense layer of 256.
    assert model.count_params() == (25 * 24 + 24) + (9 * 24 * 32 + 32) + (800 * 256 + 256) + (256 * 10 + 10)
    names = [layer.name for layer in model.layers]
    assert names.index("pool1") < names.index("relu1") < names.index("conv2") < names.index("pool2")
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0).sum(axis=1), 1, atol=1e-5)


def test_presets_command_lists_the_speedrun():
    result = run_digits("presets")
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("speedrun ")]
    assert "cnn-speedrun" in line and "not in the study" in line


@pytest.mark.slow
def test_train_speedrun_on_a_slice_makes_a_run_that_evaluates(tmp_path):
    trained = run_digits("train", "speedrun", "--train-limit", "2000", "--test-limit", "500", "--quiet",
                         "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    [run] = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-speedrun")
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["model"] == "cnn-speedrun" and config["recipe"]["beta_1"] == 0.7
    assert config["data"]["train_images"] == 2000 and config["data"]["validation_images"] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs"] == 1 and metrics["training_seconds"] > 0

    evaluated = run_digits("evaluate", run, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    evaluation = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert evaluation["test_images"] == 500
    # Eight steps of 256 images already learn digits: far above the 10 % of guessing.
    assert evaluation["evaluation"]["accuracy"] > 0.5
    assert (run / "evaluation" / "report.html").is_file()
