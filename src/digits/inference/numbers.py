"""A whole number read in one picture: its digits, left to right, each a `Prediction`, and where each was.

`digits.pictures.segment.find_digits` finds every candidate digit in a picture (a `Layout`); `read_layout` classifies
them in one call of `Classifier.classify`, lets `choose_digits` take the cuts the classifier reads most confidently,
and gives a `NumberPrediction`. `digits predict`, `digits.predict` and the server all answer with its `to_dict`.

The number's probability is the product of its digits' (each read independently); its verdict is "not a number"
when any of its digits is not a digit. A picture of one digit gives the single digit's own verdict ("digit" or "not
a digit") and its usual fields (`digit`, `top`, `probabilities`), exactly as before numbers were read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digits.inference.prediction import JSON_DECIMALS, NOT_A_DIGIT, Prediction, Predictions
from digits.pictures.segment import Layout, choose_digits

# How much a candidate's digit score counts beside its best probability when cuts are chosen. The detector now
# learns that halves of digits and overlaid digits are not digits, so a touching digit's stretch, which holds a bit
# of its neighbour, scores lower than it did. Chosen on the holdout (touching numbers of MNIST training digits
# 50,000-59,999, `benchmarks/read_numbers.py --digits holdout`, seeds 0 and 1): weight 1 read 81.7 / 80.7 %
# exactly, 0.5 83.0 / 81.0 %, 0.25 83.3 / 81.0 %; numbers with gaps 96.3 / 98.0 % for all three.
DIGIT_SCORE_WEIGHT = 0.5

# The verdicts on a picture of several digits: every one looks like a digit, or one of them does not.
NUMBER, NOT_A_NUMBER = "number", "not a number"


@dataclass(frozen=True, eq=False)
class NumberPrediction:
    """The digits read in one picture, left to right: their `Predictions`, boxes and the views the model read."""

    predictions: Predictions  # N digits, left to right
    boxes: np.ndarray  # (N, 4) int: x, y, width, height in the picture's pixels
    views: np.ndarray  # (N, 28, 28) uint8: what the model read for each digit

    @property
    def number(self) -> str:
        """The digits as text, e.g. "2026" (leading zeros kept: "007")."""
        return "".join(str(digit) for digit in self.predictions.digits.tolist())

    @property
    def probability(self) -> float:
        """The probability that every digit is read right: the product of the digits' probabilities."""
        return float(math.prod(prediction.probability for prediction in self.predictions))

    @property
    def verdict(self) -> str:
        """One digit: its own verdict; several: NOT_A_NUMBER when any of them is not a digit, else NUMBER."""
        if len(self) == 1:
            return self[0].verdict
        return NOT_A_NUMBER if any(verdict == NOT_A_DIGIT for verdict in self.predictions.verdicts) else NUMBER

    @property
    def digit_score(self) -> float | None:
        """The lowest digit score among the digits (the least digit-like); None for a model without a detector."""
        scores = [prediction.digit_score for prediction in self.predictions]
        return None if any(score is None for score in scores) else min(scores)  # type: ignore[type-var]

    def __len__(self) -> int:
        return len(self.predictions)

    def __getitem__(self, index: int) -> Prediction:
        return self.predictions[index]

    def digits(self) -> list[dict]:
        """Each digit's JSON fields, left to right: digit, probability, digit_score (null without a detector), box."""
        return [
            {"digit": prediction.digit, "probability": round(prediction.probability, JSON_DECIMALS),
             "digit_score": None if prediction.digit_score is None else round(prediction.digit_score, JSON_DECIMALS),
             "box": [int(value) for value in box]}
            for prediction, box in zip(self.predictions, self.boxes.tolist(), strict=True)
        ]

    def to_dict(self, top: int = 3) -> dict:
        """One digit: `Prediction.to_dict`'s fields, then "number" and "digits". Several: the same keys, with
        "verdict", "probability" and "digit_score" the number's, and "digit", "top" and "probabilities" null."""
        if len(self) == 1:
            single = self[0].to_dict(top)
        else:
            score = self.digit_score
            single = {"digit": None, "verdict": self.verdict, "probability": round(self.probability, JSON_DECIMALS),
                      "digit_score": None if score is None else round(score, JSON_DECIMALS), "top": None,
                      "probabilities": None}
        return {**single, "number": self.number, "digits": self.digits()}

    def line(self) -> str:
        """What `digits predict` prints: "2026 (93.1%)", or the verdict first when it is not a number."""
        answer = f"{self.number} ({self.probability:.1%})"
        if self.verdict == NOT_A_NUMBER:
            return f"does not look like a number; best guess {answer}"
        if self.verdict == NOT_A_DIGIT:
            return f"does not look like a digit; best guess {answer}"
        return answer

    def __repr__(self) -> str:
        return f"NumberPrediction(number={self.number!r}, probability={self.probability:.4f}, verdict={self.verdict!r})"


def confidence(predictions: Predictions) -> np.ndarray:
    """(N,) how confidently each candidate reads as a digit: log of its best probability, plus DIGIT_SCORE_WEIGHT
    times the log of its digit score when the model has a detector (a stretch holding half of two digits scores low
    on both). No bonus per digit: on 60 touching numbers of benchmarks/read_numbers.py, +1 per digit read 28 %
    exactly, -0.5 43 %, none 65 %."""
    best = np.log(np.maximum(predictions.probabilities.max(axis=1), 1e-12))
    scores = np.nan_to_num(predictions.digit_scores.astype(np.float64), nan=1.0)
    return best + DIGIT_SCORE_WEIGHT * np.log(np.maximum(scores, 1e-12))


def read_layout(layout: Layout, predictions: Predictions) -> NumberPrediction:
    """The number in a layout, from the `Predictions` of all its candidates (`layout.views`, in order)."""
    if layout.is_single:
        chosen = [0]
    else:
        index_of = {id(candidate): index for index, candidate in enumerate(layout.candidates)}
        scores = confidence(predictions) + np.array([candidate.prior for candidate in layout.candidates])
        chosen = [index_of[id(candidate)] for candidate in choose_digits(layout, scores)]
    candidates = [layout.candidates[index] for index in chosen]
    return NumberPrediction(predictions[np.array(chosen)], np.array([candidate.box for candidate in candidates]),
                            np.stack([candidate.view for candidate in candidates]))


def read_layouts(classify: Callable[[np.ndarray], Predictions], layouts: list[Layout]) -> list[NumberPrediction]:
    """The number in each layout, with every candidate of every layout classified in one call of `classify`."""
    if not layouts:
        return []
    predictions = classify(np.concatenate([layout.views for layout in layouts]))
    readings, start = [], 0
    for layout in layouts:
        stop = start + len(layout.candidates)
        readings.append(read_layout(layout, predictions[start:stop]))
        start = stop
    return readings
