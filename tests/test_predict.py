"""digits.predict and `digits predict`: the shipped model, other models, and the command end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import run_digits
from digits.errors import DigitsError
from digits.inference.classifier import PRETRAINED_DIR, PRETRAINED_MODEL, load_classifier
from digits.inference.files import find_image_files
from digits.pictures.prepare import prepare_image
from digits.training.recipes import get_preset
from digits.training.runs import load_run


def draw_digit(digit: int, size=(240, 240), ink=0, paper=255) -> Image.Image:
    """A pen-drawn 0, 1 or 7, the way people draw them, on a square canvas."""
    picture = Image.new("L", size, paper)
    draw = ImageDraw.Draw(picture)
    width, height = size
    if digit == 0:
        draw.ellipse([width * 0.32, height * 0.15, width * 0.68, height * 0.85], outline=ink, width=width // 18)
    elif digit == 1:
        draw.line([(width * 0.5, height * 0.15), (width * 0.5, height * 0.85)], fill=ink, width=width // 18)
    elif digit == 7:
        draw.line(
            [(width * 0.3, height * 0.18), (width * 0.7, height * 0.18), (width * 0.42, height * 0.85)],
            fill=ink, width=width // 18, joint="curve",
        )
    return picture


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def test_the_shipped_model_is_small_and_described(classifier):
    assert PRETRAINED_MODEL.stat().st_size < 1_000_000
    assert classifier.name == "pretrained"
    assert classifier.info["test_accuracy"] >= 0.995  # measured once by `digits evaluate`, shipped beside it
    assert classifier.info["architecture"] == "cnn-bn"
    assert classifier.info["parameters"] == load_classifier(PRETRAINED_MODEL).model.count_params()
    assert classifier.info["command"] == "digits train pretrained"


def test_the_shipped_model_is_a_finished_run_of_the_pretrained_preset():
    run = load_run(PRETRAINED_DIR)
    recipe = get_preset("pretrained")
    assert run.config["recipe"] == recipe.model_dump()  # so `digits train pretrained` trains it again
    assert run.config["data"]["train_images"] == 60_000 and run.config["data"]["validation_images"] == 0
    assert run.metrics["status"] == "complete" and run.metrics["epochs"] == recipe.epochs


def test_the_shipped_model_reads_drawn_digits(classifier):
    pictures = [draw_digit(0), draw_digit(1, ink=255, paper=0), draw_digit(7, size=(600, 400))]
    predictions = classifier.classify(np.stack([prepare_image(picture) for picture in pictures]))
    assert predictions.probabilities.shape == (3, 10)
    assert np.allclose(predictions.probabilities.sum(axis=1), 1, atol=1e-4)
    assert predictions.digits.tolist() == [0, 1, 7]


def test_classify_checks_its_input(classifier):
    with pytest.raises(ValueError, match="uint8 images of shape"):
        classifier.classify(np.zeros((2, 28, 28), np.float32))


def test_a_keras_file_and_a_run_folder_can_be_loaded(tmp_path):
    copy = tmp_path / "mine.keras"
    shutil.copy(PRETRAINED_MODEL, copy)
    assert load_classifier(copy).name == "mine"

    run = tmp_path / "20250101-120000-quick-cnn"
    run.mkdir()
    shutil.copy(PRETRAINED_MODEL, run / "model.keras")
    (run / "config.json").write_text(json.dumps({"preset": "quick-cnn", "recipe": {"model": "cnn"}}))
    (run / "metrics.json").write_text(
        json.dumps({"status": "complete", "epochs": 1, "validation": "test", "validation_accuracy": 0.98})
    )
    (run / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy,seconds\n1,0.1,0.9,0.1,0.98,1.0\n")
    loaded = load_classifier(run)
    assert loaded.name == run.name
    assert loaded.info["architecture"] == "cnn" and loaded.info["test_accuracy"] == 0.98


def test_bad_model_paths_are_one_sentence(tmp_path):
    with pytest.raises(DigitsError, match="There is no model at"):
        load_classifier(tmp_path / "missing.keras")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(DigitsError, match="not a .keras or .onnx model file"):
        load_classifier(notes)
    broken_onnx = tmp_path / "broken.onnx"
    broken_onnx.write_bytes(b"not an onnx graph")
    with pytest.raises(DigitsError, match="Cannot load an ONNX model"):
        load_classifier(broken_onnx)
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DigitsError, match=r"Cannot load a Keras model from .*broken\.keras"):
        load_classifier(broken)
    with pytest.raises(DigitsError, match="not a run folder"):
        load_classifier(tmp_path)


def test_a_model_of_the_wrong_shape_is_refused(tmp_path):
    import keras

    wrong = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(3)])
    path = tmp_path / "wrong.keras"
    wrong.save(path)
    with pytest.raises(DigitsError, match="28×28 images to 10 classes"):
        load_classifier(path)


def test_folders_are_walked_in_sorted_order_without_hidden_files(tmp_path):
    for name in ["b.png", "a.png", "sub/c.png", ".hidden.png", ".cache/d.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_image_files([tmp_path, tmp_path / "missing.png"])
    assert [path.relative_to(tmp_path).as_posix() for path in found] == ["a.png", "b.png", "sub/c.png", "missing.png"]


# --- the command, end to end ----------------------------------------------------------------------------




@pytest.fixture
def picture_folder(tmp_path) -> Path:
    """Three drawn digits (PNG, JPEG, light on dark), one file that is not a picture, one hidden file."""
    folder = tmp_path / "pictures"
    (folder / "more").mkdir(parents=True)
    draw_digit(0).save(folder / "a-zero.png")
    draw_digit(7, size=(500, 300)).convert("RGB").save(folder / "b-seven.jpg")
    draw_digit(1, ink=255, paper=0).save(folder / "more" / "c-one.png")
    (folder / "notes.txt").write_text("not a picture")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    return folder


@pytest.mark.slow
def test_cli_reads_a_folder_and_reports_the_bad_file_without_stopping(picture_folder, tmp_path):
    views = tmp_path / "views"
    result = run_digits("predict", str(picture_folder), "--show", str(views))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # The hidden file is skipped; every other file gets a line, in sorted order.
    assert lines[0].startswith(f"{picture_folder / 'a-zero.png'}: 0 (")
    assert lines[1].startswith(f"{picture_folder / 'b-seven.jpg'}: 7 (")
    assert lines[2].startswith(f"{picture_folder / 'more' / 'c-one.png'}: 1 (")
    assert "top 3: " in lines[0] and lines[0].count("%") == 4
    assert lines[3].startswith(f"{picture_folder / 'notes.txt'}: error: ") and "not an image" in lines[3]
    assert "1 of 4 files could not be read" in result.stderr and "Traceback" not in result.stderr
    # --show: the original beside the 28x28 view, for each file that was read.
    assert sorted(path.name for path in views.iterdir()) == ["a-zero.png", "b-seven.png", "c-one.png"]
    with Image.open(views / "a-zero.png") as sheet:
        assert sheet.height >= 280 and sheet.width > 2 * 280


@pytest.mark.slow
def test_cli_json_and_top(picture_folder):
    zero, notes = str(picture_folder / "a-zero.png"), str(picture_folder / "notes.txt")
    result = run_digits("predict", zero, notes, "--json", "--top", "5")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["model"]["name"] == "pretrained" and document["failed"] == 1
    good, bad = document["results"]
    assert good["digit"] == 0 and len(good["top"]) == 5 and len(good["probabilities"]) == 10
    assert good["top"][0] == {"digit": 0, "probability": good["probability"]}
    assert bad == {"path": str(picture_folder / "notes.txt"), "error": bad["error"]} and "not an image" in bad["error"]


@pytest.mark.slow
def test_cli_exit_status_is_0_when_every_file_is_read(picture_folder, tmp_path):
    missing = tmp_path / "missing.png"
    ok = run_digits("predict", str(picture_folder / "b-seven.jpg"))
    assert ok.returncode == 0 and ok.stdout.startswith(f"{picture_folder / 'b-seven.jpg'}: 7 (")
    bad_model = run_digits("predict", picture_folder / "b-seven.jpg", missing, "--model", tmp_path / "x.kr")
    assert bad_model.returncode == 1
    assert bad_model.stderr.startswith("digits: error: There is no model at") and "Traceback" not in bad_model.stderr
