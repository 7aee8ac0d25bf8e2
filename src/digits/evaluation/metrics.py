"""What a trained model got right and wrong, and what its learning curves say.

Pure NumPy and scikit-learn: every function takes arrays (test labels and predicted probabilities,
or a history of per-epoch metrics) and returns plain dataclasses. Nothing here knows about Keras,
so an ensemble's averaged probabilities are evaluated exactly like one model's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from digits.data.mnist import CLASSES

# Keras clips probabilities to this before taking logs; we do the same so our loss matches model.evaluate.
PROBABILITY_FLOOR = 1e-7
# Validation loss this far (relative) above its lowest value counts as higher; smaller wobbles are
# epoch-to-epoch noise.
UPTURN_TOLERANCE = 0.05
# Validation loss has turned upward when its last this many epochs all stay above that tolerance (one epoch's
# rise is noise as often as not: seed-cnn's 0.022 -> 0.026 in its last epoch), or when it rose by CLEAR_RISE.
SUSTAINED_EPOCHS = 2
# Once validation loss has turned upward, a relative rise this large, or a train/validation accuracy gap
# this wide (points), is clear overfitting.
CLEAR_RISE = 0.30
CLEAR_GAP_POINTS = 2.0
# An accuracy gap this wide (points) is mild overfitting even while validation loss still falls.
MILD_GAP_POINTS = 1.0


# --- one model on a test set ----------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    """One misclassified test image."""

    index: int  # position in the evaluated test set
    actual: int
    predicted: int
    confidence: float  # the probability the model gave its (wrong) prediction


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one digit; support is how many test images show it."""

    digit: int
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ConfusedPair:
    """How often images of `actual` were read as `predicted`."""

    actual: int
    predicted: int
    count: int


@dataclass
class Evaluation:
    """How a model scored on a test set. Results about one model extend it (digits.reporting's EvaluatedModel), so
    `digits.evaluate(run).accuracy` reads the same as `score(labels, probabilities).accuracy`."""

    accuracy: float
    loss: float  # mean categorical cross-entropy, whatever loss the model was trained with
    count: int  # number of test images evaluated
    confusion: np.ndarray  # (10, 10) int: rows are actual digits, columns predicted digits
    mistakes: list[Mistake]  # most confident first
    per_class: list[ClassScores]
    confused_pairs: list[ConfusedPair]  # largest off-diagonal cells of the confusion matrix, most first

    @property
    def mistake_count(self) -> int:
        return len(self.mistakes)

    def to_dict(self) -> dict:
        """Plain JSON-ready numbers (the confusion matrix as nested lists)."""
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "count": self.count,
            "mistake_count": self.mistake_count,
            "confusion": self.confusion.tolist(),
            "mistakes": [asdict(mistake) for mistake in self.mistakes],
            "per_class": [asdict(scores) for scores in self.per_class],
            "confused_pairs": [asdict(pair) for pair in self.confused_pairs],
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> Evaluation:
        """The inverse of to_dict; KeyError or TypeError when a field is missing or malformed."""
        return cls(
            accuracy=float(values["accuracy"]),
            loss=float(values["loss"]),
            count=int(values["count"]),
            confusion=np.asarray(values["confusion"], dtype=np.int64).reshape(CLASSES, CLASSES),
            mistakes=[Mistake(**item) for item in values["mistakes"]],
            per_class=[ClassScores(**item) for item in values["per_class"]],
            confused_pairs=[ConfusedPair(**item) for item in values["confused_pairs"]],
        )


def score(labels: np.ndarray, probabilities: np.ndarray, *, pair_count: int = 5) -> Evaluation:
    """Score predicted class probabilities (N, 10) against true labels (N,) in 0..9.

    The one scoring function: `digits.evaluate(run)` predicts a run's test set and scores it here.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != CLASSES:
        raise ValueError(f"probabilities must have shape (N, {CLASSES}), got {probabilities.shape}.")
    if len(labels) != len(probabilities) or len(labels) == 0:
        raise ValueError(f"need as many labels as rows of probabilities (and at least one), "
                         f"got {len(labels)} labels and {len(probabilities)} rows.")
    if labels.min() < 0 or labels.max() >= CLASSES:
        raise ValueError(f"labels must lie in 0..{CLASSES - 1}.")

    predicted = probabilities.argmax(axis=1)
    # Rows are renormalised as Keras does, so averaged or slightly rounded probabilities still give a true loss.
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    true_class_probability = np.clip(normalised[np.arange(len(labels)), labels], PROBABILITY_FLOOR, 1.0)
    loss = float(-np.log(true_class_probability).mean())

    wrong = np.flatnonzero(predicted != labels)
    confidence = normalised[wrong, predicted[wrong]]
    # Stable sort keeps test-set order among equally confident mistakes, so the list is reproducible.
    order = np.argsort(-confidence, kind="stable")
    mistakes = [
        Mistake(index=int(wrong[i]), actual=int(labels[wrong[i]]), predicted=int(predicted[wrong[i]]),
                confidence=float(confidence[i]))
        for i in order
    ]

    # Counted in NumPy: importing scikit-learn's metrics for these took about a second of every `digits run`.
    # confusion[actual, predicted]: (10, 10)
    confusion = np.bincount(labels.astype(np.int64) * CLASSES + predicted, minlength=CLASSES * CLASSES).reshape(
        CLASSES, CLASSES)
    right = np.diag(confusion).astype(np.float64)
    support, predicted_count = confusion.sum(axis=1), confusion.sum(axis=0)
    # A digit never predicted (or never present) scores 0, as scikit-learn's zero_division=0 does.
    precision = np.divide(right, predicted_count, out=np.zeros(CLASSES), where=predicted_count > 0)
    recall = np.divide(right, support, out=np.zeros(CLASSES), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(CLASSES), where=both > 0)
    per_class = [
        ClassScores(digit=digit, precision=float(precision[digit]), recall=float(recall[digit]),
                    f1=float(f1[digit]), support=int(support[digit]))
        for digit in range(CLASSES)
    ]
    return Evaluation(
        accuracy=float((predicted == labels).mean()),
        loss=loss,
        count=len(labels),
        confusion=confusion.astype(np.int64),
        mistakes=mistakes,
        per_class=per_class,
        confused_pairs=most_confused_pairs(confusion, pair_count),
    )


def evaluation_fields(evaluation: Evaluation) -> dict:
    """The scores of `evaluation` (or of a result that extends Evaluation) as keyword arguments, to build a result
    that carries them itself: `ModelSection(**evaluation_fields(evaluation), name=...)`."""
    return {field.name: getattr(evaluation, field.name) for field in fields(Evaluation)}


def most_confused_pairs(confusion: np.ndarray, count: int = 5) -> list[ConfusedPair]:
    """The largest off-diagonal cells, most first; ties in digit order; empty cells never listed."""
    off_diagonal = [
        ConfusedPair(actual=actual, predicted=predicted, count=int(confusion[actual, predicted]))
        for actual in range(CLASSES)
        for predicted in range(CLASSES)
        if actual != predicted and confusion[actual, predicted] > 0
    ]
    off_diagonal.sort(key=lambda pair: (-pair.count, pair.actual, pair.predicted))
    return off_diagonal[:count]


# --- overfitting, from the learning curves -------------------------------------------------------


@dataclass(frozen=True)
class OverfittingVerdict:
    level: str  # "none", "mild", "clear", or "unknown" (no validation curve, or a single epoch)
    sentence: str  # the verdict in plain words, with the numbers behind it
    epochs: int
    final_train_accuracy: float
    final_validation_accuracy: float
    accuracy_gap: float  # training minus validation accuracy at the last epoch (fraction, not points)
    final_train_loss: float
    final_validation_loss: float
    loss_gap: float  # validation minus training loss at the last epoch
    best_epoch: int  # epoch with the lowest validation loss
    best_validation_loss: float
    validation_loss_rise: float  # last validation loss minus the lowest, relative to the lowest
    turned_upward: bool

    def to_dict(self) -> dict:
        return asdict(self)


def overfitting_verdict(history: Mapping[str, Sequence[float]]) -> OverfittingVerdict:
    """Judge overfitting from the columns of history.csv (loss, accuracy, val_loss, val_accuracy)."""
    loss = _column(history, "loss")
    accuracy = _column(history, "accuracy")
    validation_loss = _column(history, "val_loss")
    validation_accuracy = _column(history, "val_accuracy")
    epochs = np.asarray(history.get("epoch", np.arange(1, len(loss) + 1)), dtype=np.int64)
    if len(loss) == 0 or len(validation_loss) != len(loss) or not np.isfinite(validation_loss).all():
        return OverfittingVerdict(
            level="unknown", sentence="No validation curve was recorded, so overfitting cannot be judged.",
            epochs=len(loss), final_train_accuracy=math.nan, final_validation_accuracy=math.nan,
            accuracy_gap=math.nan, final_train_loss=math.nan, final_validation_loss=math.nan,
            loss_gap=math.nan, best_epoch=0, best_validation_loss=math.nan, validation_loss_rise=math.nan,
            turned_upward=False,
        )

    best = int(np.argmin(validation_loss))
    best_loss, last_loss = float(validation_loss[best]), float(validation_loss[-1])
    rise = (last_loss - best_loss) / best_loss if best_loss > 0 else 0.0
    recent_above = validation_loss[-SUSTAINED_EPOCHS:] > best_loss * (1 + UPTURN_TOLERANCE)
    sustained = best < len(validation_loss) - SUSTAINED_EPOCHS and bool(recent_above.all())
    turned_upward = best < len(validation_loss) - 1 and rise > UPTURN_TOLERANCE and (sustained or rise >= CLEAR_RISE)
    gap = float(accuracy[-1] - validation_accuracy[-1])
    gap_points = 100 * gap
    last_epoch, best_epoch = int(epochs[-1]), int(epochs[best])

    # Overfitting is the model fitting its training images better than it generalises: a rising validation loss
    # while training accuracy stays below validation (dropout, shifted training images) is not called so.
    if turned_upward and gap_points <= 0:
        level, opening = "none", "No clear sign of overfitting"
    elif turned_upward and (rise >= CLEAR_RISE or gap_points >= CLEAR_GAP_POINTS):
        level, opening = "clear", "Clear overfitting"
    elif turned_upward:
        level, opening = "mild", "Mild overfitting"
    elif gap_points >= MILD_GAP_POINTS:
        # Validation still improves, but the model learns its training images faster than it generalises.
        level, opening = "mild", "Early signs of overfitting"
    else:
        level, opening = "none", "No sign of overfitting"

    if len(loss) == 1:
        # Keras averages training accuracy over the epoch while the model learns, so one epoch's gap means little.
        level, opening = "unknown", "Too early to tell"
        curve = f"only one epoch was trained (validation loss {last_loss:.3f}), too few to see a trend"
    elif turned_upward:
        curve = (f"validation loss bottomed at epoch {best_epoch} ({best_loss:.3f}) "
                 f"and rose to {last_loss:.3f} by epoch {last_epoch}")
    elif best == len(validation_loss) - 1:
        curve = f"validation loss was still falling at the last epoch ({last_loss:.3f} at epoch {last_epoch})"
    else:
        curve = (f"validation loss levelled off: lowest at epoch {best_epoch} ({best_loss:.3f}), "
                 f"{last_loss:.3f} at epoch {last_epoch}")
    if abs(gap_points) < 0.05:
        gap_words = "training and validation accuracy end level"
    else:
        side = "above" if gap_points > 0 else "below"
        gap_words = f"training accuracy ends {abs(gap_points):.1f} points {side} validation"
    joint = ", but" if opening in ("Early signs of overfitting", "No clear sign of overfitting") else ";"
    return OverfittingVerdict(
        level=level, sentence=f"{opening}: {curve}{joint} {gap_words}.", epochs=len(loss),
        final_train_accuracy=float(accuracy[-1]), final_validation_accuracy=float(validation_accuracy[-1]),
        accuracy_gap=gap, final_train_loss=float(loss[-1]), final_validation_loss=last_loss,
        loss_gap=float(last_loss - loss[-1]), best_epoch=best_epoch, best_validation_loss=best_loss,
        validation_loss_rise=float(rise), turned_upward=bool(turned_upward),
    )


def _column(history: Mapping[str, Sequence[float]], name: str) -> np.ndarray:
    return np.asarray(history.get(name, []), dtype=np.float64).reshape(-1)

