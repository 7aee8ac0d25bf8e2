"""Fit and measure the "not a digit" verdict of a model: its detector (`digits.inference.not_a_digit`) and thresholds.

Every picture is drawn offline by `digits.data.synthetic` and read through `digits.pictures.prepare.prepare_image`,
exactly as `digits predict` reads a file, in three parts drawn separately:

  training    the first 20,000 MNIST training images; fonts with an even index; seeds 2, 3 and 4
  choice      the last 10,000 MNIST training images (the holdout); the same fonts; seed 0
  evaluation  the 10,000 MNIST test images; the fonts with an odd index, never seen; seed 1

The detector trains on the first part; each threshold is the highest value that rejects at most 0.5 % of the
choice part's MNIST digits (0.2 % for a model that trained on them: it is surer of digits it has seen) and at
most 2 % of its font and stroke digits (margins under the goals); every figure is measured on the third part.
The test set chooses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digits.data.mnist import Mnist, to_model_input
from digits.errors import DigitsError
from digits.inference.not_a_digit import DETECTOR_FILE, DigitDetector, feature_model, fit_detector
from digits.inference.runtime import with_temperature
from digits.pictures.decode import ImageError
from digits.pictures.prepare import prepare_image

# Goals of issue 17: at most 1 % of MNIST test digits and 3 % of font/stroke digits rejected, 90 % of non-digits caught.
GOALS = {"mnist_rejected": 0.01, "font_rejected": 0.03, "caught": 0.90}
CHOICE_LIMITS = {"mnist": 0.005, "font": 0.02}
# A model that trained on the choice part's MNIST images is surer of them than of digits it never saw, so their
# quantile must be taken deeper for the same rate on new digits.
CHOICE_LIMIT_SEEN_MNIST = 0.002
DIGIT_KINDS = ("mnist", "font")
NON_DIGIT_KINDS = ("letters and symbols", "scribbles", "shapes", "noise")
TRAINING_SEEDS = (2, 3, 4)
TRAINING_MNIST = 20_000


@dataclass
class NotADigitFit:
    """A fitted detector, the settings that go into calibration.json, and the figures measured for each score."""

    detector: DigitDetector
    settings: dict  # calibration.json's "not_a_digit"
    figures: dict[str, dict]  # "digit score" and "maximum probability" → `measure`'s figures
    held_out: dict[str, dict] = field(default_factory=dict)  # kind → figures of a detector that never saw it

    def line(self) -> str:
        shipped = self.figures["digit score"]
        return (f"Not a digit: the detector calls {shipped['caught_all']:.1%} of generated non-digits no digit and "
                f"rejects {shipped['mnist_rejected']:.2%} of the MNIST test digits and {shipped['font_rejected']:.2%} "
                f"of font and stroke digits (ROC AUC {shipped['auc']:.3f}); the maximum probability alone catches "
                f"{self.figures['maximum probability']['caught_all']:.1%}.")


def prepared(pictures) -> np.ndarray:
    """The 28×28 views of the pictures that hold ink (a picture with none is refused before any model)."""
    views = []
    for picture in pictures:
        try:
            views.append(prepare_image(picture))
        except ImageError:
            continue
    return np.stack(views) if views else np.zeros((0, 28, 28), np.uint8)


def generated_views(fonts: list[Path], seed: int, scale: int = 1) -> dict[str, np.ndarray]:
    """Font and stroke digits ("font") and the four kinds of non-digit, prepared."""
    from digits.data.synthetic import font_digit_pictures, non_digit_sets

    views = {"font": prepared(font_digit_pictures(fonts, seed))}
    views.update({kind: prepared(pictures) for kind, pictures in non_digit_sets(fonts, seed, scale).items()})
    return views


def roc_auc(digit_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """The chance that a random digit scores above a random non-digit (ties count half)."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.ones(len(digit_scores)), np.zeros(len(other_scores))]
    return float(roc_auc_score(labels, np.r_[digit_scores, other_scores]))


def measure(scores: dict[str, np.ndarray], choice: dict[str, np.ndarray], mnist_limit: float) -> dict:
    """The threshold chosen on the choice part's scores and the figures on the evaluation part's, for one score."""
    threshold = float(min(np.quantile(choice["mnist"], mnist_limit),
                          np.quantile(choice["font"], CHOICE_LIMITS["font"])))
    others = np.concatenate([scores[kind] for kind in scores if kind not in DIGIT_KINDS])
    return {
        "threshold": threshold,
        "auc": roc_auc(np.r_[scores["mnist"], scores["font"]], others),
        "mnist_rejected": float(np.mean(scores["mnist"] < threshold)),
        "font_rejected": float(np.mean(scores["font"] < threshold)),
        "caught": {kind: float(np.mean(scores[kind] < threshold)) for kind in scores if kind not in DIGIT_KINDS},
        "caught_all": float(np.mean(others < threshold)),
        "counts": {kind: len(values) for kind, values in scores.items()},
    }


def goals_met(figures: dict) -> bool:
    return (figures["mnist_rejected"] <= GOALS["mnist_rejected"] and figures["font_rejected"] <= GOALS["font_rejected"]
            and figures["caught_all"] >= GOALS["caught"])


def fit_not_a_digit(model, data: Mnist, *, temperature: float = 1.0, seen_holdout: bool = False,
                    held_out_kinds: bool = False, fonts: list[Path] | None = None) -> NotADigitFit:
    """Fit the Keras `model`'s detector, choose both thresholds and measure them (see the module's docstring).

    temperature: the model's, so that the maximum-probability threshold applies to its calibrated probabilities.
    seen_holdout: the model trained on the last 10,000 training images (choose the deeper MNIST quantile).
    held_out_kinds: also fit a detector without each kind of non-digit, and measure that kind.
    """
    from digits.data.synthetic import find_fonts

    fonts = find_fonts() if fonts is None else fonts
    if len(fonts) < 2:
        raise DigitsError("Fitting the not-a-digit detector needs two TrueType fonts or more to draw letters and "
                          "digits; install some (on Debian: apt-get install fonts-dejavu-core fonts-liberation).")
    extractor = feature_model(model)

    def features_and_probabilities(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(images) == 0:
            return np.zeros((0, extractor.outputs[1].shape[-1]), np.float32), np.zeros((0, 10), np.float32)
        model_probabilities, features = extractor.predict(to_model_input(images), batch_size=1000, verbose=0)
        return np.asarray(features), with_temperature(np.asarray(model_probabilities), temperature)

    def part(images_by_kind: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {kind: features_and_probabilities(images) for kind, images in images_by_kind.items()}

    training = [part({"mnist": data.train_images[:TRAINING_MNIST] if seed == TRAINING_SEEDS[0]
                      else data.train_images[:0], **generated_views(fonts[0::2], seed, scale=3)})
                for seed in TRAINING_SEEDS]
    choice = part({"mnist": data.train_images[-10_000:], **generated_views(fonts[0::2], 0)})
    evaluation = part({"mnist": data.test_images, **generated_views(fonts[1::2], 1)})

    def train(without: str | None = None) -> DigitDetector:
        digit_features = np.concatenate([part_[kind][0] for part_ in training for kind in DIGIT_KINDS])
        other_features = np.concatenate([part_[kind][0] for part_ in training for kind in NON_DIGIT_KINDS
                                         if kind != without])
        return fit_detector(digit_features, other_features)

    def figures_of(score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> dict:
        scored = [{kind: score(*values) for kind, values in part_.items()} for part_ in (evaluation, choice)]
        return measure(scored[0], scored[1], CHOICE_LIMIT_SEEN_MNIST if seen_holdout else CHOICE_LIMITS["mnist"])

    detector = train()
    figures = {"digit score": figures_of(lambda features, _: detector.scores(features)),
               "maximum probability": figures_of(lambda _, part_probabilities: part_probabilities.max(axis=1))}
    held_out = {}
    if held_out_kinds:
        for kind in NON_DIGIT_KINDS:
            held_out_detector = train(without=kind)

            def held_out_scores(features: np.ndarray, _: np.ndarray, held_out_detector=held_out_detector) -> np.ndarray:
                return held_out_detector.scores(features)

            held_out[kind] = figures_of(held_out_scores)
    settings = {"score": "digit_score", "threshold": round(figures["digit score"]["threshold"], 8),
                "detector": DETECTOR_FILE,
                "max_probability_threshold": round(figures["maximum probability"]["threshold"], 6),
                "measured": {name: {key: round(value, 6) for key, value in result.items()
                                    if key in ("auc", "mnist_rejected", "font_rejected", "caught_all")}
                             for name, result in figures.items()}}
    return NotADigitFit(detector=detector, settings=settings, figures=figures, held_out=held_out)
