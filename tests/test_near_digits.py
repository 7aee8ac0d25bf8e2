"""The two research kinds of non-digit drawn near the digits (`digits.data.near_digits`): pen glyphs and digit pieces
draw what their docstrings say, and the comparison of training kinds measures each kind held out."""

from __future__ import annotations

import random

import numpy as np
import pytest

from digits.data.mnist import load_mnist
from digits.data.near_digits import (
    BOTTOM_LOOKS,
    DIGIT_LOOKS,
    MIRRORED_NON_DIGITS,
    TOP_LOOKS,
    digit_piece_pictures,
    near_digit_sets,
    pen_glyph,
    pen_glyph_pictures,
)
from digits.data.synthetic import stroke_picture
from digits.inference.classifier import load_classifier
from digits.inference.not_a_digit_fit import Parts, Read, prepared
from digits.inference.not_a_digit_methods import compare_training_kinds, trained_on


def test_the_near_digit_kinds_are_the_same_for_a_seed_and_new_for_another():
    data = load_mnist()
    images, labels = data.train_images[:300], data.train_labels[:300]
    first, again = (near_digit_sets(images, labels, seed=7) for _ in range(2))
    other = near_digit_sets(images, labels, seed=8)
    assert list(first) == ["pen glyphs", "digit pieces"]
    for kind, pictures in first.items():
        assert len(pictures) == 300, kind
        assert [p.tobytes() for p in pictures[:20]] == [p.tobytes() for p in again[kind][:20]], kind
        assert [p.tobytes() for p in pictures[:20]] != [p.tobytes() for p in other[kind][:20]], kind
        assert len(prepared(pictures)) >= 297, kind  # Every picture holds ink (an erased or cut piece seldom none).


def test_a_pen_glyph_is_one_to_three_strokes_filling_the_box_and_never_a_lone_line():
    rng = np.random.default_rng(0)
    for _ in range(300):
        strokes = [np.array(stroke) for stroke in pen_glyph(rng)]
        points = np.concatenate(strokes)
        assert 1 <= len(strokes) <= 3
        assert points.min() >= 0.0 and points.max() <= 1.0
        assert np.isclose((points.max(axis=0) - points.min(axis=0)).max(), 0.9)  # its longer side fills the box
        if len(strokes) == 1:  # A lone stroke is curved (a straight one reads as a 1) and open (a closed one, a 0).
            (stroke,) = strokes
            chord = stroke[-1] - stroke[0]
            offsets = stroke - stroke[0]
            across = np.abs(chord[0] * offsets[:, 1] - chord[1] * offsets[:, 0]) / max(np.hypot(*chord), 1e-9)
            assert across.max() > 0.15
            assert np.hypot(*chord) > 0.1


def test_pieces_are_cut_only_into_what_no_digit_looks_like():
    for top in TOP_LOOKS:
        for bottom in BOTTOM_LOOKS:
            if (TOP_LOOKS[top], BOTTOM_LOOKS[bottom]) not in DIGIT_LOOKS:
                assert top != bottom
    assert 1 not in TOP_LOOKS and 1 not in BOTTOM_LOOKS
    assert not {0, 1, 8} & set(MIRRORED_NON_DIGITS)  # mirrored, these are still themselves


@pytest.fixture(scope="module")
def shipped():
    return load_classifier()


def test_the_classifier_is_less_sure_of_pen_glyphs_than_of_digits_from_the_same_pen(shipped):
    rng = random.Random(0)
    digits = prepared([stroke_picture(str(index % 10), rng)[0] for index in range(100)])
    glyphs = prepared(pen_glyph_pictures(100, seed=0))
    assert len(glyphs) == 100
    assert np.median(shipped.classify(glyphs).probabilities.max(axis=1)) < np.median(
        shipped.classify(digits).probabilities.max(axis=1))


def test_a_digit_piece_is_no_longer_the_digit_it_came_from(shipped):
    data = load_mnist()
    images, labels = data.test_images[:500], data.test_labels[:500]
    pieces = prepared(digit_piece_pictures(images, labels, 200, seed=0))
    assert len(pieces) >= 198
    sure_of_digits = np.median(shipped.classify(images).probabilities.max(axis=1))
    assert np.median(shipped.classify(pieces).probabilities.max(axis=1)) < sure_of_digits


def _fake_parts(rng: np.random.Generator) -> Parts:
    """Parts of random features: digits near ten centres, each kind of non-digit shifted its own way."""
    centres = rng.normal(0, 3, (10, 6))
    kinds = ["letters and symbols", "scribbles", "shapes", "noise", "distorted digits", "textures", "scene crops",
             "pen glyphs", "digit pieces"]

    def read(count: int, shift: np.ndarray | float, labels: np.ndarray | None = None) -> Read:
        labels = rng.integers(0, 10, count) if labels is None else labels
        features = np.abs(centres[labels] + rng.normal(0, 1, (count, 6)) + shift)
        logits = features @ kernel
        return Read(features, logits, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True),
                    np.abs(rng.normal(1, 0.5, (count, 4))) + np.mean(shift))

    kernel = rng.normal(0, 1, (6, 10))
    labels = rng.integers(0, 10, 600)

    def part(with_labels: np.ndarray | None = None) -> dict[str, Read]:
        kind_reads = {kind: read(120, rng.normal(0, 2, 6)) for kind in kinds}
        return {"mnist": read(600, 0.0, with_labels), "font": read(100, 0.0), **kind_reads}

    return Parts(training=part(labels), training_labels=labels, choice=part(), evaluation=part(),
                 last_layer=(kernel, np.zeros(10)), mnist_limit=0.005)


def test_the_training_kinds_comparison_measures_each_kind_by_a_fit_that_never_saw_it():
    parts = _fake_parts(np.random.default_rng(0))
    shipped_only = trained_on(parts, ("scribbles",))
    assert set(shipped_only.training) == {"mnist", "font", "scribbles"}
    assert shipped_only.evaluation is parts.evaluation
    table, fitted = compare_training_kinds(parts, {"seven": (), "+ pieces": ("digit pieces",)})
    assert set(table) == set(fitted) == {"seven", "+ pieces"}
    # A kind the variant never trains against is measured by its fit on everything; one it trains against, not.
    assert table["seven"]["digit pieces"] is fitted["seven"][1]
    assert table["+ pieces"]["digit pieces"] is not fitted["+ pieces"][1]
    assert table["+ pieces"]["scribbles"] is not fitted["+ pieces"][1]
