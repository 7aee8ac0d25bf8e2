"""Record accuracy (issue 6): augmentation, the cnn-bn model, the `best` preset, and ensembles."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from digits.augment import augment_images, shift_images
from digits.data import load_mnist, to_model_input
from digits.ensemble import average_probabilities
from digits.errors import DigitsError
from digits.recipes import get_preset, with_overrides

TINY = ["--epochs", "1", "--train-limit", "1000", "--test-limit", "200"]


def digits(*arguments, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "digits", *map(str, arguments)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


# --- augmentation ---------------------------------------------------------------------------------


def test_augmentation_moves_pixels_but_keeps_shapes_and_digits_in_the_frame(mnist):
    images = to_model_input(mnist.train_images[:64])
    augmented = augment_images(images, rotation_degrees=10, shift_pixels=2, zoom=0.1, seed=1)
    assert augmented.shape == images.shape and augmented.dtype == np.float32
    changed = np.abs(augmented - images).reshape(len(images), -1).max(axis=1) > 0.1
    assert changed.mean() > 0.9  # nearly every image moved
    # Each image keeps its index (so its label) and roughly its ink: the digit stays inside the frame.
    ink_ratio = augmented.sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3))
    assert np.all((ink_ratio > 0.7) & (ink_ratio < 1.4))


def test_augmentation_is_off_at_inference(mnist):
    images = to_model_input(mnist.test_images[:16])
    unchanged = augment_images(images, rotation_degrees=10, shift_pixels=2, zoom=0.1, training=False)
    np.testing.assert_allclose(unchanged, images, atol=1e-6)


def test_a_trained_cnn_bn_predicts_the_same_twice():
    from digits.models import build_model

    model = build_model("cnn-bn", shift=2, rotation=10, zoom=0.1)
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype="float32")
    np.testing.assert_array_equal(model.predict(images, verbose=0), model.predict(images, verbose=0))


def test_whole_pixel_shifts_fill_with_black():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    down = shift_images(images, 1, 0)
    assert np.all(down[:, 0] == 0) and np.array_equal(down[:, 1:], images[:, :-1])
    left = shift_images(images, 0, -2)
    assert np.all(left[:, :, -2:] == 0) and np.array_equal(left[:, :, :-2], images[:, :, 2:])


# --- the preset -----------------------------------------------------------------------------------


def test_best_is_selected_on_the_holdout_never_the_test_set():
    recipe = get_preset("best")
    assert (recipe.model, recipe.validation, recipe.schedule) == ("cnn-bn", "holdout", "one-cycle")
    assert recipe.augment_rotation and recipe.augment_shift and recipe.augment_zoom and recipe.label_smoothing


def test_augmenting_the_shallow_network_is_one_sentence():
    with pytest.raises(DigitsError, match="Random-rotation augmentation .* drop --augment-rotation"):
        with_overrides(get_preset("quick-shallow"), augment_rotation=10)


# --- ensembles ------------------------------------------------------------------------------------


def test_average_of_hand_made_probabilities():
    first = np.array([[0.9, 0.1], [0.2, 0.8]])
    second = np.array([[0.5, 0.5], [0.6, 0.4]])
    np.testing.assert_allclose(average_probabilities([first, second]), [[0.7, 0.3], [0.4, 0.6]])
    np.testing.assert_allclose(average_probabilities([first, first, first]), first)
    with pytest.raises(ValueError):
        average_probabilities([first, first[:1]])


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny `best` runs trained by the real CLI (seeds 0 and 1): (run folders, the first process)."""
    workdir = tmp_path_factory.mktemp("best")
    finished = [digits("train", "best", *TINY, "--seed", seed, "--quiet", "--runs-dir", workdir / "runs", cwd=workdir)
                for seed in (0, 1)]
    for process in finished:
        assert process.returncode == 0, process.stderr[-2000:]
    return sorted((workdir / "runs").iterdir()), finished[0]


def test_best_trains_from_the_command_line(members):
    runs, finished = members
    assert "Run complete" in finished.stdout and "(holdout)" in finished.stdout
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["recipe"]["model"] == "cnn-bn" and config["recipe"]["augment_rotation"] == 10
    assert (runs[0] / "model.keras").is_file()


def test_ensemble_command_evaluates_and_reports(members, tmp_path):
    runs, _ = members
    out = tmp_path / "ensemble"
    finished = digits("ensemble", *runs, "--tta", "--out", out, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "ensemble of 2 with TTA" in finished.stdout and runs[0].name in finished.stdout
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["test_images"] == 200 and evaluation["overfitting"] is None
    for name in ("report.html", "confusion.png", "mistakes.png", "ensemble.json"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "ensemble.json").read_text())["members"]) == 2


def test_an_ensemble_of_identical_members_is_that_member(members, mnist, tmp_path):
    from digits.ensemble import evaluate_ensemble

    runs, _ = members
    twin = shutil.copytree(runs[0], tmp_path / "twin")
    result = evaluate_ensemble([runs[0], twin], mnist, tmp_path / "out")
    member = result.members[0]
    assert (result.ensemble.evaluation.accuracy, result.ensemble.evaluation.mistake_count) == (
        member.accuracy, member.mistakes)
    assert result.members[1].accuracy == member.accuracy


@pytest.mark.parametrize("damage, words", [
    ("missing", "There is no run folder"),
    ("unfinished", "is incomplete"),
    ("single", "at least two run folders"),
    ("twice", "given twice"),
    ("limits", "different --test-limit values"),
])
def test_bad_members_are_one_sentence(members, tmp_path, capsys, damage, words):
    runs, _ = members
    first, second = runs
    if damage == "missing":
        arguments = [first, tmp_path / "nowhere"]
    elif damage == "unfinished":
        unfinished = shutil.copytree(second, tmp_path / "unfinished")
        (unfinished / "metrics.json").unlink()
        arguments = [first, unfinished]
    elif damage == "single":
        arguments = [first]
    elif damage == "twice":
        arguments = [first, first]
    else:
        other = shutil.copytree(second, tmp_path / "other-limit")
        config = json.loads((other / "config.json").read_text())
        config["recipe"]["test_limit"] = 100
        (other / "config.json").write_text(json.dumps(config))
        arguments = [first, other]
    from digits.cli import main

    assert main(["ensemble", *map(str, arguments)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("digits: error: ") and words in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1


def test_weight_averaging_saves_the_average_and_scores_both(mnist, tmp_path):
    from digits.runs import load_model, load_run
    from digits.train import train

    recipe = with_overrides(get_preset("best"), epochs=1, train_limit=1000, test_limit=200, weight_averaging=True)
    run = load_run(train(recipe, mnist, tmp_path, verbose=0))
    assert run.config["recipe"]["weight_averaging"] is True
    assert 0 <= run.metrics["validation_accuracy"] <= 1 and 0 <= run.metrics["raw_validation_accuracy"] <= 1
    assert load_model(run).count_params() > 0
