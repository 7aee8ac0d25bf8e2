"""Which of several models is better, and why: a ranking with a verdict in words.

Pure Python on `ModelSummary` rows (test accuracy, mistakes, loss, parameters, training time): `compare` ranks
them and writes one sentence that names the winner, the runner-up and what separates them, calling differences
within the test set's noise (`noise_points`) ties. `format_duration` and `join_names` are the one way a
training time and a list of names are written in every table and sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from digits.errors import DigitsError
from digits.evaluation.metrics import Evaluation


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
    # What explains a loss out of line with the accuracy: the recipe's label smoothing, and the expected
    # calibration error (a fraction) on the test set; None when not known.
    label_smoothing: float | None = None
    calibration_error: float | None = None

    @classmethod
    def from_evaluation(cls, name: str, evaluation: Evaluation, *, training_seconds: float | None = None,
                        epochs: int | None = None, parameters: int | None = None,
                        label_smoothing: float | None = None, calibration_error: float | None = None) -> ModelSummary:
        return cls(name=name, accuracy=evaluation.accuracy, loss=evaluation.loss,
                   mistakes=evaluation.mistake_count, count=evaluation.count,
                   training_seconds=training_seconds, epochs=epochs, parameters=parameters,
                   label_smoothing=label_smoothing, calibration_error=calibration_error)


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
    clause = f", with {relation} loss ({best.loss:.3f} vs {other.loss:.3f})"
    if relation != "higher":
        return clause
    # More accurate yet higher cross-entropy looks like a contradiction; say what causes it.
    smoothing = best.label_smoothing or 0.0
    calibration = ""
    if best.calibration_error is not None and other.calibration_error is not None:
        calibration = (f"calibration error {100 * best.calibration_error:.2f} % against "
                       f"{100 * other.calibration_error:.2f} %")
    if smoothing > (other.label_smoothing or 0.0):
        clause += (f", because its label smoothing ({smoothing:g}) trains it to keep {100 * smoothing:g} % of its "
                   f"probability off the right digit, which raises cross-entropy even where it is right")
        return clause + (f" ({calibration})" if calibration else "")
    if calibration:
        return clause + f": its probabilities are less well calibrated ({calibration})"
    return clause + ": fewer wrong answers, but less fitting probabilities"


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
