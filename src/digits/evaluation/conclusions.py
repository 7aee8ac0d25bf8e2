"""The study's conclusions: each model against the study's own figure, and the study's two shallow configurations
(MSE + SGD against Poisson + Adadelta) against each other.

Pure functions of what a run folder holds (its config, metrics and history as dicts) and of its evaluation's
ModelSummary; the sentences go to the console and to the report's conclusions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from digits.evaluation.comparison import ModelSummary, format_duration, noise_points
from digits.training.presets import study_recipe_of
from digits.training.recipes import DEFAULT_LEARNING_RATES, STUDY_ACCURACY, STUDY_RESULTS

# The study's two configurations of its shallow network, in the order it tried them.
CONFIGURATIONS = {"seed-shallow-mse": "MSE + SGD", "seed-shallow-poisson": "Poisson + Adadelta"}


@dataclass(frozen=True)
class Reached:
    """The first epoch whose validation accuracy reached a target, and the training time until its end."""

    epoch: int
    seconds: float


def first_reaching(history: Mapping[str, Sequence[float]], target: float) -> Reached | None:
    """Read from a run's history: the first epoch at or above `target` validation accuracy (None: never)."""
    accuracies, seconds = list(history.get("val_accuracy", [])), list(history.get("seconds", []))
    elapsed = 0.0
    for epoch, (accuracy, epoch_seconds) in enumerate(zip(accuracies, seconds, strict=False), start=1):
        elapsed += float(epoch_seconds)
        # Keras reports accuracy in float32, where 9,928 / 10,000 is 0.99279999...: allow for that rounding.
        if math.isfinite(float(accuracy)) and float(accuracy) >= target - 1e-6:
            return Reached(epoch, elapsed)
    return None


def study_target(config: Mapping) -> tuple[float, str] | None:
    """The study's accuracy a run is measured against, and the words for it: its own recipe's result, else the
    study's result for the same architecture; None for architectures the study did not have."""
    preset = str(config.get("preset") or "")
    study_preset = study_recipe_of(preset) if preset else None
    if study_preset in STUDY_RESULTS:
        figure = STUDY_RESULTS[study_preset]
        return figure.accuracy, f"{figure.words} ({study_preset})"
    model = config.get("recipe", {}).get("model")
    if model in STUDY_ACCURACY:
        return STUDY_ACCURACY[model], f"{100 * STUDY_ACCURACY[model]:.2f} %, its best {model} result"
    return None


def stopping_words(metrics: Mapping, recipe: Mapping) -> str:
    """Why training ended, for a person: "all 10 planned epochs", "interrupted after 3 of 10 epochs", …"""
    epochs, planned = metrics.get("epochs"), recipe.get("epochs")
    target = metrics.get("target_accuracy") or {}
    if metrics.get("status") == "interrupted":
        return f"interrupted after {epochs} of {planned} epochs"
    if target.get("reached"):
        return (f"stopped at epoch {target.get('epoch')} of {planned}, on reaching its target accuracy "
                f"{target.get('target'):.2%}")
    if planned is not None and epochs == planned:
        return f"its {epochs} planned epoch{'s' * (epochs != 1)}"
    return f"{epochs} of {planned} epochs"


def model_conclusion(name: str, summary: ModelSummary, config: Mapping, metrics: Mapping,
                     history: Mapping[str, Sequence[float]]) -> str:
    """One sentence: the model's test accuracy, why its training ended, and the study's figure beside it."""
    recipe = config.get("recipe", {})
    sentence = f"{name}: {100 * summary.accuracy:.2f} % test accuracy ({stopping_words(metrics, recipe)})"
    target = study_target(config)
    if target is None:
        return sentence + "; the study has no figure for this architecture."
    accuracy, words = target
    difference = 100 * (summary.accuracy - accuracy)
    sentence += f"; the study: {words}, so {'+' if difference >= 0 else '−'}{abs(difference):.2f} points"
    if summary.count < 10_000:
        sentence += f" (ours on {summary.count:,} test images only)"
    study = ModelSummary(name="the study", accuracy=accuracy, loss=math.nan, mistakes=0, count=10_000)
    noise = noise_points(summary, study)
    if abs(difference) < noise:
        sentence += f", within what the test images can resolve (about ±{noise:.2f} points)"
    if recipe.get("validation", "test") != "test":
        return sentence + ("; its epochs were scored on the holdout, not the test set, so the time to reach the "
                           "study's accuracy on the test set was not measured.")
    reached = first_reaching(history, accuracy)
    if reached is None:
        return sentence + f"; no epoch reached the study's {100 * accuracy:.2f} %."
    return (sentence + f"; it first reached the study's {100 * accuracy:.2f} % at epoch {reached.epoch}, "
            f"after {reached.seconds:.1f} s of training.")


def configurations_sentence(runs: Sequence[tuple[ModelSummary, Mapping]]) -> str | None:
    """Which of the study's two shallow configurations is better here, against the study's own finding, and why.

    `runs` holds each evaluated model's summary with its run config; None unless both configurations are there.
    """
    found: dict[str, tuple[ModelSummary, Mapping]] = {}
    for summary, config in runs:
        study_preset = study_recipe_of(str(config.get("preset") or ""))
        if study_preset in CONFIGURATIONS and study_preset not in found:
            found[study_preset] = (summary, config)
    if len(found) < 2:
        return None
    (mse, mse_config), (poisson, poisson_config) = found["seed-shallow-mse"], found["seed-shallow-poisson"]
    study_gap = 100 * (STUDY_RESULTS["seed-shallow-mse"].accuracy - STUDY_RESULTS["seed-shallow-poisson"].accuracy)
    our_gap = 100 * (mse.accuracy - poisson.accuracy)
    better, worse = (mse, poisson) if our_gap >= 0 else (poisson, mse)
    label = {id(mse): "MSE + SGD", id(poisson): "Poisson + Adadelta"}
    sentence = (f"Of the study's two configurations of the shallow network, {label[id(better)]} ({better.name}) is "
                f"the better here: {100 * better.accuracy:.2f} % test accuracy against {100 * worse.accuracy:.2f} % "
                f"for {label[id(worse)]} ({worse.name}), {better.mistakes:,} against {worse.mistakes:,} mistakes, "
                f"with test cross-entropy {better.loss:.3f} against {worse.loss:.3f}.")
    sentence += (f" The study had MSE + SGD at {STUDY_RESULTS['seed-shallow-mse'].words} and Poisson + Adadelta at "
                 f"{STUDY_RESULTS['seed-shallow-poisson'].words}, a gap of {study_gap:.1f} points.")
    mse_recipe, poisson_recipe = mse_config.get("recipe", {}), poisson_config.get("recipe", {})
    if mse_config.get("preset") in CONFIGURATIONS and poisson_config.get("preset") in CONFIGURATIONS:
        gap_words = f"{abs(our_gap):.2f} points"
        return sentence + (f" These are the study's own recipes, so this is a reproduction: a gap of {gap_words} "
                           f"here against {study_gap:.1f} there.")
    noise = noise_points(better, worse)
    if our_gap < 0:
        sentence += (f" With training settings chosen on the holdout, the study's conclusion reverses: Poisson + "
                     f"Adadelta is ahead by {-our_gap:.2f} points.")
    elif our_gap < study_gap / 2:
        sentence += (f" With training settings chosen on the holdout, the gap shrinks from {study_gap:.1f} to "
                     f"{our_gap:.2f} points.")
    else:
        sentence += (f" With training settings chosen on the holdout, the study's conclusion holds: a gap of "
                     f"{our_gap:.2f} points.")
    if abs(our_gap) < noise:
        sentence += (f" That gap is within what {better.count:,} test images can resolve (about ±{noise:.2f} points), "
                     "so the two configurations are as good as each other here.")
    poisson_rate = poisson_recipe.get("learning_rate")
    default_rate = DEFAULT_LEARNING_RATES["adadelta"]
    if (poisson_recipe.get("optimizer") == "adadelta" and poisson_rate and poisson_rate != default_rate
            and our_gap < study_gap / 2):
        sentence += (f" Why: most of the study's gap came from the optimizer's settings, not from the loss. Keras's "
                     f"Adadelta default learning rate, {default_rate:g}, is a thousandth of the 1.0 that Adadelta's "
                     f"paper uses, so in 500 epochs the study's network was still far from converged; here Adadelta "
                     f"runs at {poisson_rate:g} ({poisson_recipe.get('schedule', 'constant')}) and MSE + SGD with "
                     f"Nesterov momentum {mse_recipe.get('momentum', 0):g} at {mse_recipe.get('learning_rate'):g}, "
                     f"{mse_recipe.get('epochs')} epochs each.")
    return sentence


def summary_table(models: list[ModelSummary]) -> str:
    """A fixed-width table for the terminal, one row per model, best first."""
    headers = ["model", "test accuracy", "mistakes", "loss", "training time", "epochs", "parameters"]
    rows = [[model.name, f"{100 * model.accuracy:.2f} %", f"{model.mistakes:,} / {model.count:,}",
             f"{model.loss:.4f}", format_duration(model.training_seconds),
             "—" if model.epochs is None else str(model.epochs),
             "—" if model.parameters is None else f"{model.parameters:,}"] for model in models]
    widths = [max(len(row[column]) for row in [headers, *rows]) for column in range(len(headers))]
    lines = ["  ".join(text.ljust(width) if column == 0 else text.rjust(width)
                       for column, (text, width) in enumerate(zip(row, widths, strict=True)))
             for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
