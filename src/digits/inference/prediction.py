"""What a classifier says about pictures: one `Prediction` per picture, `Predictions` for many.

`digits predict` (its lines and its `--json`), `digits.predict` and the server's JSON answers are all built from
these, so they give the same digit, the same fields in the same order, and the same ranking of the likeliest
digits. The ranking is stable: the highest probability first and, among equal probabilities, the lower digit
first, which agrees with `numpy.argmax` (the first of equal maxima), so `top(1)` is always the digit given.

`Predictions` holds arrays, as scikit-learn's `predict` and `predict_proba` return them: `.digits` (N,),
`.probabilities` (N, 10), `.digit_scores` (N,) and `.verdicts` (N,). A model without a not-a-digit detector has no
digit scores: `.digit_scores` holds NaN, and each `Prediction.digit_score` (and its JSON `digit_score`) is None.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# The verdicts a classifier gives (`digits.inference.classifier.Classifier.verdict`): the picture looks like a
# digit, or like no digit at all (the best guess is still given).
DIGIT, NOT_A_DIGIT = "digit", "not a digit"
# Decimal places of the probabilities and digit scores in JSON: float32 holds about 7 significant digits, and
# 6 places keep the answers short to read.
JSON_DECIMALS = 6
# How many digits `Predictions` names in its repr before "...".
REPR_DIGITS = 10


@dataclass(frozen=True, eq=False)
class Prediction:
    """What the classifier read in one picture: its ten probabilities, its digit score and its verdict."""

    probabilities: np.ndarray  # (10,) calibrated probabilities of the digits 0..9
    digit_score: float | None  # The not-a-digit detector's score in [0, 1]; None for a model without one.
    verdict: str  # DIGIT or NOT_A_DIGIT

    @property
    def digit(self) -> int:
        """The most probable digit (the lower one when several are equally probable)."""
        return int(np.argmax(self.probabilities))

    @property
    def probability(self) -> float:
        """The probability of `digit`."""
        return float(self.probabilities[self.digit])

    def top(self, count: int = 3) -> list[tuple[int, float]]:
        """The `count` likeliest (digit, probability) pairs: highest probability first, ties by lower digit."""
        values = self.probabilities.tolist()
        return [(digit, values[digit]) for digit in _ranking(values)[:count]]

    def to_dict(self, top: int = 3) -> dict:
        """The JSON fields, in this order: digit, verdict, probability, digit_score (null without a detector),
        top (the `top` likeliest digits, each {digit, probability}) and the ten probabilities; numbers rounded to
        JSON_DECIMALS places."""
        values = self.probabilities.tolist()
        rounded = [round(value, JSON_DECIMALS) for value in values]
        ranking = _ranking(values)
        return {
            "digit": ranking[0],
            "verdict": self.verdict,
            "probability": rounded[ranking[0]],
            "digit_score": None if self.digit_score is None else round(self.digit_score, JSON_DECIMALS),
            "top": [{"digit": digit, "probability": rounded[digit]} for digit in ranking[:top]],
            "probabilities": rounded,
        }

    def __repr__(self) -> str:
        score = "" if self.digit_score is None else f", digit_score={self.digit_score:.4f}"
        return f"Prediction(digit={self.digit}, probability={self.probability:.4f}, verdict={self.verdict!r}{score})"


@dataclass(frozen=True, eq=False)
class Predictions:
    """What the classifier read in N pictures, as arrays; indexing or iterating gives each one's `Prediction`."""

    probabilities: np.ndarray  # (N, 10) float32 calibrated probabilities
    digit_scores: np.ndarray  # (N,) float32 digit scores; NaN for a model without a not-a-digit detector
    verdicts: np.ndarray  # (N,) str: DIGIT or NOT_A_DIGIT

    @property
    def digits(self) -> np.ndarray:
        """(N,) int64: the most probable digit of each picture (the lower one on ties)."""
        return np.argmax(self.probabilities, axis=1)

    def __len__(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, index):
        """An int gives that picture's `Prediction`; a slice, a mask or an array of indices gives `Predictions`."""
        if isinstance(index, int | np.integer):
            score = float(self.digit_scores[index])
            digit_score = None if math.isnan(score) else score
            return Prediction(self.probabilities[index], digit_score, str(self.verdicts[index]))
        return Predictions(self.probabilities[index], self.digit_scores[index], self.verdicts[index])

    def __iter__(self) -> Iterator[Prediction]:
        return (self[index] for index in range(len(self)))

    def __repr__(self) -> str:
        count = len(self)
        shown = ", ".join(str(digit) for digit in self.digits[:REPR_DIGITS])
        more = ", ..." if count > REPR_DIGITS else ""
        return f"Predictions({count} image{'' if count == 1 else 's'}{': ' if count else ''}{shown}{more})"


def _ranking(probabilities: list[float]) -> list[int]:
    """The digits, most probable first; Python's sort is stable, so equal probabilities stay in digit order."""
    return sorted(range(len(probabilities)), key=lambda digit: -probabilities[digit])
