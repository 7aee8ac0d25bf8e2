"""Which way of telling a digit from a non-digit holds on kinds of non-digit it never saw? Eight methods compared.

Each method gives a score, higher for what looks more like a digit, and is measured by leaving one kind out: for
each kind of generated non-digit, a method that trains on non-digits is trained again without that kind, its
threshold chosen again on the choice part, and only that kind's caught share is kept. The methods:

  maximum probability  the classifier's largest probability (Hendrycks & Gimpel's baseline); trains on nothing
  energy               log-sum-exp of the logits (Liu et al. 2020); trains on nothing
  Mahalanobis          minus the distance to the nearest class under a class-conditional Gaussian with a shared
                       covariance over the features (Lee et al. 2018), fitted on MNIST training digits only
  today's detector     a small network over the features, trained against the four original kinds (issue 17)
  varied detector      the same network trained against all seven kinds, distorted digits, textures and scene
                       crops included
  combination          the varied detector reading the distance to the nearest class and the energy too
  layer distances      a logistic regression over the Mahalanobis distances to the ten classes under a class
                       density of the features and under one of the earlier layers' pooled maps (each channel's
                       mean; Lee et al.'s feature ensemble) and under one per earlier map over its channels' means
                       in each cell of a 3 × 3 grid (all fitted on the training part's MNIST and font digits), each
                       sorted, the ten log-probabilities, sorted, and the pooled maps themselves:
                       how far the picture lies from every digit, not which digit it is nearest
  layer distances + binary CNN  the same regression reading one more number: the logit of a small CNN trained on
                       the pixels, the same digits against the same non-digits (`digits.inference.
                       not_a_digit_trained`): features trained to tell digits from non-digits, not only digits apart

Every detector here reads the same share of the training part (`detector_features(subsample=True)`: 4,000 MNIST
digits, 1,000 of each other kind), so that the fits take minutes, not an hour. The parts
(`digits.inference.not_a_digit_fit.draw_parts`) are shared with `fit_not_a_digit`, which fits the chosen one on all
of the training part; benchmarks/not_a_digit.py --compare prints the table.

`compare_training_kinds` measures the other way round: the chosen method, on all of the training part, trained
against the seven kinds or against more (the research kinds near the digits, `digits.data.near_digits`), every
kind held out in turn (benchmarks/not_a_digit.py --near-digit-kinds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from digits.inference.not_a_digit import energy, fit_class_gaussian, fit_detector
from digits.inference.not_a_digit_fit import (
    COMPARISON_MNIST,
    COMPARISON_PER_KIND,
    DIGIT_KINDS,
    NEAR_DIGIT_KINDS,
    NON_DIGIT_KINDS,
    ORIGINAL_KINDS,
    Parts,
    Read,
    detector_features,
    evenly_spread,
    fit_combination,
    fit_layer_distance_detector,
)

Scorer = Callable[[Read], np.ndarray]


def _maximum_probability(parts: Parts, without: str | None) -> Scorer:
    return lambda read: read.probabilities.max(axis=1)


def _energy(parts: Parts, without: str | None) -> Scorer:
    return lambda read: energy(read.logits)


def _mahalanobis(parts: Parts, without: str | None) -> Scorer:
    gaussian = fit_class_gaussian(parts.training["mnist"].features, parts.training_labels)
    return lambda read: -gaussian.distances(read.features)


def _detector_against(kinds: tuple[str, ...]) -> Callable[[Parts, str | None], Scorer]:
    def fit(parts: Parts, without: str | None) -> Scorer:
        digit_features = detector_features(parts.training, DIGIT_KINDS, subsample=True)
        other_features = detector_features(parts.training, tuple(kind for kind in kinds if kind != without),
                                           subsample=True)
        detector = fit_detector(digit_features, other_features)
        return lambda read: detector.scores(read.features)

    return fit


def _combination(parts: Parts, without: str | None) -> Scorer:
    return fit_combination(parts, without=without, subsample=True).score


def _layer_distances(parts: Parts, without: str | None) -> Scorer:
    return fit_layer_distance_detector(parts, without=without, subsample=True).score


def _layer_distances_and_binary_cnn(parts: Parts, without: str | None) -> Scorer:
    """Layer distances' logistic regression reading one more number: the logit of a small CNN trained on the pixels,
    digits against the same non-digits (`digits.inference.not_a_digit_trained`). Research only: never exported, so
    its regression standardises every input by its own spread."""
    from sklearn.linear_model import LogisticRegression

    from digits.inference.not_a_digit_trained import fit_binary_cnn

    others = [kind for kind in parts.training if kind not in DIGIT_KINDS and kind != without]
    network = fit_binary_cnn(np.r_[evenly_spread(parts.training["mnist"].images, COMPARISON_MNIST),
                                   evenly_spread(parts.training["font"].images, COMPARISON_PER_KIND)],
                             np.concatenate([evenly_spread(parts.training[kind].images, COMPARISON_PER_KIND)
                                             for kind in others]))
    # The shipped method's densities and inputs (`DigitDetector.inputs`), with the CNN's logit beside them.
    layer_distances = fit_layer_distance_detector(parts, without=without, subsample=True)

    def inputs(read: Read) -> np.ndarray:
        return np.c_[layer_distances.inputs(read.features, read.pooled, read.grids), network(read.images)]

    digit_inputs = np.r_[evenly_spread(inputs(parts.training["mnist"]), COMPARISON_MNIST),
                         evenly_spread(inputs(parts.training["font"]), COMPARISON_PER_KIND)]
    other_inputs = np.concatenate([evenly_spread(inputs(parts.training[kind]), COMPARISON_PER_KIND)
                                   for kind in others])
    training_inputs = np.r_[digit_inputs, other_inputs]
    mean, scale = training_inputs.mean(axis=0), training_inputs.std(axis=0) + 1e-6
    regression = LogisticRegression(max_iter=2000)
    regression.fit((training_inputs - mean) / scale, np.r_[np.ones(len(digit_inputs)), np.zeros(len(other_inputs))])
    return lambda read: regression.decision_function((inputs(read) - mean) / scale)


# Method → (fit on the training part without a kind → score), and the kinds it trains against (none: it needs none).
METHODS: dict[str, tuple[Callable[[Parts, str | None], Scorer], tuple[str, ...]]] = {
    "maximum probability": (_maximum_probability, ()),
    "energy": (_energy, ()),
    "Mahalanobis": (_mahalanobis, ()),
    "today's detector": (_detector_against(ORIGINAL_KINDS), ORIGINAL_KINDS),
    "varied detector": (_detector_against(NON_DIGIT_KINDS), NON_DIGIT_KINDS),
    "combination": (_combination, NON_DIGIT_KINDS),
    "layer distances": (_layer_distances, NON_DIGIT_KINDS),
    "layer distances + binary CNN": (_layer_distances_and_binary_cnn, NON_DIGIT_KINDS),
}


def compare_methods(parts: Parts, methods: tuple[str, ...] = tuple(METHODS)
                    ) -> tuple[dict[str, dict[str, dict]], dict[str, tuple[Scorer, dict]]]:
    """method → held-out kind → `measure`'s figures of the method fitted without that kind (`caught[kind]` is the
    figure that counts; a kind the method never trains against is measured by its one fit on everything), and
    method → its fit on everything: the score and its figures (threshold included)."""
    table: dict[str, dict[str, dict]] = {}
    fitted: dict[str, tuple[Scorer, dict]] = {}
    for method in methods:
        fit, trained_kinds = METHODS[method]
        scorer = fit(parts, None)
        fitted[method] = (scorer, parts.measure(scorer))
        table[method] = {kind: parts.measure(fit(parts, kind)) if kind in trained_kinds else fitted[method][1]
                         for kind in NON_DIGIT_KINDS}
    return table, fitted


def worst_held_out(row: dict[str, dict]) -> float:
    """The lowest share caught over the held-out kinds: the figure the method is chosen by."""
    return min(figures["caught"][kind] for kind, figures in row.items())


# Which kinds the shipped method trains against, besides the seven: research of issue 23 (docs/inference.md).
TRAINING_KIND_VARIANTS: dict[str, tuple[str, ...]] = {
    "seven kinds (shipped)": (),
    "+ pen glyphs": ("pen glyphs",),
    "+ digit pieces": ("digit pieces",),
    "+ both": NEAR_DIGIT_KINDS,
}


def trained_on(parts: Parts, kinds: tuple[str, ...]) -> Parts:
    """The parts with a training part of the digits and `kinds` alone; the choice and evaluation parts keep all."""
    training = {kind: read for kind, read in parts.training.items() if kind in DIGIT_KINDS or kind in kinds}
    return dataclasses.replace(parts, training=training)


def compare_training_kinds(parts: Parts, variants: dict[str, tuple[str, ...]] = TRAINING_KIND_VARIANTS
                           ) -> tuple[dict[str, dict[str, dict]], dict[str, tuple[Scorer, dict]]]:
    """As `compare_methods`, for the shipped method (layer distances, on all of the training part) trained against
    the seven kinds and each variant's: variant → held-out kind → figures, and variant → its fit on everything.
    `parts` must hold the near-digit kinds (`draw_parts(near_digit_kinds=True)`); a kind a variant never trains
    against is measured by its fit on everything."""
    table: dict[str, dict[str, dict]] = {}
    fitted: dict[str, tuple[Scorer, dict]] = {}
    kinds = NON_DIGIT_KINDS + NEAR_DIGIT_KINDS
    for variant, added in variants.items():
        variant_parts = trained_on(parts, NON_DIGIT_KINDS + added)
        scorer = fit_layer_distance_detector(variant_parts).score
        fitted[variant] = (scorer, variant_parts.measure(scorer))
        table[variant] = {kind: variant_parts.measure(fit_layer_distance_detector(variant_parts, without=kind).score)
                          if kind in NON_DIGIT_KINDS + added else fitted[variant][1] for kind in kinds}
    return table, fitted
