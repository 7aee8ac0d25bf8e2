"""One trial of a sweep: the trial's recipe trained by `digits.training.fit.train` into its own run folder, each epoch's
holdout accuracy reported to Optuna, and the run stopped when the pruner says so.

A pruned run is closed the way Ctrl-C closes one (the model of the last finished epoch, metrics.json written),
then marked "pruned", so no reader takes it for a finished run.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import keras

from digits.data.mnist import Mnist
from digits.sweeps.space import SWEEPS_DIR, Dimension, SearchSpace
from digits.training.fit import RunInterrupted, train
from digits.training.runs import METRICS_FILE, load_run, write_json

# --- reporting and pruning ------------------------------------------------------------------------------------


class TrialStopped(KeyboardInterrupt):
    """Raised at an epoch end to stop a pruned trial: train() then closes the run folder as it does on Ctrl-C."""


class ReportToTrial(keras.callbacks.Callback):
    """Reports each epoch's holdout accuracy to the trial and stops the run when the pruner says so.

    Epoch ends only: a callback on every batch would force a host sync per step.
    """

    def __init__(self, trial, trial_dir: Path, budget_seconds: float | None):
        super().__init__()
        self.trial, self.trial_dir, self.budget_seconds = trial, trial_dir, budget_seconds
        self.pruned_epoch: int | None = None
        self.budget_epoch: int | None = None
        self.started = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        # train() has made the run folder (the only one in this trial's folder): record it before any epoch.
        run_dirs = [path for path in self.trial_dir.iterdir() if path.is_dir()]
        if len(run_dirs) == 1:
            self.trial.set_user_attr("run_dir", str(run_dirs[0].resolve()))

    def on_epoch_end(self, epoch, logs=None):
        accuracy = (logs or {}).get("val_accuracy")
        if accuracy is None:
            return
        self.trial.report(float(accuracy), epoch + 1)
        # Pruning at the last epoch would save nothing and throw away a finished run.
        if epoch + 1 < self.params.get("epochs", 0) and self.trial.should_prune():
            self.pruned_epoch = epoch + 1
            raise TrialStopped(f"pruned after epoch {epoch + 1}")
        if self.budget_seconds is not None and time.perf_counter() - self.started > self.budget_seconds:
            self.budget_epoch = epoch + 1
            self.model.stop_training = True


def suggest(trial, dimension: Dimension):
    """The trial's value for one dimension of the space."""
    if dimension.choices is not None:
        return trial.suggest_categorical(dimension.name, list(dimension.choices))
    # A dimension without choices is a range: parse_space gave it both ends.
    assert dimension.low is not None and dimension.high is not None
    if dimension.integer:
        return trial.suggest_int(dimension.name, int(dimension.low), int(dimension.high),
                                 step=int(dimension.step or 1), log=dimension.log)
    return trial.suggest_float(dimension.name, float(dimension.low), float(dimension.high), step=dimension.step,
                               log=dimension.log)


def run_trial(trial, space: SearchSpace, data: Mnist, runs_dir: Path, *, target_trials: int,
              progress=print) -> float:
    """Train one trial's recipe into its own run folder and return its last holdout accuracy."""
    import optuna

    study = trial.study
    # Who drew it, before anything else: a withdrawn trial names its worker too.
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    if _surplus(study, trial, target_trials):
        # Another worker asked for the last trial a moment before this one; stop before training anything.
        trial.set_user_attr("withdrawn", True)
        raise optuna.TrialPruned("withdrawn: the sweep already had enough trials running")
    recipe = space.recipe(lambda dimension: suggest(trial, dimension))
    trial_dir = runs_dir / SWEEPS_DIR / study.study_name / f"trial-{trial.number:04d}"
    trial_dir.mkdir(parents=True, exist_ok=False)
    trial.set_user_attr("recipe", recipe.model_dump())
    reporter = ReportToTrial(trial, trial_dir, space.trial_seconds)
    try:
        run_dir = train(recipe, data, trial_dir, verbose=0, callbacks=[reporter])
    except RunInterrupted as stopped:
        if reporter.pruned_epoch is None:  # Ctrl-C: queue the same parameters, so a rerun starts with them.
            trial.set_user_attr("interrupted", True)
            study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
            progress(f"trial {trial.number}: interrupted; {stopped.run_dir} is marked interrupted")
            raise
        metrics = load_run(stopped.run_dir, require_complete=False).metrics
        # The folder holds a model of the epoch it was pruned at; it is not a finished run, and says so.
        write_json(stopped.run_dir / METRICS_FILE, {**metrics, "status": "pruned",
                                                    "pruned_at_epoch": reporter.pruned_epoch})
        trial.set_user_attr("seconds", metrics.get("training_seconds"))
        trial.set_user_attr("epochs", reporter.pruned_epoch)
        progress(f"trial {trial.number}: pruned after epoch {reporter.pruned_epoch} of {recipe.epochs} "
                 f"({metrics.get('training_seconds', 0):.0f} s) {_params(trial.params)}")
        raise optuna.TrialPruned(f"pruned after epoch {reporter.pruned_epoch}") from None
    metrics = load_run(run_dir.folder).metrics
    trial.set_user_attr("seconds", metrics["training_seconds"])
    trial.set_user_attr("epochs", metrics["epochs"])
    if reporter.budget_epoch is not None:
        trial.set_user_attr("stopped_by_budget", reporter.budget_epoch)
    accuracy = metrics["validation_accuracy"]
    progress(f"trial {trial.number}: holdout accuracy {accuracy:.2%} after {metrics['epochs']} epochs "
             f"({metrics['training_seconds']:.0f} s) {_params(trial.params)} -> {run_dir}")
    return float(accuracy)


def _params(params: dict) -> str:
    return ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in params.items())


def _surplus(study, trial, target_trials: int) -> bool:
    """Whether enough trials are complete or running before this one (by trial number) to end the sweep."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    before = [other for other in trials
              if other.state == TrialState.COMPLETE or other.number < trial.number]
    return len(before) >= target_trials
