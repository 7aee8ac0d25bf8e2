"""One self-contained HTML page about a sweep: the best trials and their run folders, Optuna's figures, and
what pruning saved. Its template (digits/reporting/templates/sweep_report.html.j2) extends the study report's page
and uses its pieces, so both pages read alike.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from digits.errors import DigitsError
from digits.evaluation.comparison import format_duration
from digits.reporting.templating import render
from digits.training.file_access import write_atomically
from digits.training.runs import METRICS_FILE, _read_json

# Rows of the table of every trial; a long sweep's page stays readable.
TRIAL_ROWS = 200
BEST_ROWS = 10


def trial_row_facts(trial) -> dict:
    """What a trial's run folder says: its status ("complete", "pruned", "interrupted", or "unfinished" when
    metrics.json is missing: still training, or its worker was killed) and its training seconds."""
    run_dir = trial.user_attrs.get("run_dir")
    if not run_dir:
        return {"folder": "—", "status": "no folder", "seconds": None, "epochs": None}
    metrics_path = Path(run_dir) / METRICS_FILE
    metrics = {}
    if metrics_path.is_file():
        try:
            metrics = _read_json(metrics_path)
        except DigitsError:  # A damaged file is shown as such, not raised: the page is about the whole sweep.
            metrics = {"status": "damaged"}
    return {"folder": run_dir, "status": metrics.get("status", "unfinished"),
            "seconds": metrics.get("training_seconds"), "epochs": metrics.get("epochs")}


def pruning_savings(trials) -> tuple[int, float]:
    """(pruned trials, estimated seconds saved): each pruned trial's remaining epochs at its own epoch time."""
    from optuna.trial import TrialState

    pruned, saved = 0, 0.0
    for trial in trials:
        if trial.state != TrialState.PRUNED or trial.user_attrs.get("withdrawn"):
            continue
        pruned += 1
        epochs_done = trial.user_attrs.get("epochs")
        seconds = trial.user_attrs.get("seconds")
        planned = (trial.user_attrs.get("recipe") or {}).get("epochs")
        if epochs_done and seconds and planned:
            saved += (planned - epochs_done) * seconds / epochs_done
    return pruned, saved


def optuna_figures(study, folder: Path) -> list[tuple[Path, str]]:
    """Optuna's matplotlib views of the study, as PNG files in `folder`, with captions; a view the study
    cannot support yet (too few trials, one parameter) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from optuna.visualization import matplotlib as views

    wanted: list[tuple[str, Callable[..., Any], str]] = [
        ("history", views.plot_optimization_history, ("Optimisation history: holdout accuracy of each trial and "
         "the best so far")),
        ("intermediate", views.plot_intermediate_values, ("Holdout accuracy per epoch of every trial; the short "
         "lines were pruned")),
        ("importances", views.plot_param_importances, "Parameter importances (fANOVA) for the holdout accuracy"),
        ("parallel", views.plot_parallel_coordinate, "Parallel coordinates: each line a complete trial"),
        ("slice", views.plot_slice, "Holdout accuracy against each parameter"),
    ]
    figures = []
    for name, view, caption in wanted:
        path = folder / f"{name}.png"
        with warnings.catch_warnings():
            # Optuna marks these views experimental; matplotlib notes axes of a parameter with one value.
            warnings.simplefilter("ignore")
            try:
                axes = view(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 4.5))
            figure.savefig(path, dpi=110, bbox_inches="tight")
        pyplot.close(figure)
        figures.append((path, caption))
    return figures


def render_sweep_report(study, figures: list[tuple[Path, str]], *, command: str | None = None) -> str:
    """The sweep's page (templates/sweep_report.html.j2), every value escaped; `figures` are (PNG path, caption)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(1 for trial in trials if trial.state == state) for state in TrialState}
    complete = sorted((trial for trial in trials if trial.state == TrialState.COMPLETE),
                      key=lambda trial: (-trial.value, trial.number))
    pruned, saved = pruning_savings(trials)
    spent = sum(trial.user_attrs.get("seconds") or 0 for trial in trials)
    space = study.user_attrs.get("space", {})

    best = complete[0] if complete else None
    cards = [
        {"title": "Best holdout accuracy", "number": f"{100 * best.value:.2f}" if best else "—",
         "unit": "%" if best else None, "detail": f"trial {best.number}" if best else "no complete trial yet"},
        {"title": "Trials", "number": counts[TrialState.COMPLETE], "unit": "complete",
         "detail": f"{pruned} pruned · {counts[TrialState.FAIL]} failed · {counts[TrialState.RUNNING]} running · "
                   f"{counts[TrialState.WAITING]} waiting"},
        {"title": "Training time", "number": format_duration(spent), "unit": None,
         "detail": f"pruning saved about {format_duration(saved)} ({100 * saved / (spent + saved):.0f} % of the "
                   "sweep)" if saved else "nothing pruned yet"},
    ]
    dimensions = ", ".join(dimension["name"] for dimension in space.get("dimensions", []))
    verdict = (f"Searched {dimensions or 'the space'} around the preset {space.get('base', '?')}, every trial scored "
               "on the holdout (the last 10,000 training images), never on the test set.")
    if best:
        verdict += f" Best: trial {best.number}, {100 * best.value:.2f} %, " + _params(best.params) + "."

    parameter_names = sorted({name for trial in complete for name in trial.params})
    best_rows = [[str(rank), str(trial.number), f"{100 * trial.value:.2f} %",
                  *[_value(trial.params.get(name)) for name in parameter_names],
                  _value(trial.user_attrs.get("epochs")), format_duration(trial.user_attrs.get("seconds")),
                  trial.user_attrs.get("run_dir", "—")]
                 for rank, trial in enumerate(complete[:BEST_ROWS], start=1)]
    all_rows = []
    for trial in trials[-TRIAL_ROWS:]:
        facts = trial_row_facts(trial)
        note = ("withdrawn" if trial.user_attrs.get("withdrawn")
                else "interrupted" if trial.user_attrs.get("interrupted")
                else f"retry of {trial.system_attrs['failed_trial']}" if "failed_trial" in trial.system_attrs else "")
        all_rows.append([str(trial.number), trial.state.name.lower(),
                         "—" if trial.value is None else f"{100 * trial.value:.2f} %", note,
                         trial.user_attrs.get("host", "—"), facts["status"], facts["folder"]])
    contents = [("summary", "Summary"), ("best", "Best trials"), ("figures", "Figures"), ("trials", "All trials")]
    return render("sweep_report.html.j2", title=f"Sweep {study.study_name}",
                  made=datetime.now().strftime("%Y-%m-%d %H:%M"), command=command, contents=contents, cards=cards,
                  verdict=verdict, parameter_names=parameter_names, best_rows=best_rows, figures=figures,
                  all_rows=all_rows)


def write_sweep_report(study, path: str | Path, *, command: str | None = None) -> Path:
    """Draw the figures, render the page and write it through a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        page = render_sweep_report(study, optuna_figures(study, Path(folder)), command=command)
    write_atomically(path, page)
    return path


def _value(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _params(params: dict) -> str:
    return ", ".join(f"{name} = {_value(value)}" for name, value in params.items())
