"""The CPU speedrun: preset speedrun, its small network, Adam's betas, and a real run on a slice that evaluates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_digits
from digits.errors import DigitsError
from digits.training.presets import PRESETS, get_preset
from digits.training.recipes import with_overrides


def test_speedrun_is_one_epoch_of_every_training_image_and_never_sees_the_test_set():
    recipe = get_preset("speedrun")
    assert (recipe.model, recipe.epochs, recipe.validation, recipe.batch_size) == ("cnn-speedrun", 1, "none", 256)
    assert (recipe.optimizer, recipe.learning_rate, recipe.beta_1, recipe.beta_2) == ("adam", 0.01, 0.7, 0.9)
    assert recipe.schedule == "one-cycle" and recipe.target_accuracy is None
    # Fed from one in-memory tensor, without tf.data's pipeline to start and shut down.
    assert recipe.training_loop == "graph"
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


def test_the_graph_loop_scales_pixels_exactly_as_every_model_input_is_scaled():
    from digits.data.mnist import to_model_input
    from digits.training.graph_loop import pixels_to_model_input

    pixels = np.resize(np.arange(256, dtype=np.uint8), (3, 28, 28))  # every value a pixel can take
    np.testing.assert_array_equal(pixels_to_model_input(pixels).numpy(), to_model_input(pixels))


def test_the_graph_loop_with_xla_is_one_sentence_naming_the_settings():
    with pytest.raises(DigitsError, match=r"^The graph training loop runs without XLA .*`training_loop=fit`\.$"):
        with_overrides(get_preset("speedrun"), jit_compile=True)


@pytest.fixture(scope="module")
def mnist():
    from digits.data.mnist import load_mnist

    return load_mnist()


def graph_recipe(**changes):
    # Two epochs of 1,000 images in calls of 3 steps (4 steps an epoch: the last call has one partial batch).
    return with_overrides(get_preset("speedrun"), train_limit=1000, test_limit=500, validation="holdout", epochs=2,
                          steps_per_execution=3, **changes)


@pytest.mark.slow
def test_the_graph_loop_records_every_epoch_and_the_model_it_saves_scores_what_history_says(mnist, tmp_path):
    import keras

    from digits.data.mnist import to_model_input
    from digits.training.fit import train
    from digits.training.runs import load_model, load_run

    calls = []

    class CountCalls(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            calls.append(batch)

    runs = [train(graph_recipe(seed=seed), mnist, tmp_path, verbose=0, callbacks=[CountCalls()])
            for seed in (3, 3, 4)]
    # Two graph calls an epoch, reported as fit() reports them: by the index of the last step each ran.
    assert calls[:4] == [2, 3, 2, 3]
    histories = [load_run(run.folder).history for run in runs]
    assert histories[0]["epoch"].tolist() == [1, 2]
    assert np.isfinite(histories[0]["loss"]).all() and histories[0]["val_accuracy"][-1] > 0.5
    # The same seed, the same shuffle and the same run; another seed, another run.
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-4)
    assert not np.allclose(histories[0]["loss"], histories[2]["loss"], rtol=1e-4)
    # The saved model is the trained one: it scores on the holdout images what the last epoch recorded.
    holdout_images, holdout_labels = mnist.train_images[50_000:50_500], mnist.train_labels[50_000:50_500]
    probabilities = load_model(load_run(runs[0].folder)).predict(to_model_input(holdout_images), verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == holdout_labels))
    assert accuracy == pytest.approx(histories[0]["val_accuracy"][-1], abs=1e-6)


@pytest.mark.slow
def test_ctrl_c_in_the_graph_loop_keeps_the_last_finished_epoch(mnist, tmp_path):
    import keras

    from digits.training.fit import RunInterrupted, train
    from digits.training.runs import load_run

    class InterruptAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as caught:
        train(graph_recipe(), mnist, tmp_path, verbose=0, callbacks=[InterruptAfterFirstEpoch()])
    run = load_run(caught.value.run_dir, require_complete=False)
    assert (run.metrics["status"], run.metrics["epochs"], run.metrics["model_epoch"]) == ("interrupted", 1, 1)
