"""One self-contained HTML report: data, each model, then the comparison, in the study's order.

Everything the page shows arrives already computed (evaluation results, history-derived verdicts,
config and metrics dicts, figure PNGs); this module words it and templates/report.html.j2 lays it out. Figures
are embedded as base64 data URIs and the CSS is inline, so the file opens offline and can be mailed as it is.
Every piece of text is escaped by the template environment (digits.reporting.templating).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from digits.evaluation.comparison import Comparison, format_duration
from digits.evaluation.conclusions import stopping_words
from digits.evaluation.metrics import Evaluation, OverfittingVerdict
from digits.reporting.templating import render, setting_value
from digits.training.file_access import write_atomically

# Mistakes shown per model: three rows of eight, enough to see what kind of mistakes a model makes.
GALLERY_SIZE = 24
# What the learning curves' validation was, by the recipe's `validation`; any other is a holdout.
VALIDATION_WORDS = {
    "test": "the test set, as the study did",
    "none": "not measured: the model trained on every training image, so only the training curves are drawn",
}


@dataclass
class DataSection:
    """What the models were trained and tested on."""

    source: str
    verified: bool
    train_class_counts: list[int]
    test_class_counts: list[int]
    evaluated_count: int  # test images the models were scored on (fewer than all with --test-limit)
    sample_grid: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ModelSection(Evaluation):
    """One trained model: how it did on the test set (the Evaluation's fields), where it came from and how it was
    trained."""

    name: str
    run_path: str
    config: dict  # the run's config.json
    metrics: dict  # the run's metrics.json
    architecture: list[dict]  # rows of {"layer", "type", "output_shape", "parameters"}
    overfitting: OverfittingVerdict | None  # None when there are no learning curves (an ensemble)
    figures: dict[str, Path]  # "curves" (optional), "confusion", "mistakes"


@dataclass
class ComparisonSection:
    comparison: Comparison
    chart: Path | None = None
    conclusions: list[str] = field(default_factory=list)  # the study's findings, one sentence each


def write_report(path: str | Path, *, title: str, models: list[ModelSection], data: DataSection | None = None,
                 comparison: ComparisonSection | None = None, command: str | None = None) -> Path:
    """Render the report and write it (through a temporary file, so a reader never sees half a page)."""
    path = Path(path)
    page = render_report(title=title, models=models, data=data, comparison=comparison, command=command)
    write_atomically(path, page)
    return path


def render_report(*, title: str, models: list[ModelSection], data: DataSection | None = None,
                  comparison: ComparisonSection | None = None, command: str | None = None) -> str:
    """The report as one HTML page (templates/report.html.j2), every value escaped."""
    contents = [("summary", "Summary")]
    if data is not None:
        contents.append(("data", "Data"))
    contents += [(_anchor(model.name), model.name) for model in models]
    if comparison is not None:
        contents.append(("comparison", "Comparison"))
        if comparison.conclusions:
            contents.append(("conclusions", "Conclusions"))
    winners = set(comparison.comparison.winners) if comparison and len(models) > 1 else set()
    return render(
        "report.html.j2", title=title, made=datetime.now().strftime("%Y-%m-%d %H:%M"), command=command,
        contents=contents, model_views=[_model_view(model, best=model.name in winners) for model in models],
        verdict=_summary_verdict(models, comparison),
        # The study's headline finding (its two configurations compared, or how the runs were scored).
        finding=comparison.conclusions[0] if comparison is not None and comparison.conclusions else None,
        data=data, data_counts=_data_counts(data) if data is not None else None,
        comparison=comparison, comparison_rows=_comparison_rows(comparison.comparison) if comparison else None,
    )


# --- what the template cannot compute by itself --------------------------------------------------------


def _summary_verdict(models: list[ModelSection], comparison: ComparisonSection | None) -> str:
    if comparison is not None and len(models) > 1:
        return comparison.comparison.sentence
    if models and models[0].overfitting:
        return models[0].overfitting.sentence
    if models:
        return f"{models[0].name}: {100 * models[0].accuracy:.2f} % test accuracy."
    return "No model was evaluated."


def _data_counts(data: DataSection) -> list[list[str]]:
    return [[label] + [f"{count:,}" for count in counts] + [f"{sum(counts):,}"]
            for label, counts in (("training images", data.train_class_counts),
                                  ("test images", data.test_class_counts))]


def _model_view(model: ModelSection, *, best: bool) -> dict:
    """The words and table rows of one model's summary card and section."""
    recipe = model.config.get("recipe", {})
    versions_line = ", ".join(f"{name} {version}" for name, version in model.config.get("versions", {}).items())
    if model.config.get("backend"):
        versions_line += f" · Keras backend {model.config['backend']}"
    validation = recipe.get("validation", model.metrics.get("validation", "test"))
    shown = min(model.mistake_count, GALLERY_SIZE)
    architecture_rows = [
        [row["layer"], row["type"], row["output_shape"], f'{row["parameters"]:,}', row.get("arithmetic", "")]
        for row in model.architecture
    ]
    if architecture_rows:
        architecture_rows.append(["total", "", "", f'{sum(row["parameters"] for row in model.architecture):,}', ""])
    return {
        "model": model,
        "anchor": _anchor(model.name),
        "best": best,
        "recipe": recipe,
        "epoch_words": _epoch_count(model.metrics.get("epochs")),
        "architecture_rows": architecture_rows,
        "training_rows": _training_rows(model),
        "configuration_rows": _recipe_rows(model),
        "versions_line": versions_line,
        "validation_words": VALIDATION_WORDS.get(validation, "a held-out slice of the training set"),
        "curves_loss_words": _curves_loss_words(model),
        "per_class_rows": [[str(row.digit), f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}",
                            f"{row.support:,}"] for row in model.per_class],
        "gallery_caption": (f"The {shown} most confident of {model.mistake_count:,} mistakes"
                            if model.mistake_count else "No mistakes"),
    }


def _curves_loss_words(model: ModelSection) -> str:
    """What the curves' loss is, since it is not always the cross-entropy the test section reports."""
    recipe = model.config.get("recipe", {})
    loss, smoothing = recipe.get("loss"), recipe.get("label_smoothing") or 0
    if loss == "categorical_crossentropy" and smoothing:
        return (f"The curves' loss is the training loss: cross-entropy against labels smoothed by {smoothing:g}, which "
                f"stays well above the plain cross-entropy of the test section below (a smoothed label keeps "
                f"{smoothing / 10:g} on every wrong digit, so even a perfect model pays for it).")
    if loss and loss != "categorical_crossentropy":
        return (f"The curves' loss is the training loss, {loss.replace('_', ' ')}, on its own scale; the test section "
                "below reports cross-entropy, the same measure for every model.")
    return "The curves' loss is cross-entropy, as in the test section below."


def _recipe_rows(model: ModelSection) -> list[list[str]]:
    """The recipe as it ran: where the run resolved a setting ("auto" precision, a whole epoch per graph call),
    the resolved value from config.json, with the request beside it."""
    recipe = model.config.get("recipe", {})
    ran = {name: model.config[name] for name in ("precision", "steps_per_execution") if name in model.config}
    rows = [["preset", setting_value(model.config.get("preset", recipe.get("preset", "—")))]]
    for name in recipe:
        if name == "preset":
            continue
        value = setting_value(ran.get(name, recipe[name]))
        if name in ran and ran[name] != recipe[name]:
            value += f" (asked: {setting_value(recipe[name]) if recipe[name] is not None else 'a whole epoch'})"
        rows.append([name.replace("_", " "), value])
    return rows


def _training_rows(model: ModelSection) -> list[list[str]]:
    metrics = model.metrics
    rows = [["status", setting_value(metrics.get("status"))],
            ["epochs finished", setting_value(metrics.get("epochs"))],
            ["training time", format_duration(metrics.get("training_seconds"))]]
    if metrics.get("epochs") is not None and model.config.get("recipe"):
        rows.append(["why it ended", stopping_words(metrics, model.config["recipe"])])
    if metrics.get("samples_per_second"):
        rows.append(["speed", f'{metrics["samples_per_second"]:,.0f} images/s'])
    if model.config.get("started"):
        rows.append(["started", setting_value(model.config["started"])])
    return rows


def _comparison_rows(comparison: Comparison) -> list[list[str]]:
    return [[model.name + (" ★" if model.name in comparison.winners else ""), f"{100 * model.accuracy:.2f} %",
             f"{model.mistakes:,} / {model.count:,}", f"{model.loss:.4f}", format_duration(model.training_seconds),
             setting_value(model.epochs), "—" if model.parameters is None else f"{model.parameters:,}"]
            for model in comparison.models]


def _anchor(name: str) -> str:
    return "model-" + "".join(character if character.isalnum() else "-" for character in name)


def _epoch_count(epochs) -> str:
    return "— epochs" if epochs is None else f"{epochs:,} epoch{'s' * (epochs != 1)}"
