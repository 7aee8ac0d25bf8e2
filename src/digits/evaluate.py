"""What a trained model got right and wrong, and what its learning curves say.

Pure NumPy and scikit-learn: every function takes arrays (test labels and predicted probabilities,
or a history of per-epoch metrics) and returns plain dataclasses. Nothing here knows about Keras,
so an ensemble's averaged probabilities are evaluated exactly like one model's.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from digits.data import CLASSES
from digits.errors import DigitsError

# Keras clips probabilities to this before taking logs; we do the same so our loss matches model.evaluate.
PROBABILITY_FLOOR = 1e-7
# Validation loss this far (relative) above its lowest value at the end counts as having turned upward;
# smaller wobbles are epoch-to-epoch noise.
UPTURN_TOLERANCE = 0.05
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

    def _repr_html_(self) -> str:
        """A notebook shows the numbers as a small table (the figures come from digits.plots)."""
        pairs = ", ".join(f"{pair.actual} read as {pair.predicted} ({pair.count})" for pair in self.confused_pairs)
        rows = [("test accuracy", f"{100 * self.accuracy:.2f} %"),
                ("mistakes", f"{self.mistake_count:,} of {self.count:,}"),
                ("cross-entropy", f"{self.loss:.4f}"), ("most confused", pairs or "none")]
        return _html_table(rows)

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


def evaluate(labels: np.ndarray, probabilities: np.ndarray, *, pair_count: int = 5) -> Evaluation:
    """Score predicted class probabilities (N, 10) against true labels (N,) in 0..9."""
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

    confusion = confusion_matrix(labels, predicted, labels=list(range(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=list(range(CLASSES)), zero_division=0
    )
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
    turned_upward = best < len(validation_loss) - 1 and rise > UPTURN_TOLERANCE
    gap = float(accuracy[-1] - validation_accuracy[-1])
    gap_points = 100 * gap
    last_epoch, best_epoch = int(epochs[-1]), int(epochs[best])

    if turned_upward and (rise >= CLEAR_RISE or gap_points >= CLEAR_GAP_POINTS):
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
    joint = ", but" if opening == "Early signs of overfitting" else ";"
    return OverfittingVerdict(
        level=level, sentence=f"{opening}: {curve}{joint} {gap_words}.", epochs=len(loss),
        final_train_accuracy=float(accuracy[-1]), final_validation_accuracy=float(validation_accuracy[-1]),
        accuracy_gap=gap, final_train_loss=float(loss[-1]), final_validation_loss=last_loss,
        loss_gap=float(last_loss - loss[-1]), best_epoch=best_epoch, best_validation_loss=best_loss,
        validation_loss_rise=float(rise), turned_upward=bool(turned_upward),
    )


def _column(history: Mapping[str, Sequence[float]], name: str) -> np.ndarray:
    return np.asarray(history.get(name, []), dtype=np.float64).reshape(-1)


# --- which model is better ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSummary:
    """One row of a comparison: a model's test figures and what it cost."""

    name: str
    accuracy: float
    loss: float
    mistakes: int
    count: int  # test images evaluated
    training_seconds: float | None = None
    epochs: int | None = None
    parameters: int | None = None

    @classmethod
    def from_evaluation(cls, name: str, evaluation: Evaluation, *, training_seconds: float | None = None,
                        epochs: int | None = None, parameters: int | None = None) -> ModelSummary:
        return cls(name=name, accuracy=evaluation.accuracy, loss=evaluation.loss,
                   mistakes=evaluation.mistake_count, count=evaluation.count,
                   training_seconds=training_seconds, epochs=epochs, parameters=parameters)


@dataclass(frozen=True)
class Comparison:
    models: list[ModelSummary]  # best first
    winners: list[str]  # one name, or several when they tie on accuracy
    sentence: str
    noise_points: float = field(default=0.0)  # accuracy difference (points) one test set cannot resolve

    @property
    def tied(self) -> bool:
        return len(self.winners) > 1

    def to_dict(self) -> dict:
        return {"models": [asdict(model) for model in self.models], "winners": self.winners,
                "tied": self.tied, "sentence": self.sentence, "noise_points": self.noise_points}

    def _repr_html_(self) -> str:
        """A notebook shows the ranking (best first) and the verdict."""
        rows = [(model.name + (" ★" if model.name in self.winners else ""),
                 f"{100 * model.accuracy:.2f} % · {model.mistakes:,} mistakes of {model.count:,} · "
                 f"cross-entropy {model.loss:.4f}") for model in self.models]
        return _html_table(rows) + f"<p>{html.escape(self.sentence)}</p>"


def _html_table(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th style='text-align:left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
                    for name, value in rows)
    return f"<table>{cells}</table>"


def compare(models: Sequence[ModelSummary]) -> Comparison:
    """Rank models by test accuracy (then loss) and say in one paragraph which is better and why."""
    if len(models) < 1:
        raise ValueError("compare needs at least one model.")
    if len({model.count for model in models}) > 1:
        counts = ", ".join(f"{model.name} on {model.count:,}" for model in models)
        raise DigitsError(f"These models were tested on different numbers of test images ({counts}); score them on "
                          "the same images before comparing (digits.study.compare_runs does).")
    ranked = sorted(models, key=lambda model: (-model.accuracy, model.loss))
    top = ranked[0]
    winners = [model for model in ranked if _same_accuracy(model, top)]
    if len(models) == 1:
        return Comparison(ranked, [top.name], f"Only {top.name} was evaluated: {_describe(top)}.")

    others = [model for model in ranked if model not in winners]
    if len(winners) > 1:
        names = join_names([model.name for model in winners])
        sentence = (f"{names} tie on accuracy at {_percent(top.accuracy)} "
                    f"({top.mistakes:,} mistakes each out of {top.count:,}); "
                    f"{_tie_breakers(winners)}.")
        runner_up = others[0] if others else None
        noise = noise_points(top, winners[1])
    else:
        runner_up = ranked[1]
        noise = noise_points(top, runner_up)
        difference = 100 * (top.accuracy - runner_up.accuracy)
        sentence = (f"{top.name} is better: {_percent(top.accuracy)} test accuracy against "
                    f"{_percent(runner_up.accuracy)} for {runner_up.name} "
                    f"({top.mistakes:,} vs {runner_up.mistakes:,} mistakes out of {top.count:,})"
                    f"{_loss_clause(top, runner_up)}{_cost_clause(top, runner_up)}.")
        if difference < noise:
            sentence += (f" A gap of {difference:.2f} points is within what {top.count:,} test images can "
                         f"resolve (about ±{noise:.2f}), so treat it as a draw until more runs agree.")
    rest = [model for model in others if model is not runner_up] if len(winners) == 1 else others
    if rest:
        sentence += " Then " + "; ".join(f"{model.name} ({_percent(model.accuracy)})" for model in rest) + "."
    return Comparison(ranked, [model.name for model in winners], sentence, noise_points=noise)


def _same_accuracy(model: ModelSummary, other: ModelSummary) -> bool:
    if model.count == other.count:
        return model.mistakes == other.mistakes
    return math.isclose(model.accuracy, other.accuracy, abs_tol=1e-12)


def noise_points(first: ModelSummary, second: ModelSummary) -> float:
    """Two standard errors of the difference of two accuracies (in points), treating test sets as independent.

    It overstates the noise of models scored on the same images, so it errs towards calling a draw.
    """
    variance = sum(model.accuracy * (1 - model.accuracy) / model.count for model in (first, second))
    return 200 * math.sqrt(variance)


def _tie_breakers(winners: list[ModelSummary]) -> str:
    lowest_loss = min(winners, key=lambda model: model.loss)
    clauses = [f"{lowest_loss.name} has the lowest loss ({lowest_loss.loss:.3f})"]
    if math.isclose(lowest_loss.loss, max(model.loss for model in winners), rel_tol=1e-6):
        clauses = [f"their losses match too ({lowest_loss.loss:.3f})"]
    timed = [model for model in winners if model.training_seconds is not None]
    if len(timed) > 1:
        fastest = min(timed, key=lambda model: model.training_seconds or 0.0)
        clauses.append(f"{fastest.name} trained fastest ({fastest.training_seconds:.0f} s)")
    counted = [model for model in winners if model.parameters is not None]
    if len(counted) > 1:
        smallest = min(counted, key=lambda model: model.parameters or 0)
        clauses.append(f"{smallest.name} is the smallest ({smallest.parameters:,} parameters)")
    return ", ".join(clauses)


def _loss_clause(best: ModelSummary, other: ModelSummary) -> str:
    relation = "lower" if best.loss < other.loss else "higher" if best.loss > other.loss else "equal"
    return f", with {relation} loss ({best.loss:.3f} vs {other.loss:.3f})"


def _cost_clause(best: ModelSummary, other: ModelSummary) -> str:
    parts = []
    if best.parameters is not None and other.parameters is not None:
        parts.append(f"has {best.parameters:,} parameters, as {other.name} has" if best.parameters == other.parameters
                     else f"has {best.parameters:,} parameters against {other.parameters:,}")
    if best.training_seconds is not None and other.training_seconds is not None:
        if best.epochs is not None and other.epochs is not None:
            parts.append(f"trained {_epochs(best.epochs)} in {format_duration(best.training_seconds)} against "
                         f"{_epochs(other.epochs)} in {format_duration(other.training_seconds)}")
        else:
            parts.append(f"trained in {format_duration(best.training_seconds)} against "
                         f"{format_duration(other.training_seconds)}")
    return "; it " + " and ".join(parts) if parts else ""


def _epochs(count: int) -> str:
    return f"{count} epoch{'s' * (count != 1)}"


def _describe(model: ModelSummary) -> str:
    return (f"{_percent(model.accuracy)} test accuracy, {model.mistakes:,} mistakes out of {model.count:,}, "
            f"loss {model.loss:.3f}")


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def format_duration(seconds: float | None) -> str:
    """A training time as people read it: "12.3 s", "10.0 min", or "—" when unknown."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def join_names(names: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
