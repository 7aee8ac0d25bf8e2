"""Ensembles: several trained runs vote by averaging their predicted probabilities on the test set.

`digits.inference.runtime.average_probabilities` is the whole method, pure NumPy. `evaluate_ensemble` loads the members,
predicts the test images once per member (and per test-time shift with tta=True), averages, and hands the result to
`digits.reporting.evaluated_model.report_predictions`, so an ensemble gets the same evaluation.json, figures and
report as one model (without learning curves: it was never trained as one run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digits.errors import DigitsError
from digits.inference.runtime import TTA_WORDS, average_probabilities
from digits.inference.runtime import probabilities as model_probabilities

ENSEMBLE_FILE = "ensemble.json"


@dataclass
class EnsembleResult:
    folder: Path
    ensemble: Any  # digits.reporting.evaluated_model.EvaluatedModel
    members: list  # digits.evaluation.comparison.ModelSummary, one per member, in the order given


def load_members(paths: Sequence[str | Path]) -> list:
    """The member runs, checked before any slow work: complete, distinct, scored on the same test images."""
    from digits.training.runs import load_run

    if len(paths) < 2:
        raise DigitsError("An ensemble needs at least two run folders; name two or more after `digits ensemble`.")
    runs = [load_run(path) for path in paths]  # A missing, unfinished or damaged folder is one sentence here.
    if len({run.path.resolve() for run in runs}) < len(runs):
        raise DigitsError("The same run folder was given twice; name each member of the ensemble once.")
    for run in runs:
        if not isinstance(run.config.get("recipe"), dict):
            raise DigitsError(f"{run.path / 'config.json'} holds no recipe; the run is damaged, so train it again.")
    limits = {run.name: run.config["recipe"].get("test_limit") for run in runs}
    if len(set(limits.values())) > 1:
        described = ", ".join(f"{name}: {'all' if limit is None else limit}" for name, limit in limits.items())
        raise DigitsError(f"The members were trained with different `test_limit` values ({described}), so they "
                          "would be scored on different test images; use runs trained with the same limit.")
    return runs


def evaluate_ensemble(paths: Sequence[str | Path], data, out_dir: str | Path | None = None, *, tta: bool = False,
                      command: str | None = None) -> EnsembleResult:
    """Average the members' test probabilities and write the ensemble's evaluation folder and report.

    The output goes to out_dir (new or empty) or a new `<first member's runs folder>/<time>-ensemble/`.
    """
    from digits.evaluation.comparison import ModelSummary
    from digits.evaluation.metrics import score
    from digits.reporting.evaluated_model import report_predictions
    from digits.study import test_set
    from digits.training.runs import load_model, new_output_folder, write_json

    runs = load_members(paths)
    folder = new_output_folder(out_dir, runs[0].path.parent, "ensemble")
    images, labels = test_set(runs[0], data)
    member_probabilities, members = [], []
    for run in runs:
        probabilities = model_probabilities(load_model(run), images, tta=tta)
        member_probabilities.append(probabilities)
        members.append(ModelSummary.from_evaluation(run.name, score(labels, probabilities),
                                                    training_seconds=run.metrics.get("training_seconds"),
                                                    epochs=run.metrics.get("epochs"),
                                                    parameters=run.metrics.get("parameters")))
    probabilities = average_probabilities(member_probabilities)

    recipes = [run.config["recipe"] for run in runs]
    name = f"ensemble of {len(runs)}" + (" with TTA" if tta else "")
    config = {
        "preset": name,
        "recipe": {
            "model": ", ".join(sorted({recipe.get("model", "?") for recipe in recipes})),
            "loss": ", ".join(sorted({recipe.get("loss", "?") for recipe in recipes})),
            "optimizer": ", ".join(sorted({recipe.get("optimizer", "?") for recipe in recipes})),
            "members": ", ".join(run.name for run in runs),
            "test_time_augmentation": TTA_WORDS if tta else "none",
            "test_limit": recipes[0].get("test_limit"),
        },
    }
    training_seconds = [run.metrics.get("training_seconds") for run in runs]
    parameters = [run.metrics.get("parameters") for run in runs]
    metrics = {
        "status": "complete",
        "members": len(runs),
        "training_seconds": sum(training_seconds) if None not in training_seconds else None,
        "parameters": sum(parameters) if None not in parameters else None,
    }
    ensemble = report_predictions(name, labels, probabilities, images, folder, source=", ".join(
        str(run.path) for run in runs), config=config, metrics=metrics, data=data)
    write_json(folder / ENSEMBLE_FILE, {
        "command": command,
        "members": [{"run": str(run.path.resolve()), "accuracy": member.accuracy, "mistakes": member.mistakes}
                    for run, member in zip(runs, members, strict=True)],
        "tta": tta,
        "accuracy": ensemble.accuracy,
        "mistakes": ensemble.mistake_count,
        "test_images": ensemble.count,
    })
    return EnsembleResult(folder=folder, ensemble=ensemble, members=members)
