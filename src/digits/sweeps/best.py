"""After a sweep: its best trials, the final models trained from the best recipe, and an ensemble's members.

The trials are ranked by their holdout accuracy; the final models train the best recipe on all 60,000 training
images and are scored on the test set once each (`train_final`, what `digits sweep SPACE --train-final` runs).
"""

from __future__ import annotations

from pathlib import Path

from digits.data.mnist import Mnist
from digits.errors import DigitsError
from digits.training.recipes import Recipe

MAX_SEEDS = 100  # the final training: one model per seed on all 60,000 images


def best_trials(study, top: int = 1, *, distinct: bool = True) -> list:
    """The COMPLETE trials with the highest holdout accuracy, best first; with distinct, one per recipe."""
    from optuna.trial import TrialState

    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda trial: (-trial.value, trial.number))
    chosen, seen = [], set()
    for trial in ranked:
        key = repr(sorted(trial.params.items()))
        if distinct and key in seen:
            continue
        seen.add(key)
        chosen.append(trial)
        if len(chosen) == top:
            break
    if not chosen:
        raise DigitsError(f"The study {study.study_name!r} has no complete trial yet; run `digits sweep` first.")
    return chosen


def final_recipe(trial, seed: int = 0) -> Recipe:
    """A trial's recipe for the final model: all 60,000 training images, nothing scored per epoch."""
    recipe = trial.user_attrs.get("recipe")
    if not isinstance(recipe, dict):
        raise DigitsError(f"Trial {trial.number} records no recipe; it was not made by `digits sweep`.")
    return Recipe(**recipe).replace(validation="none", train_limit=None, test_limit=None,
                                    target_accuracy=None, seed=seed)


def train_final(study, data: Mnist, runs_dir: str | Path, *, seeds: int = 1, progress=print) -> list:
    """Retrain the best trial's recipe with seeds 0..seeds-1 on all training images; evaluate each on the test
    set once. Returns the EvaluatedModel of each."""
    from digits.study import report_run
    from digits.training.fit import train

    if not 1 <= seeds <= MAX_SEEDS:
        raise DigitsError(f"The number of seeds must be between 1 and {MAX_SEEDS}, not {seeds}.")
    best = best_trials(study, 1)[0]
    evaluated = []
    for seed in range(seeds):
        recipe = final_recipe(best, seed)
        progress(f"training the best recipe of trial {best.number} on all training images, seed {seed}")
        trained = train(recipe, data, runs_dir, verbose=0)
        evaluated.append(report_run(trained.as_run(), data, model=trained.model))  # The model as it is in memory.
    return evaluated


def member_runs(study, top: int) -> list[Path]:
    """The run folders of the best `top` different recipes, for an ensemble."""
    trials = best_trials(study, top)
    if len(trials) < top:
        raise DigitsError(f"The study {study.study_name!r} has {len(trials)} different complete recipe(s), fewer "
                          f"than `top={top}`; run more trials or ask for fewer.")
    return [Path(trial.user_attrs["run_dir"]) for trial in trials]
