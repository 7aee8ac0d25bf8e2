"""How "not a digit" is decided: the class density, the energy, the generated non-digits and the leave-one-kind-out
comparison that chose the shipped method (benchmarks/not_a_digit.py --compare measures it in full)."""

from __future__ import annotations

import numpy as np
import pytest

from digits.data.mnist import load_mnist, to_model_input
from digits.data.synthetic import (
    find_fonts,
    font_digit_pictures,
    letter_pictures,
    scribble_pictures,
    shape_pictures,
)
from digits.data.varied_non_digits import distorted_digit_pictures, texture_pictures, varied_non_digit_sets
from digits.errors import DigitsError
from digits.inference.classifier import load_classifier
from digits.inference.not_a_digit import (
    DETECTOR_FILE,
    SHRINKAGE,
    energy,
    fit_class_gaussian,
    fit_detector,
    fit_layer_distances,
)
from digits.inference.not_a_digit_file import load_detector
from digits.inference.not_a_digit_fit import Parts, Read, fit_layer_distance_detector, pooled_feature_model, prepared
from digits.inference.not_a_digit_fit import read_views as read_model_views
from digits.inference.not_a_digit_graph import feature_model, with_digit_score
from digits.inference.not_a_digit_methods import METHODS
from digits.inference.runtime import read


def test_the_class_density_gives_the_mahalanobis_distance_to_the_nearest_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    centres = rng.normal(0, 5, (3, 6))
    features = centres[labels] + rng.normal(0, 1, (3000, 6)) * [1, 2, 3, 0.5, 1, 1]
    gaussian = fit_class_gaussian(features, labels)
    means = np.stack([features[labels == label].mean(axis=0) for label in range(3)])
    centred = features - means[labels]
    covariance = centred.T @ centred / len(features)
    precision = np.linalg.inv(covariance + SHRINKAGE * np.trace(covariance) / 6 * np.eye(6))
    points = rng.normal(0, 6, (50, 6))
    expected = np.sqrt(np.min([np.einsum("ij,jk,ik->i", points - mean, precision, points - mean) for mean in means],
                              axis=0))
    to_each_class = np.sqrt(np.stack([np.einsum("ij,jk,ik->i", points - mean, precision, points - mean)
                                      for mean in means], axis=1))  # (50, 3)
    np.testing.assert_allclose(gaussian.class_distances(points), to_each_class, rtol=1e-6)
    np.testing.assert_allclose(gaussian.distances(points), expected, rtol=1e-6)
    assert gaussian.distances(means).max() < 1e-6  # A class's own mean is at distance 0.


def test_the_grid_cells_are_the_same_in_numpy_and_in_the_exported_graph():
    """Each channel's mean in each cell of the 3 × 3 grid: `grid_means` (what the detector trains on) and
    `keras_grid_means` (what `with_digit_score` exports) agree, and the cells cover the whole map, corners
    included."""
    import keras

    from digits.inference.not_a_digit import grid_means
    from digits.inference.not_a_digit_graph import keras_grid_means

    rng = np.random.default_rng(0)
    for side, channels in ((14, 32), (7, 64)):
        maps = rng.random((5, side, side, channels)).astype(np.float32)
        maps[0] = 0.0
        maps[0, -1, -1, :] = 1.0  # Ink in the bottom-right pixel only: in the last cell alone.
        numpy_cells = grid_means(maps)  # (5, 9 C)
        inputs = keras.Input((side, side, channels))
        keras_cells = np.asarray(keras.Model(inputs, keras_grid_means(inputs)).predict(maps, verbose=0))
        np.testing.assert_allclose(keras_cells, numpy_cells, atol=1e-6)
        assert numpy_cells.shape == (5, 9 * channels)
        assert np.all(numpy_cells[0, :8 * channels] == 0) and np.all(numpy_cells[0, 8 * channels:] > 0)


def test_a_channel_that_barely_varies_cannot_swing_the_layer_distance_score():
    """The rounding by which two runtimes' convolutions differ (about 4e-07 in a channel mean) must not move the
    digit score by anything near the export check's 1e-04, however little a channel varies among the pictures."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)
    centres = rng.normal(0, 2, (10, 8))
    is_digit = np.arange(4000) < 2000
    features = centres[labels] + rng.normal(0, 1, (4000, 8)) + np.where(is_digit, 0, 1.5)[:, np.newaxis]
    pooled = np.abs(rng.normal(1, 0.5, (4000, 4)))
    # A nearly dead channel whose rare activity still tells the two apart.
    pooled[:, 3] = np.where(is_digit, 0.0, 1e-4) * (rng.random(4000) < 0.3)
    gaussian = fit_class_gaussian(features[is_digit], labels[is_digit])
    pooled_gaussian = fit_class_gaussian(pooled[is_digit], labels[is_digit])
    detector = fit_layer_distances((features[is_digit], pooled[is_digit]), (features[~is_digit], pooled[~is_digit]),
                                   gaussian=gaussian, pooled_gaussian=pooled_gaussian,
                                   last_layer=(rng.normal(0, 1, (8, 10)), np.zeros(10)))
    scores = detector.scores(features, pooled).astype(np.float64)
    assert np.mean(scores[is_digit] > 0.5) > 0.9 and np.mean(scores[~is_digit] < 0.5) > 0.9
    rounded = pooled + rng.choice([-4e-7, 4e-7], pooled.shape)
    assert np.abs(detector.scores(features, rounded) - scores).max() < 1e-5


def test_energy_is_the_log_sum_exp_of_the_logits_even_for_huge_ones():
    logits = np.array([[0.0, 0.0], [1000.0, 1000.0], [-5.0, 3.0]])
    np.testing.assert_allclose(energy(logits), [np.log(2), 1000 + np.log(2), np.log(np.exp(-5) + np.exp(3))])


def test_the_new_kinds_of_non_digit_are_the_same_for_a_seed_and_new_for_another():
    data = load_mnist()
    images, labels = data.train_images[:300], data.train_labels[:300]
    fonts = find_fonts()[:2]
    first, again = (varied_non_digit_sets(fonts, images, labels, seed=7) for _ in range(2))
    other = varied_non_digit_sets(fonts, images, labels, seed=8)
    for kind, pictures in first.items():
        assert len(pictures) == 300, kind
        assert [p.tobytes() for p in pictures[:20]] == [p.tobytes() for p in again[kind][:20]], kind
        assert [p.tobytes() for p in pictures[:20]] != [p.tobytes() for p in other[kind][:20]], kind


def test_a_distorted_digit_is_no_longer_the_digit_it_was():
    """The classifier reads the digits a distortion starts from, and mostly not what the distortions make of them."""
    classifier = load_classifier()
    data = load_mnist()
    images, labels = data.test_images[:500], data.test_labels[:500]
    pictures = distorted_digit_pictures(images, labels, 200, seed=0)
    assert np.mean(classifier.classify(images).digits == labels) > 0.98
    # Rotated, cut or overlaid, a digit mostly stops being read as itself (a blurred blob or noise may still be).
    confident = classifier.classify(prepared(pictures)).probabilities.max(axis=1)
    assert np.median(confident) < np.median(classifier.classify(images).probabilities.max(axis=1))


@pytest.fixture(scope="module")
def shipped_keras():
    return load_classifier(None, prefer_onnx=False)


@pytest.mark.slow
def test_the_combination_fitted_on_small_data_catches_an_unseen_kind_better_than_the_maximum_probability(
        shipped_keras):
    """The chosen method, fitted on a few thousand pictures without letters, still catches letters; the classifier's
    own maximum probability, at the same cost in rejected digits, catches far fewer. The joined Keras model (what
    `digits export` writes to ONNX) gives the same scores as NumPy."""
    model = shipped_keras.model
    data = load_mnist()
    extractor = feature_model(model)
    kernel, bias = model.layers[-1].get_weights()

    def read_views(views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, features = extractor.predict(to_model_input(views), batch_size=1000, verbose=0)
        return np.asarray(features), np.asarray(probabilities)

    training_digits, training_labels = data.train_images[:3000], data.train_labels[:3000]
    digit_features, _ = read_views(training_digits)
    others = prepared(scribble_pictures(300, 2) + shape_pictures(200, 2) + texture_pictures(200, 2)
                      + distorted_digit_pictures(training_digits, training_labels, 200, 2))
    other_features, _ = read_views(others)
    detector = fit_detector(digit_features, other_features,
                            gaussian=fit_class_gaussian(digit_features, training_labels), last_layer=(kernel, bias))
    # The threshold rejects 1 % of digits the model never trained on (the shipped one trained on all training images).
    choice_features, choice_probabilities = read_views(data.test_images[:2000])
    letter_features, letter_probabilities = read_views(prepared(letter_pictures(find_fonts()[:4], 1)))

    def caught(digit_scores: np.ndarray, letter_scores: np.ndarray) -> float:
        return float(np.mean(letter_scores < np.quantile(digit_scores, 0.01)))  # 1 % of digits rejected

    by_detector = caught(detector.scores(choice_features), detector.scores(letter_features))
    by_probability = caught(choice_probabilities.max(axis=1), letter_probabilities.max(axis=1))
    assert by_detector >= 0.6 and by_detector >= by_probability + 0.2, (by_detector, by_probability)
    images = data.test_images[:100]
    _, joined_scores = read(with_digit_score(model, detector), images)
    np.testing.assert_allclose(joined_scores, detector.scores(read_views(images)[0]), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["layer distances", "layer distances + binary CNN"])
def test_the_layer_distances_fitted_without_letters_catch_letters_better_than_the_maximum_probability(
        shipped_keras, method, tmp_path):
    """The logistic regression over each class's distance in the features and in the earlier layers' pooled maps
    (and, for the second method, a small CNN's logit, the CNN trained on the pixels), fitted on a few thousand
    pictures without letters, catches letters; the maximum probability, at the same cost in rejected digits, far
    fewer."""
    model = shipped_keras.model
    data = load_mnist()
    extractor = pooled_feature_model(model)
    kernel, bias = (np.asarray(weights, np.float64) for weights in model.layers[-1].get_weights())

    def read_views(views: np.ndarray) -> Read:
        return read_model_views(model, views, extractor=extractor)

    fonts = find_fonts()[:4]
    training_digits, training_labels = data.train_images[:3000], data.train_labels[:3000]
    training = {"mnist": read_views(training_digits),
                "font": read_views(prepared(font_digit_pictures(fonts, 2))),
                "scribbles": read_views(prepared(scribble_pictures(300, 2))),
                "shapes": read_views(prepared(shape_pictures(200, 2))),
                "textures": read_views(prepared(texture_pictures(200, 2))),
                "distorted digits": read_views(prepared(distorted_digit_pictures(training_digits, training_labels,
                                                                                 200, 2)))}
    assert training["mnist"].pooled.shape == (3000, 32 + 64 + 128)  # relu1, relu2 and relu3, one mean a channel
    assert training["mnist"].grids.shape == (3000, 9 * (32 + 64))  # relu1 and relu2, a mean a channel in 9 cells
    parts = Parts(training=training, training_labels=training_labels, choice={}, evaluation={},
                  last_layer=(kernel, bias), mnist_limit=0.01, grid_sizes=(9 * 32, 9 * 64))
    score = METHODS[method][0](parts, None)
    digits_read, letters_read = read_views(data.test_images[:2000]), read_views(prepared(letter_pictures(fonts, 1)))
    if method == "layer distances":
        # The shipped method's detector scores the same in NumPy, saved and loaded, and joined to Keras (what
        # `digits export` writes to ONNX).
        detector = fit_layer_distance_detector(parts, subsample=True)
        assert detector.has_layer_distances and detector.pooled_count == 224 and detector.grid_count == 864
        np.testing.assert_allclose(detector.score(digits_read), score(digits_read), atol=1e-6)
        detector.save(tmp_path / DETECTOR_FILE)
        loaded = load_detector(tmp_path / DETECTOR_FILE)
        images = np.r_[data.test_images[:100], prepared(scribble_pictures(50, 5))]
        _, joined_scores = read(with_digit_score(model, loaded), images)
        np.testing.assert_allclose(joined_scores, loaded.score(read_views(images)), atol=1e-4)
        with np.load(tmp_path / DETECTOR_FILE) as saved:
            arrays = dict(saved)
        for name, damaged in (("pooled_whitened_means", arrays["pooled_whitened_means"][:, :100]),
                              ("grid_sizes", arrays["grid_sizes"] + [1, -1.5])):
            np.savez(tmp_path / DETECTOR_FILE, **{**arrays, name: damaged})
            with pytest.raises(DigitsError, match="holds arrays of the wrong shapes"):
                load_detector(tmp_path / DETECTOR_FILE)
        # A layer-distances detector saved before the grids (no grid arrays, no weights for their 20 distances, which
        # follow the features' and the channel means' 10 each) still loads, and Keras scores it as NumPy does.
        earlier_arrays = {name: array for name, array in arrays.items() if not name.startswith("grid_")}
        earlier_arrays["hidden_weights"] = np.delete(arrays["hidden_weights"], np.s_[20:40], axis=0)
        np.savez(tmp_path / DETECTOR_FILE, **earlier_arrays)
        earlier = load_detector(tmp_path / DETECTOR_FILE)
        assert earlier.has_layer_distances and not earlier.has_grids
        _, earlier_scores = read(with_digit_score(model, earlier), images)
        np.testing.assert_allclose(earlier_scores, earlier.score(read_views(images)), atol=1e-4)

    def caught(digit_scores: np.ndarray, letter_scores: np.ndarray) -> float:
        return float(np.mean(letter_scores < np.quantile(digit_scores, 0.01)))  # 1 % of digits rejected

    by_distances = caught(score(digits_read), score(letters_read))
    by_probability = caught(digits_read.probabilities.max(axis=1), letters_read.probabilities.max(axis=1))
    assert by_distances >= 0.6 and by_distances >= by_probability + 0.2, (by_distances, by_probability)


def test_a_detector_saved_before_the_class_density_still_loads_and_scores(tmp_path):
    rng = np.random.default_rng(0)
    old_style = {"hidden_weights": rng.normal(size=(12, 4)), "hidden_bias": rng.normal(size=4),
                 "output_weights": rng.normal(size=(4, 1)), "output_bias": rng.normal(size=1)}
    np.savez(tmp_path / DETECTOR_FILE, **old_style)
    detector = load_detector(tmp_path / DETECTOR_FILE)
    assert not detector.has_density and detector.feature_count == 12
    features = rng.normal(size=(5, 12))
    hidden = np.maximum(features @ old_style["hidden_weights"] + old_style["hidden_bias"], 0)
    expected = 1 / (1 + np.exp(-(hidden @ old_style["output_weights"] + old_style["output_bias"])[:, 0]))
    np.testing.assert_allclose(detector.scores(features), expected, rtol=1e-5)


def test_a_detector_whose_density_does_not_fit_its_network_is_one_sentence(tmp_path):
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(200, 6)), rng.integers(0, 10, 200)
    detector = fit_detector(features[:100], features[100:] + 3, gaussian=fit_class_gaussian(features, labels),
                            last_layer=(rng.normal(size=(6, 10)), np.zeros(10)), hidden_units=4)
    detector.save(tmp_path / DETECTOR_FILE)
    assert load_detector(tmp_path / DETECTOR_FILE).has_density
    with np.load(tmp_path / DETECTOR_FILE) as saved:
        arrays = dict(saved)
    arrays["whitening"] = arrays["whitening"][:5]
    np.savez(tmp_path / DETECTOR_FILE, **arrays)
    with pytest.raises(DigitsError, match="holds arrays of the wrong shapes"):
        load_detector(tmp_path / DETECTOR_FILE)
