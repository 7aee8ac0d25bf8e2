"""Record accuracy: augmentation, the cnn-bn model, the `best` preset, and ensembles."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import folder_digest, run_digits
from digits.data.mnist import load_mnist, to_model_input
from digits.ensemble import average_probabilities
from digits.errors import DigitsError
from digits.training.augment import augment_images, shift_images
from digits.training.presets import get_preset
from digits.training.recipes import with_overrides

TINY = ["--epochs", "1", "--train-limit", "1000", "--test-limit", "200"]


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
    from digits.training.models import build_model

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


def test_best_trains_on_every_training_image_and_never_sees_the_test_set():
    from digits.training.presets import PRESETS

    recipe = get_preset("best")
    assert (recipe.model, recipe.validation, recipe.schedule) == ("cnn-bn", "none", "one-cycle")
    assert recipe.augment_rotation and recipe.augment_shift and recipe.augment_zoom
    assert recipe.label_smoothing and recipe.target_accuracy is None
    assert "--validation holdout" in PRESETS["best"].description


def test_augmenting_the_shallow_network_is_one_sentence():
    with pytest.raises(DigitsError, match="Random-rotation augmentation .* drop `augment_rotation`"):
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
    finished = [run_digits("train", "best", *TINY, "--seed", seed, "--quiet", "--runs-dir", workdir / "runs",
                           cwd=workdir)
                for seed in (0, 1)]
    for process in finished:
        assert process.returncode == 0, process.stderr[-2000:]
    return sorted((workdir / "runs").iterdir()), finished[0]


@pytest.mark.slow
def test_best_trains_from_the_command_line(members):
    runs, finished = members
    assert "Run complete" in finished.stdout and "no validation" in finished.stdout
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["recipe"]["model"] == "cnn-bn" and config["recipe"]["augment_rotation"] == 10
    assert config["data"]["validation_images"] == 0
    from digits.training.runs import load_model, load_run

    model = load_model(load_run(runs[0]))  # the saved model is the cnn-bn the recipe names, and it reads digits
    assert model.count_params() == 104_874
    probabilities = model.predict(to_model_input(load_mnist().test_images[:4]), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_ensemble_command_evaluates_and_reports(members, tmp_path):
    runs, _ = members
    out = tmp_path / "ensemble"
    before = {run: folder_digest(run) for run in runs}
    finished = run_digits("ensemble", *runs, "--tta", "--out", out, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert {run: folder_digest(run) for run in before} == before  # The members' folders are only read.
    assert "ensemble of 2 with TTA" in finished.stdout and runs[0].name in finished.stdout
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["test_images"] == 200 and evaluation["overfitting"] is None
    page = (out / "report.html").read_text(encoding="utf-8")
    assert evaluation["name"] in page and f"{100 * evaluation['evaluation']['accuracy']:.2f}" in page
    for figure in ("confusion.png", "mistakes.png"):
        assert (out / figure).read_bytes().startswith(b"\x89PNG"), figure
    assert len(json.loads((out / "ensemble.json").read_text())["members"]) == 2


@pytest.mark.slow
def test_an_ensemble_of_identical_members_is_that_member(members, mnist, tmp_path):
    from digits.ensemble import evaluate_ensemble

    runs, _ = members
    twin = shutil.copytree(runs[0], tmp_path / "twin")
    result = evaluate_ensemble([runs[0], twin], mnist, tmp_path / "out")
    member = result.members[0]
    assert (result.ensemble.accuracy, result.ensemble.mistake_count) == (
        member.accuracy, member.mistakes)
    assert result.members[1].accuracy == member.accuracy


@pytest.mark.parametrize("damage, words", [
    ("missing", "There is no run folder"),
    ("unfinished", "is incomplete"),
    ("single", "at least two run folders"),
    ("twice", "given twice"),
    ("limits", "different --test-limit values"),
])
@pytest.mark.slow
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


@pytest.mark.slow
def test_weight_averaging_saves_the_average_and_scores_both(mnist, tmp_path):
    from digits.training.fit import train
    from digits.training.runs import load_model, load_run

    recipe = with_overrides(get_preset("best"), epochs=1, train_limit=1000, test_limit=200, weight_averaging=True,
                            validation="holdout")
    run = load_run(train(recipe, mnist, tmp_path, verbose=0))
    assert run.config["recipe"]["weight_averaging"] is True
    assert 0 <= run.metrics["validation_accuracy"] <= 1 and 0 <= run.metrics["raw_validation_accuracy"] <= 1
    assert load_model(run).count_params() > 0


# --- final models: every training image, and test-time augmentation --------------------------------------


def test_validation_none_trains_on_all_60000_images_and_leaves_the_test_set_alone(mnist):
    from digits.training.fit import prepare_data

    recipe = with_overrides(get_preset("best"), validation="none")
    split = prepare_data(recipe, mnist)
    assert len(split.train_images) == len(split.train_labels) == 60_000 and len(split.validation_images) == 0
    assert "all 60,000 training images" in split.description and "test set is not used" in split.description


@pytest.mark.slow
def test_a_run_without_validation_records_training_curves_only_and_still_evaluates(mnist, tmp_path):
    from digits.study import report_run
    from digits.training.fit import train
    from digits.training.runs import load_run

    recipe = with_overrides(get_preset("best"), epochs=2, train_limit=600, validation="none")
    run = load_run(train(recipe, mnist, tmp_path / "runs", verbose=0))
    assert run.metrics["validation_accuracy"] is None and run.config["data"]["validation_images"] == 0
    assert np.isnan(run.history["val_loss"]).all() and np.isfinite(run.history["loss"]).all()
    evaluated = report_run(run, mnist, tmp_path / "evaluation", with_data_section=False)
    assert evaluated.overfitting.level == "unknown"
    assert (tmp_path / "evaluation" / "learning_curves.png").is_file()
    assert "trained on every training image" in evaluated.report.read_text()


def test_a_target_accuracy_without_validation_is_one_sentence():
    with pytest.raises(DigitsError, match="needs a validation set"):
        with_overrides(get_preset("quick-cnn"), validation="none", target_accuracy=0.99)


@pytest.mark.slow
def test_evaluate_with_tta_writes_beside_the_plain_evaluation(members, tmp_path):
    runs, _ = members
    run = shutil.copytree(runs[0], tmp_path / runs[0].name)
    plain = run_digits("evaluate", run, cwd=tmp_path)
    shifted = run_digits("evaluate", run, "--tta", cwd=tmp_path)
    assert plain.returncode == 0 and shifted.returncode == 0, shifted.stderr[-2000:]
    assert "with TTA" in shifted.stdout and "with TTA" not in plain.stdout
    plain_evaluation = json.loads((run / "evaluation" / "evaluation.json").read_text())
    tta_evaluation = json.loads((run / "evaluation-tta" / "evaluation.json").read_text())
    assert tta_evaluation["name"].endswith("with TTA") and not plain_evaluation["name"].endswith("with TTA")
    assert tta_evaluation["test_images"] == plain_evaluation["test_images"] == 200
    # Five reads of each image average to different probabilities, so a different test loss.
    assert tta_evaluation["evaluation"]["loss"] != plain_evaluation["evaluation"]["loss"]


def test_elastic_distortion_bends_strokes_but_keeps_the_digit(mnist):
    images = to_model_input(mnist.train_images[:64])
    bent = augment_images(images, elastic_pixels=1.5, seed=2)
    assert bent.shape == images.shape
    assert (np.abs(bent - images).reshape(len(images), -1).max(axis=1) > 0.1).mean() > 0.9
    # Bending stretches some strokes and squeezes others, but the digit stays in the frame.
    ink_ratio = bent.sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3))
    assert np.all((ink_ratio > 0.6) & (ink_ratio < 1.7)) and 0.9 < np.median(ink_ratio) < 1.2
    # With every amount at 0 there is no layer at all, so nothing moves.
    np.testing.assert_array_equal(augment_images(images), images)


@pytest.mark.slow
def test_a_saved_model_with_its_augmentation_layer_reloads_in_a_fresh_process(tmp_path):
    from digits.training.models import build_model

    model = build_model("cnn-bn", shift=2, rotation=10, zoom=0.1, elastic=1.5)
    model.save(tmp_path / "model.keras")
    images = np.random.default_rng(0).random((4, 28, 28, 1), dtype="float32")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", model.predict(images, verbose=0))
    script = ("import numpy as np, sys; from pathlib import Path; "
              "from digits.inference.classifier import _load_keras_file; "
              "folder = Path(sys.argv[1]); model = _load_keras_file(folder / 'model.keras'); "
              "np.testing.assert_allclose(model.predict(np.load(folder / 'images.npy'), verbose=0), "
              "np.load(folder / 'expected.npy'), rtol=1e-5, atol=1e-6); "
              "print(model.get_layer('random_warp').get_config()['elastic_pixels'])")
    finished = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.strip().endswith("1.5")


def test_a_preset_with_a_target_trains_without_validation_once_the_target_is_dropped():
    from digits.cli import build_parser
    from digits.cli.training import recipe_from_args

    args = build_parser().parse_args(["train", "quick-cnn", "--validation", "none", "--target-accuracy", "none"])
    recipe = recipe_from_args(args)
    assert (recipe.validation, recipe.target_accuracy, recipe.model) == ("none", None, "cnn")


def test_bilinear_sampling_reads_whole_pixels_exactly_and_blends_between_them():
    from digits.training.augment import sample_bilinear

    images = np.random.default_rng(3).random((3, 28, 28), dtype="float32")
    rows, columns = np.meshgrid(np.arange(28, dtype="float32"), np.arange(28, dtype="float32"), indexing="ij")
    rows, columns = np.broadcast_to(rows, images.shape), np.broadcast_to(columns, images.shape)
    np.testing.assert_allclose(sample_bilinear(images, rows, columns), images, atol=1e-6)
    # Reading one pixel up and two to the left moves the image down 1 and right 2, black entering the frame.
    moved = np.asarray(sample_bilinear(images, rows - 1, columns - 2))
    np.testing.assert_allclose(moved, shift_images(images, 1, 2), atol=1e-6)
    # Half-way between two columns is their mean, and each image is read from itself, not its neighbour.
    halfway = np.asarray(sample_bilinear(images, rows, columns + 0.5))
    np.testing.assert_allclose(halfway[:, :, :-1], (images[:, :, :-1] + images[:, :, 1:]) / 2, atol=1e-6)


def test_a_warp_with_nothing_to_do_leaves_training_images_unchanged(mnist):
    import keras

    from digits.training.augment import RandomWarp

    images = to_model_input(mnist.train_images[:16])
    unchanged = keras.ops.convert_to_numpy(RandomWarp()(images, training=True))
    np.testing.assert_allclose(unchanged, images, atol=1e-5)
