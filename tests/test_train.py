"""Training and run folders: the real `digits train` on a slice, Ctrl-C, reproducibility, and damaged runs."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import run_digits
from digits.data.mnist import load_mnist, to_model_input
from digits.errors import DigitsError
from digits.training.fit import RunInterrupted, prepare_data, train
from digits.training.presets import get_preset
from digits.training.recipes import Recipe, with_overrides
from digits.training.runs import HISTORY_COLUMNS, create_run_dir, load_model, load_run

RUN_NAME = re.compile(r"^\d{8}-\d{6}-[a-z-]+$")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def holdout_run(mnist, tmp_path_factory) -> Path:
    """A finished two-epoch shallow run on a slice, validated on the holdout images."""
    recipe = with_overrides(
        get_preset("quick-shallow"), epochs=2, train_limit=1000, test_limit=300, validation="holdout"
    )
    return train(recipe, mnist, tmp_path_factory.mktemp("runs"), verbose=0).folder


def tiny_recipe(**changes) -> Recipe:
    return with_overrides(get_preset("quick-shallow"), train_limit=500, test_limit=200, **changes)


def accuracy_of(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    probabilities = model.predict(to_model_input(images), verbose=0, batch_size=256)
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


class InterruptAt(keras.callbacks.Callback):
    """Raises KeyboardInterrupt, as Ctrl-C does, after a given epoch or at the first batch (epoch 0)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 0:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_train_command_writes_every_file_of_the_run_folder(mnist, tmp_path):
    result = run_digits("train", "quick-cnn", "--epochs", "1", "--train-limit", "2000", "--test-limit", "500",
                        "--seed", "3", "--runs-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    [run_dir] = tmp_path.iterdir()
    assert RUN_NAME.match(run_dir.name) and run_dir.name.endswith("-quick-cnn")
    # One line per epoch in a log or pipe, the same format a notebook shows.
    assert re.search(r"^epoch 1/1 · .* · validation accuracy \d+\.\d\d %$", result.stdout, re.MULTILINE)
    assert f"Run complete: {run_dir}" in result.stdout
    files = sorted(path.name for path in run_dir.iterdir())
    assert files == ["config.json", "history.csv", "metrics.json", "model.keras"]

    config = json.loads((run_dir / "config.json").read_text())
    assert config["preset"] == "quick-cnn" and config["seed"] == 3 and config["backend"] == "tensorflow"
    overrides = {"epochs": 1, "seed": 3, "train_limit": 2000, "test_limit": 500}
    assert config["recipe"] == {**vars(get_preset("quick-cnn")), **overrides}
    assert {"python", "keras", "numpy", "tensorflow"} <= set(config["versions"])
    assert config["data"]["train_images"] == 2000 and config["data"]["validation_images"] == 500
    datetime.fromisoformat(config["started"])

    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0] == ",".join(HISTORY_COLUMNS) and len(lines) == 2
    history = load_run(run_dir).history
    assert history["epoch"].tolist() == [1] and history["seconds"][0] > 0

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["epochs"] == 1 and metrics["validation"] == "test"
    assert metrics["parameters"] == 34_826
    assert metrics["validation_accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert metrics["validation_loss"] == pytest.approx(history["val_loss"][-1])
    assert metrics["training_seconds"] > 0 and metrics["samples_per_second"] > 0
    assert metrics["validation_accuracy"] > 0.5  # one epoch on 2,000 images already learns a lot

    # The saved model is the trained one: it scores what metrics.json says on the same 500 test images.
    model = load_model(load_run(run_dir))
    measured = accuracy_of(model, mnist.test_images[:500], mnist.test_labels[:500])
    assert measured == pytest.approx(metrics["validation_accuracy"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_leaves_a_consistent_incomplete_run(tmp_path, stop):
    # SIGTERM is what systemd, Docker and Kubernetes send; it must end training as Ctrl-C (SIGINT) does.
    command = [sys.executable, "-m", "digits", "train", "quick-shallow", "--epochs", "1000", "--train-limit", "2000",
               "--test-limit", "500", "--runs-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            histories = list(tmp_path.glob("*/history.csv"))
            if histories and len(histories[0].read_text().splitlines()) >= 2:  # header and one finished epoch
                break
            time.sleep(0.1)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    [run_dir] = tmp_path.iterdir()
    assert "interrupted after" in stderr and str(run_dir) in stderr and "Traceback" not in stderr

    with pytest.raises(DigitsError, match="incomplete"):
        load_run(run_dir)
    run = load_run(run_dir, require_complete=False)
    assert run.metrics["status"] == "interrupted"
    assert 1 <= run.metrics["epochs"] < 1000
    assert len(run.history["epoch"]) == run.metrics["epochs"]
    assert run.metrics["validation_accuracy"] == pytest.approx(run.history["val_accuracy"][-1])
    assert 1 <= run.metrics["model_epoch"] <= run.metrics["epochs"]
    assert load_model(run).count_params() == 50_890
    assert np.isfinite(run.history["loss"]).all()


@pytest.mark.slow
def test_interruption_keeps_the_model_of_the_last_finished_epoch(mnist, tmp_path):
    with pytest.raises(RunInterrupted) as caught:
        train(tiny_recipe(epochs=5), mnist, tmp_path, verbose=0, callbacks=[InterruptAt(epoch=2)])
    run = load_run(caught.value.run_dir, require_complete=False)
    assert (caught.value.epochs, run.metrics["epochs"], run.metrics["model_epoch"]) == (2, 2, 2)
    assert run.history["epoch"].tolist() == [1, 2]
    # The model holds epoch 2's weights: it scores epoch 2's validation accuracy.
    measured = accuracy_of(load_model(run), mnist.test_images[:200], mnist.test_labels[:200])
    assert measured == pytest.approx(run.history["val_accuracy"][1], abs=1e-6)


class InterruptLeavingAScope(keras.callbacks.Callback):
    """A Ctrl-C that lands while TensorFlow leaves a device scope: the scope's RuntimeError, the interrupt behind it."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == 2:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("Exiting device scope without proper scope nesting")  # noqa: B904


def test_a_ctrl_c_surfacing_as_tensorflows_scope_error_still_ends_the_run_as_interrupted(mnist, tmp_path):
    with pytest.raises(RunInterrupted) as caught:
        train(tiny_recipe(epochs=3), mnist, tmp_path, verbose=0, callbacks=[InterruptLeavingAScope()])
    assert load_run(caught.value.run_dir, require_complete=False).metrics["epochs"] == 2


def test_a_runtime_error_with_no_ctrl_c_behind_it_is_not_taken_for_one():
    from digits.training.fit import raised_during_interrupt

    assert not raised_during_interrupt(RuntimeError("Exiting device scope without proper scope nesting"))


@pytest.mark.slow
def test_interruption_before_any_epoch_leaves_no_model(mnist, tmp_path):
    with pytest.raises(RunInterrupted) as caught:
        train(tiny_recipe(epochs=3), mnist, tmp_path, verbose=0, callbacks=[InterruptAt(epoch=0)])
    run = load_run(caught.value.run_dir, require_complete=False)
    assert run.metrics["status"] == "interrupted" and run.metrics["epochs"] == 0
    assert run.metrics["model_epoch"] is None and run.metrics["validation_accuracy"] is None
    assert len(run.history["epoch"]) == 0 and not run.model_path.exists()
    with pytest.raises(DigitsError, match="no model.keras"):
        load_model(run)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_history(mnist, tmp_path):
    runs = [train(tiny_recipe(epochs=2, seed=seed), mnist, tmp_path, verbose=0) for seed in (5, 5, 6)]
    histories = [load_run(run_dir).history for run_dir in runs]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(histories[0][column], histories[1][column], rtol=1e-4)
    assert not np.allclose(histories[0]["loss"], histories[2]["loss"], rtol=1e-4)  # the seed is really used


@pytest.mark.slow
def test_holdout_validates_on_the_last_10000_training_images(mnist, holdout_run):
    recipe = with_overrides(get_preset("seed-cnn"), validation="holdout")
    split = prepare_data(recipe, mnist)
    assert len(split.train_images) == 50_000 and len(split.validation_images) == 10_000
    np.testing.assert_array_equal(split.validation_images, to_model_input(mnist.train_images[50_000:]))
    np.testing.assert_array_equal(split.validation_labels.argmax(axis=1), mnist.train_labels[50_000:])
    np.testing.assert_array_equal(split.train_images[-1], to_model_input(mnist.train_images[49_999:50_000])[0])

    run = load_run(holdout_run)
    assert run.metrics["validation"] == "holdout" and run.config["recipe"]["validation"] == "holdout"
    assert "last 10,000 training images" in run.config["validation"]
    assert (run.config["data"]["train_images"], run.config["data"]["validation_images"]) == (1000, 300)


def test_a_runs_folder_that_cannot_be_created_is_one_sentence_naming_the_option(tmp_path):
    (tmp_path / "taken").write_text("a file, where the runs folder should go")
    with pytest.raises(DigitsError, match=r"^Cannot create .*taken/runs \(.*\); pass a writable `runs_dir`\.$"):
        create_run_dir(tmp_path / "taken" / "runs", "seed-cnn")


def test_runs_started_in_the_same_second_never_share_a_folder(tmp_path):
    now = datetime(2025, 1, 2, 3, 4, 5)
    folders: list[Path] = []
    def start_a_run() -> None:
        folders.append(create_run_dir(tmp_path, "seed-cnn", now=now))

    threads = [threading.Thread(target=start_a_run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 8
    assert sorted(path.name for path in folders) == sorted(
        ["20250102-030405-seed-cnn"] + [f"20250102-030405-seed-cnn-{number}" for number in range(2, 9)]
    )


def _remove(path: Path) -> None:
    path.unlink()


def _mark_interrupted(path: Path) -> None:
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "status": "interrupted"}))


@pytest.mark.parametrize(
    "file, damage, message",
    [
        ("metrics.json", _remove, "is incomplete"),
        ("metrics.json", _mark_interrupted, "is incomplete"),
        ("metrics.json", lambda path: path.write_text('{"status": "compl'), "Cannot read .*metrics.json"),
        ("config.json", lambda path: path.write_text("[1, 2]"), "does not hold a JSON object"),
        ("history.csv", lambda path: path.write_text("epoch,loss\n1,0.5\n"), "Cannot read .*history.csv"),
        ("history.csv", lambda path: path.write_text(path.read_text() + "3,oops,,\n"), "Cannot read .*history.csv"),
        ("history.csv", _remove, "has no history.csv"),
        ("model.keras", _remove, "has no model.keras"),
        ("config.json", _remove, "is not a run folder"),
    ],
)
@pytest.mark.slow
def test_damaged_runs_get_one_clear_sentence(holdout_run, tmp_path, file, damage, message):
    run_dir = shutil.copytree(holdout_run, tmp_path / holdout_run.name)
    load_run(run_dir)  # intact before the damage
    damage(run_dir / file)
    with pytest.raises(DigitsError, match=message):
        load_run(run_dir)


def test_a_missing_run_folder_is_named(tmp_path):
    with pytest.raises(DigitsError, match="There is no run folder at .*nowhere"):
        load_run(tmp_path / "nowhere")


@pytest.mark.slow
def test_a_damaged_model_file_is_one_sentence(holdout_run, tmp_path):
    run_dir = shutil.copytree(holdout_run, tmp_path / holdout_run.name)
    (run_dir / "model.keras").write_bytes(b"not a zip file")
    with pytest.raises(DigitsError, match="damaged"):
        load_model(load_run(run_dir))
