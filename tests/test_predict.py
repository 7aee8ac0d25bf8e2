"""digits.predict and `digits predict`: the shipped model, other models, and the command end to end."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import digits
from conftest import draw_digit_png, draw_smiley, run_digits
from digits.data.mnist import load_mnist
from digits.errors import DigitsError
from digits.inference.classifier import PRETRAINED_DIR, PRETRAINED_MODEL, load_classifier
from digits.inference.files import FileResult, FileResults, find_image_files, result_line, results_document
from digits.inference.prediction import DIGIT, Prediction, Predictions
from digits.pictures.prepare import prepare_file, prepare_image
from digits.pictures.segment import find_digits_in_file
from digits.serving.app import create_app
from digits.training.presets import get_preset
from digits.training.runs import load_run

with warnings.catch_warnings():
    # Starlette's test client warns, on import, that it will move to another HTTP library; not our concern.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


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
    with pytest.raises(DigitsError, match=r"uint8 images of shape \(N, 28, 28\) or \(28, 28\).*not float32"):
        digits.predict(np.zeros((2, 28, 28), np.float32), model=classifier)


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
    assert all(" digit score " in line for line in lines[:3])  # the shipped model has a not-a-digit detector
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
    # The unreadable file has its path and the sentence saying why, and nothing else.
    assert bad == {"path": notes, "error": f"{notes} is not an image that can be read; use a PNG, JPEG, BMP, GIF, "
                                           "TIFF or WebP file."}


@pytest.mark.slow
def test_cli_exit_status_is_0_when_every_file_is_read(picture_folder, tmp_path):
    missing = tmp_path / "missing.png"
    ok = run_digits("predict", str(picture_folder / "b-seven.jpg"))
    assert ok.returncode == 0 and ok.stdout.startswith(f"{picture_folder / 'b-seven.jpg'}: 7 (")
    bad_model = run_digits("predict", picture_folder / "b-seven.jpg", missing, "--model", tmp_path / "x.kr")
    assert bad_model.returncode == 1
    assert bad_model.stderr.startswith("digits: error: There is no model at") and "Traceback" not in bad_model.stderr


# --- one prediction type: the same fields and the same ranking everywhere ---------------------------------


def uniform_onnx_model(path: Path) -> Path:
    """A real ONNX model whose weights and biases are all zero: every picture gets probability 0.1 for each digit,
    so its answers are all ties."""
    import onnx
    from onnx import TensorProto, helper

    zeros = [helper.make_tensor("weights", TensorProto.FLOAT, [784, 10], [0.0] * 7840),
             helper.make_tensor("bias", TensorProto.FLOAT, [10], [0.0] * 10)]
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["pixels"], axis=1),
         helper.make_node("Gemm", ["pixels", "weights", "bias"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "uniform",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializer=zeros,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def uniform_model(tmp_path_factory) -> Path:
    return uniform_onnx_model(tmp_path_factory.mktemp("uniform") / "uniform.onnx")


def post_png(client, png: bytes) -> dict:
    response = client.post("/predict", content=png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    return response.json()


def test_equal_probabilities_rank_the_lower_digit_first_in_the_api_the_lines_the_json_and_the_server(
        uniform_model, tmp_path):
    picture = tmp_path / "seven.png"
    picture.write_bytes(draw_digit_png(7))

    predictions = digits.predict(load_mnist().test_images[:4], model=uniform_model)
    assert predictions.digits.tolist() == [0, 0, 0, 0]
    assert predictions[0].digit == 0 and [digit for digit, _ in predictions[0].top(3)] == [0, 1, 2]
    assert [probability for _, probability in predictions[0].top(10)] == pytest.approx([0.1] * 10)

    (result,) = digits.predict([picture], model=uniform_model)
    assert result.digit == 0 and [digit for digit, _ in result.top(3)] == [0, 1, 2]
    assert result_line(result).endswith(": 0 (10.0%)  top 3: 0 10.0%, 1 10.0%, 2 10.0%")
    (entry,) = results_document(load_classifier(uniform_model), [result])["results"]
    assert entry["digit"] == 0 and [ranked["digit"] for ranked in entry["top"]] == [0, 1, 2]

    with TestClient(create_app(load_classifier(uniform_model))) as client:
        answer = post_png(client, picture.read_bytes())
    assert answer["digit"] == 0 and [ranked["digit"] for ranked in answer["top"]] == [0, 1, 2]
    # One type behind both: the same fields in the same order; the server adds the model and the view.
    assert list(entry) == ["path", "digit", "verdict", "probability", "digit_score", "top", "probabilities", "number",
                           "digits"]
    assert list(answer) == list(entry)[1:] + ["model", "view", "views"]
    assert {key: answer[key] for key in list(entry)[1:]} == {key: entry[key] for key in list(entry)[1:]}
    # This model has no not-a-digit detector: no digit score, and every picture counts as a digit.
    assert answer["digit_score"] is None and answer["verdict"] == DIGIT


def test_the_command_ranks_ties_as_the_api_does(uniform_model, tmp_path):
    picture = tmp_path / "seven.png"
    picture.write_bytes(draw_digit_png(7))  # An ONNX model: the command runs without TensorFlow.
    lines = run_digits("predict", picture, "--model", uniform_model, timeout=120)
    assert lines.returncode == 0, lines.stderr
    assert lines.stdout == f"{picture}: 0 (10.0%)  top 3: 0 10.0%, 1 10.0%, 2 10.0%\n"
    document = run_digits("predict", picture, "--model", uniform_model, "--json", timeout=120)
    (entry,) = json.loads(document.stdout)["results"]
    (through_the_api,) = digits.predict([picture], model=uniform_model)
    assert entry == through_the_api.to_dict()


def test_predict_on_arrays_returns_arrays_as_scikit_learn_does(classifier):
    images = load_mnist().test_images[:3]  # A 7, a 2 and a 1.
    predictions = digits.predict(images, model=classifier)
    assert isinstance(predictions, Predictions) and len(predictions) == 3
    assert repr(predictions) == "Predictions(3 images: 7, 2, 1)"
    assert predictions.digits.tolist() == [7, 2, 1] and predictions.digits.shape == (3,)
    assert predictions.probabilities.shape == (3, 10) and predictions.digit_scores.shape == (3,)
    assert predictions.verdicts.tolist() == [DIGIT] * 3
    assert np.all((predictions.digit_scores >= 0) & (predictions.digit_scores <= 1))  # The shipped detector's.

    seven = predictions[0]
    assert isinstance(seven, Prediction) and seven.digit == 7
    assert seven.probability == predictions.probabilities[0].max() and seven.top(1) == [(7, seven.probability)]
    assert [prediction.digit for prediction in predictions] == [7, 2, 1]
    assert repr(predictions[1:]) == "Predictions(2 images: 2, 1)"

    one = digits.predict(images[0], model=classifier)  # A single (28, 28) image.
    assert repr(one) == "Predictions(1 image: 7)" and one.probabilities.shape == (1, 10)
    np.testing.assert_allclose(one.probabilities[0], seven.probabilities, atol=1e-6)


def test_a_model_without_a_detector_has_nan_digit_scores_and_no_digit_score_in_json(uniform_model):
    predictions = digits.predict(load_mnist().test_images[:2], model=uniform_model)
    assert np.isnan(predictions.digit_scores).all() and predictions.digit_scores.shape == (2,)
    assert predictions[0].digit_score is None and predictions[0].to_dict()["digit_score"] is None


def test_files_keep_one_result_each_with_its_prediction_or_its_error(classifier, tmp_path):
    (tmp_path / "a-seven.png").write_bytes(draw_digit_png(7))
    (tmp_path / "b-notes.txt").write_text("not a picture")
    seven, notes = digits.predict(tmp_path, model=classifier)
    assert isinstance(seven, FileResult) and seven.digit == 7 and seven.prediction.verdict == DIGIT
    assert seven.to_dict() == {"path": str(tmp_path / "a-seven.png"), **seven.prediction.to_dict()}
    assert repr(seven).startswith(f"FileResult(path={str(tmp_path / 'a-seven.png')!r}, "
                                  "prediction=NumberPrediction(number='7'")
    assert notes.prediction is None and "not an image" in notes.error
    with pytest.raises(ValueError, match="b-notes.txt has no answer: .*not an image"):
        notes.top()


def test_the_server_answers_what_digits_predict_answers_for_the_same_picture(classifier):
    png = draw_digit_png(7, side=420)
    with TestClient(create_app(classifier)) as client:
        answer = post_png(client, png)
    view = prepare_file(png)
    assert answer["view"] == view.tolist() and answer["views"] == [view.tolist()]
    # The server's workers call Classifier.classify, as digits.predict does: the very same answer.
    (expected,) = digits.predict(view, model=classifier)
    (box,) = [candidate.box for candidate in find_digits_in_file(png).candidates]
    digit = {key: value for key, value in expected.to_dict().items() if key in ("digit", "probability", "digit_score")}
    assert answer == {**expected.to_dict(), "number": "7", "digits": [{**digit, "box": list(box)}],
                      "model": classifier.name, "view": view.tolist(), "views": [view.tolist()]}


def test_a_picture_file_shows_itself_in_a_notebook_beside_the_view_the_model_read(tmp_path):
    import base64
    import io
    import random

    from digits.data.synthetic import stroke_picture
    from digits.reporting.display import file_result_card

    picture, _ = stroke_picture("7", random.Random(3))  # a pen-drawn 7, as a student's photo or scan would be
    path = tmp_path / "my-digit.png"
    picture.save(path)
    result, = digits.predict(path, keep_originals=True)
    assert repr(result).startswith("FileResult(path=") and len(repr(result)) < 200  # no 28×28 array printed

    card = file_result_card(result)  # what Jupyter shows for it (digits registers it by class name)
    assert f"<b>{result.digit}</b>" in card and "top 3: " in card and "digit score " in card
    images = [Image.open(io.BytesIO(base64.b64decode(uri.split('"')[0])))
              for uri in card.split("data:image/png;base64,")[1:]]
    assert len(images) == 2 and images[1].size == (28 * 6, 28 * 6)  # the original, then the view, enlarged


def test_a_folder_of_pictures_shows_itself_in_a_notebook_as_a_summary_and_each_files_card(classifier, tmp_path):
    from digits.reporting.display import MAX_CARDS_SHOWN, file_results_cards

    (tmp_path / "a-seven.png").write_bytes(draw_digit_png(7))
    draw_smiley().save(tmp_path / "b-smiley.png")
    (tmp_path / "c-notes.txt").write_text("not a picture")
    results = digits.predict(tmp_path, model=classifier, keep_originals=True)
    assert isinstance(results, list) and isinstance(results, FileResults)  # still the list it was
    assert results.counts() == {"digit": 1, "not a digit": 1, "unreadable": 1}

    shown = file_results_cards(results)  # what Jupyter shows for it (digits registers it by class name)
    assert "3 files: 1 read as a digit, 1 not a digit, 1 could not be read" in " ".join(shown.split())
    assert [name in shown for name in ("a-seven.png", "b-smiley.png", "c-notes.txt")] == [True] * 3
    assert "<b>7</b>" in shown and "does not look like a digit" in shown and "not an image" in shown

    many = FileResults(results[:1] * (MAX_CARDS_SHOWN + 5))  # a big folder: the first cards, and how to see the rest
    shown = file_results_cards(many)
    assert shown.count("<b>7</b>") == MAX_CARDS_SHOWN and "and 5 more" in " ".join(shown.split())


def test_each_line_ends_with_the_digit_score_the_json_gives(classifier, tmp_path):
    (tmp_path / "a-seven.png").write_bytes(draw_digit_png(7))
    draw_smiley().save(tmp_path / "b-smiley.png")
    seven, smiley = digits.predict(tmp_path, model=classifier)
    for result in (seven, smiley):
        assert result_line(result).endswith(f"  digit score {result.to_dict()['digit_score']:.2f}")
    assert seven.prediction.digit_score > 0.5 > smiley.prediction.digit_score
    assert "does not look like a digit" in result_line(smiley)
