"""Whole numbers: the digits found in one picture, read, and answered the same by predict, the API and the server."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

import digits
from conftest import draw_smiley, run_digits
from digits.data.mnist import load_mnist
from digits.data.numbers import compose_number, ink_picture, mask_glyph, mnist_digits, mnist_glyph, photo_like
from digits.data.synthetic import find_fonts, render_glyph
from digits.inference.classifier import load_classifier
from digits.inference.numbers import NOT_A_NUMBER, NUMBER, read_layouts
from digits.pictures.cuts import between, column_cuts, edge_cut, path_cuts
from digits.pictures.decode import NoDigitError
from digits.pictures.prepare import prepare_image
from digits.pictures.segment import MAX_DIGITS, TooManyDigits, find_digits
from digits.serving.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's test client warns on import about its HTTP library.
    from fastapi.testclient import TestClient

# MNIST test images (never the training set) of the digits 2, 0, 2, 6, 4, 5, 1, 7, 3, 8 and 9, by index.
TEST_INDICES = {"0": 3, "1": 2, "2": 1, "3": 18, "4": 4, "5": 8, "6": 11, "7": 0, "8": 61, "9": 7}


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def handwritten(number: str, mnist, gap: int = 12) -> tuple[Image.Image, list]:
    """A picture of `number` written with MNIST test digits `gap` pixels apart (3× size), and the digits' boxes."""
    for digit, index in TEST_INDICES.items():
        assert mnist.test_labels[index] == int(digit)
    glyphs = [mnist_glyph(mnist.test_images[TEST_INDICES[digit]]) for digit in number]
    ink, boxes = compose_number(glyphs, [gap] * (len(number) - 1), margin=30)
    return ink_picture(ink), boxes


def typed(number: str, height: int = 80) -> Image.Image:
    font = find_fonts()[0]
    glyphs = [mask_glyph(render_glyph(font, digit, height)) for digit in number]
    return ink_picture(compose_number(glyphs, [height // 5] * (len(number) - 1), margin=height // 2)[0])


def read(classifier, picture):
    (reading,) = read_layouts(classifier.classify, [find_digits(picture)])
    return reading


def test_a_handwritten_number_is_read_left_to_right_with_each_digits_box(classifier, mnist):
    picture, boxes = handwritten("2026", mnist)
    reading = read(classifier, picture)
    assert reading.number == "2026" and reading.verdict == NUMBER and len(reading) == 4
    assert reading.probability == pytest.approx(np.prod([prediction.probability for prediction in reading.predictions]))
    # Each box found covers the digit placed there, and nothing of its neighbours.
    for (x, y, width, height), (left, top, glyph_width, glyph_height) in zip(reading.boxes.tolist(), boxes,
                                                                             strict=True):
        assert abs(x - left) <= 3 and abs(width - glyph_width) <= 6
        assert abs(y - top) <= 3 and abs(height - glyph_height) <= 6


def test_typed_numbers_and_a_photo_of_one_are_read(classifier):
    assert read(classifier, typed("31415926")).number == "31415926"
    photo = photo_like(1.0 - np.asarray(typed("4096"), np.float32) / 255, np.random.default_rng(3))
    assert read(classifier, photo).number == "4096"


@pytest.mark.parametrize("number", ["74", "20", "38", "56"])
def test_touching_digits_are_cut_where_the_classifier_reads_them_best(classifier, mnist, number):
    glyphs = [mnist_glyph(mnist.test_images[TEST_INDICES[digit]]) for digit in number]
    overlap = round(0.15 * glyphs[1].shape[1])  # The second digit overlaps the first by 15 % of its width.
    ink, _ = compose_number(glyphs, [-overlap], margin=30)
    picture = ink_picture(ink)
    layout = find_digits(picture)
    assert len(layout.candidates) > 2  # One piece of ink, several ways to cut it.
    assert read(classifier, picture).number == number


def test_two_touching_digits_are_not_taken_for_one_wide_digit(classifier, mnist):
    # A 3 pressed against a 2, then a 7 apart: read whole, the touching pair passes for a wide 2, and the line reads
    # "27"; a stretch wider than a digit usually is pays for it, so the pair is cut in two.
    glyphs = [mnist_glyph(mnist.test_images[TEST_INDICES[digit]]) for digit in "327"]
    ink, _ = compose_number(glyphs, [-round(0.15 * glyphs[1].shape[1]), 15], margin=30)
    assert read(classifier, ink_picture(ink)).number == "327"


@pytest.mark.parametrize(("number", "overlap"), [("1208", 0.15), ("90210", 0.15), ("8675309", 0.10),
                                                 ("123456", 0.10)])
def test_long_lines_of_touching_digits_are_cut_into_every_digit(classifier, mnist, number, overlap):
    # All touching: one piece of ink holding the whole number. Straight cuts through the overlaps used to leave a
    # digit out (1208 read 028, 90210 read 9020) or cut one into two (8675309 read 86757309).
    glyphs = [mnist_glyph(mnist.test_images[TEST_INDICES[digit]]) for digit in number]
    ink, _ = compose_number(glyphs, [-round(overlap * glyph.shape[1]) for glyph in glyphs[1:]], margin=30)
    assert read(classifier, ink_picture(ink)).number == number


def test_a_cut_between_slanted_strokes_follows_them_instead_of_slicing_them():
    # Two strokes leaning right, joined by a thin bar at the foot: every straight cut between them runs down a
    # slanted stroke for many pixels; a cut path leans with them, slips between them and crosses only the bar.
    piece = Image.new("L", (40, 60), 0)
    draw = ImageDraw.Draw(piece)
    draw.line([(24, 0), (10, 59)], fill=255, width=5)
    draw.line([(38, 0), (24, 59)], fill=255, width=5)
    draw.line([(10, 57), (26, 57)], fill=255, width=3)
    strokes = np.asarray(piece) > 127
    inked = np.flatnonzero(strokes.any(axis=0))
    strokes = strokes[:, inked[0] : inked[-1] + 1]  # A piece is cropped to its ink.
    width = strokes.shape[1]
    best = min(path_cuts(strokes, 60, margin=8, spacing=5, limit=4), key=lambda cut: cut.strokes_crossed)
    assert best.strokes_crossed < 1 and best.columns[0] - best.columns[-1] >= 4  # It leans as the strokes do.
    assert min(cut.strokes_crossed for cut in column_cuts(strokes, margin=8, spacing=5, limit=4)) > 3
    # The tops of the two strokes (columns 14-18 and 28-32 of the piece) fall on either side of it.
    right = strokes & between(best, edge_cut(60, width), 0, width)
    assert right[:5, :20].sum() == 0 and right[:5, 24:].sum() == strokes[:5, 24:].sum() > 0


def test_a_lone_round_shape_is_not_cut_into_digits(classifier):
    # A smiley is one wide-enough piece (the eyes and mouth are within the face's columns): read whole, not a digit.
    smiley = draw_smiley()
    reading = read(classifier, smiley)
    assert len(reading) == 1 and reading.verdict == "not a digit"


def test_numbers_to_tune_on_come_from_training_digits_never_the_test_set(mnist):
    images, labels = mnist_digits(mnist, "holdout")
    assert len(images) == len(labels) == 10_000 and np.array_equal(images, mnist.train_images[50_000:])
    assert mnist_digits(mnist, "test")[0] is not None and len(mnist_digits(mnist, "test")[1]) == 10_000
    with pytest.raises(ValueError, match="source must be one of test, holdout, not 'train'"):
        mnist_digits(mnist, "train")


def test_the_two_strokes_of_a_five_are_one_digit_and_a_speck_is_no_digit(classifier):
    picture = Image.new("L", (240, 240), 255)
    draw = ImageDraw.Draw(picture)
    # The body of a 5, and its flag as a separate stroke that does not touch it.
    draw.line([(95, 50), (90, 115)], fill=0, width=14)
    draw.arc([70, 95, 170, 195], start=-150, end=140, fill=0, width=14)
    draw.line([(108, 50), (165, 50)], fill=0, width=14)
    draw.ellipse([200, 200, 205, 205], fill=0)  # A speck of dust.
    reading = read(classifier, picture)
    assert reading.number == "5" and reading.verdict == "digit"


@pytest.mark.parametrize("digit", list("0123456789"))
def test_a_picture_of_one_digit_reads_exactly_as_before(classifier, mnist, digit):
    pictures = [handwritten(digit, mnist)[0], typed(digit, height=60)]
    for picture in pictures:
        reading = read(classifier, picture)
        view = prepare_image(picture)  # The one-digit preparation, untouched.
        assert len(reading) == 1 and np.array_equal(reading.views[0], view)
        (before,) = classifier.classify(view[np.newaxis])
        assert reading.number == digit and reading.to_dict() == {**before.to_dict(), "number": digit,
                                                                 "digits": reading.digits()}


# MNIST *training* images of single digits in several pieces (a broken stroke, a detached flag or foot) that the
# number reader used to read as two digits or more: a 5, a 1, a 7, a 2 and a 3.
BROKEN_TRAINING_INDICES = {47: "5", 67: "1", 1157: "7", 2693: "2", 7293: "3"}


def test_a_digit_in_several_pieces_reads_exactly_as_before(classifier, mnist):
    for index, digit in BROKEN_TRAINING_INDICES.items():
        assert mnist.train_labels[index] == int(digit)
        picture = ink_picture(compose_number([mnist_glyph(mnist.train_images[index])], [], margin=30)[0])
        assert len(find_digits(picture).candidates) > 1  # Its pieces are still candidates: numbers are read as before.
        reading = read(classifier, picture)
        view = prepare_image(picture)
        assert len(reading) == 1 and np.array_equal(reading.views[0], view), index
        (before,) = classifier.classify(view[np.newaxis])
        assert reading.number == digit and reading.to_dict() == {**before.to_dict(), "number": digit,
                                                                 "digits": reading.digits()}


def test_a_letter_among_digits_is_not_a_number(classifier):
    font = find_fonts()[0]
    glyphs = [mask_glyph(render_glyph(font, character, 80)) for character in "4#7"]
    picture = ink_picture(compose_number(glyphs, [16, 16], margin=40)[0])
    reading = read(classifier, picture)
    assert len(reading) == 3 and reading.verdict == NOT_A_NUMBER
    assert reading.line().startswith("does not look like a number; best guess ")


def test_more_than_twelve_digits_is_one_sentence_and_a_blank_picture_no_digit():
    with pytest.raises(TooManyDigits, match=f"more than {MAX_DIGITS} digits; .* crop the picture"):
        find_digits(typed("1234567890123", height=40))
    with pytest.raises(NoDigitError):
        find_digits(Image.new("L", (200, 80), 255))


@pytest.fixture(scope="module")
def number_png(tmp_path_factory, mnist):
    path = tmp_path_factory.mktemp("numbers") / "year.png"
    handwritten("2026", mnist)[0].save(path)
    return path


def test_predict_the_api_and_the_server_give_the_same_number(classifier, number_png):
    (result,) = digits.predict(number_png, model=classifier)
    assert result.number == "2026"
    entry = result.to_dict()
    assert entry["number"] == "2026" and entry["verdict"] == NUMBER and entry["digit"] is None
    assert [digit["digit"] for digit in entry["digits"]] == [2, 0, 2, 6]
    assert all(list(digit) == ["digit", "probability", "digit_score", "box"] for digit in entry["digits"])
    with TestClient(create_app(classifier)) as client:
        answer = client.post("/predict", files={"file": ("year.png", number_png.read_bytes(), "image/png")}).json()
    assert {key: answer[key] for key in entry if key != "path"} == {key: entry[key] for key in entry if key != "path"}
    assert answer["view"] is None and np.array(answer["views"]).shape == (4, 28, 28)


def test_a_number_read_in_a_notebook_shows_the_number_and_each_digits_view(classifier, number_png):
    from digits.reporting.display import file_result_card

    (result,) = digits.predict(number_png, model=classifier, keep_originals=True)
    card = file_result_card(result)  # what Jupyter shows for a FileResult
    assert "<b>2026</b>" in card and "each digit, left to right: 2 (" in card and "top 3" not in card
    assert card.count("data:image/png;base64,") == 1 + 4  # the picture, then the four views the model read


def test_the_server_refuses_too_many_digits_in_one_sentence(classifier):
    with TestClient(create_app(classifier)) as client:
        import io

        buffer = io.BytesIO()
        typed("1234567890123", height=40).save(buffer, "PNG")
        response = client.post("/predict", content=buffer.getvalue(), headers={"content-type": "image/png"})
    assert response.status_code == 400
    assert response.json()["detail"].endswith(f"holds more than {MAX_DIGITS} digits; digits reads a number of at "
                                              f"most {MAX_DIGITS} digits, so crop the picture to one.")


@pytest.mark.slow
def test_the_command_prints_the_number_its_json_and_draws_the_boxes(number_png, tmp_path):
    lines = run_digits("predict", number_png, "--show", tmp_path / "shown", timeout=120)
    assert lines.returncode == 0, lines.stderr
    document = json.loads(run_digits("predict", number_png, "--json", timeout=120).stdout)
    (entry,) = document["results"]
    assert entry["number"] == "2026" and len(entry["digits"]) == 4
    # The line ends with the number's digit score: its least digit-like digit's, as --json gives each digit's.
    least = min(digit["digit_score"] for digit in entry["digits"])
    assert lines.stdout.startswith(f"{number_png}: 2026 (") and lines.stdout.endswith(f"%)  digit score {least:.2f}\n")
    (sheet,) = (tmp_path / "shown").iterdir()
    pixels = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 500  # Four boxes drawn in red over the grey picture.
