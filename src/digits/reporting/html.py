"""One self-contained HTML report: data, each model, then the comparison, in the study's order.

Everything the page shows arrives already computed (evaluation results, history-derived verdicts,
config and metrics dicts, figure PNGs); this module only lays it out. Figures are embedded as base64
data URIs and the CSS is inline, so the file opens offline and can be mailed as it is. Every piece of
text goes through html.escape.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from digits import __version__
from digits.evaluation.comparison import Comparison, format_duration
from digits.evaluation.conclusions import stopping_words
from digits.evaluation.metrics import Evaluation, OverfittingVerdict
from digits.training.runs import write_atomically

# Mistakes shown per model: three rows of eight, enough to see what kind of mistakes a model makes.
GALLERY_SIZE = 24


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
class ModelSection:
    """One trained model: where it came from, how it was trained, and how it did."""

    name: str
    run_path: str
    config: dict  # the run's config.json
    metrics: dict  # the run's metrics.json
    architecture: list[dict]  # rows of {"layer", "type", "output_shape", "parameters"}
    evaluation: Evaluation
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
    contents = [("summary", "Summary")]
    if data is not None:
        contents.append(("data", "Data"))
    contents += [(_anchor(model.name), model.name) for model in models]
    if comparison is not None:
        contents.append(("comparison", "Comparison"))
        if comparison.conclusions:
            contents.append(("conclusions", "Conclusions"))
    made = datetime.now().strftime("%Y-%m-%d %H:%M")
    byline = _e(f"Written by digits {__version__} on {made}")
    if command:
        byline += f" · <code>{_e(command)}</code>"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{_e(title)}</h1><p class="byline">{byline}</p>',
        '<nav>' + "".join(f'<a href="#{key}">{_e(label)}</a>' for key, label in contents) + "</nav></header>",
        "<main>",
        _summary(models, comparison),
    ]
    if data is not None:
        parts.append(_data_section(data))
    parts += [_model_section(model) for model in models]
    if comparison is not None:
        parts.append(_comparison_section(comparison))
    parts.append("</main><footer>Self-contained page: every figure is embedded, nothing is fetched.</footer>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- sections -------------------------------------------------------------------------------------


def _summary(models: list[ModelSection], comparison: ComparisonSection | None) -> str:
    winners = set(comparison.comparison.winners) if comparison and len(models) > 1 else set()
    cards = []
    for model in models:
        evaluation = model.evaluation
        badge = '<span class="badge best">best</span>' if model.name in winners else ""
        seconds = model.metrics.get("training_seconds")
        cards.append(
            f'<a class="card stat" href="#{_anchor(model.name)}">'
            f'<div class="card-title">{_e(model.name)} {badge}</div>'
            f'<div class="big">{100 * evaluation.accuracy:.2f}<small> %</small></div>'
            f'<div class="muted">test accuracy · {evaluation.mistake_count:,} mistakes in {evaluation.count:,}</div>'
            f'<div class="muted">{_e(format_duration(seconds))} of training · '
            f'{_e(_epoch_count(model.metrics.get("epochs")))}'
            f'{" · " + _level_badge(model.overfitting) if model.overfitting else ""}</div></a>'
        )
    if comparison is not None and len(models) > 1:
        verdict = comparison.comparison.sentence
    elif models and models[0].overfitting:
        verdict = models[0].overfitting.sentence
    elif models:
        verdict = f"{models[0].name}: {100 * models[0].evaluation.accuracy:.2f} % test accuracy."
    else:
        verdict = "No model was evaluated."
    # The study's headline finding (its two configurations compared, or how the runs were scored) comes first;
    # every conclusion is at the end.
    finding = (f'<p class="verdict">{_e(comparison.conclusions[0])} <a href="#conclusions">All conclusions</a></p>'
               if comparison is not None and comparison.conclusions else "")
    return (f'<section id="summary"><div class="cards">{"".join(cards)}</div>'
            f'<p class="verdict">{_e(verdict)}</p>{finding}</section>')


def _data_section(data: DataSection) -> str:
    verified = ('<span class="badge ok">sha256 verified</span>' if data.verified
                else '<span class="badge warn">not verified</span>')
    counts = _table(["digit"] + [str(digit) for digit in range(10)] + ["total"], [
        ["training images"] + [f"{count:,}" for count in data.train_class_counts]
        + [f"{sum(data.train_class_counts):,}"],
        ["test images"] + [f"{count:,}" for count in data.test_class_counts] + [f"{sum(data.test_class_counts):,}"],
    ], numeric_from=1)
    notes = "".join(f"<li>{_e(note)}</li>" for note in data.notes)
    grid = _figure(data.sample_grid, "The first training images with their labels") if data.sample_grid else ""
    return (
        f'<section id="data"><h2>Data</h2><div class="card">'
        f"<p>MNIST handwritten digits, 28×28 grey-scale images. Source: {_e(data.source)} {verified}</p>"
        f"<p>The models below were scored on <strong>{data.evaluated_count:,}</strong> test images.</p>"
        f"{counts}<ul>{notes}</ul>{grid}</div></section>"
    )


def _model_section(model: ModelSection) -> str:
    evaluation = model.evaluation
    recipe = model.config.get("recipe", {})
    # The parameter arithmetic the study asks about: a Dense layer of 64 on 784 pixels has 784 × 64 + 64.
    architecture = _table(
        ["layer", "type", "output shape", "parameters", "weights + biases"],
        [[row["layer"], row["type"], row["output_shape"], f'{row["parameters"]:,}', row.get("arithmetic", "")]
         for row in model.architecture]
        + [["total", "", "", f'{sum(row["parameters"] for row in model.architecture):,}', ""]],
        numeric_from=3, last_row_total=True,
    ) if model.architecture else '<p class="muted">No single architecture (an ensemble of several models).</p>'
    configuration = _table(["setting", "value"], _recipe_rows(model), numeric_from=None)
    training = _table(None, _training_rows(model), numeric_from=None)
    versions = model.config.get("versions", {})
    versions_line = ", ".join(f"{name} {version}" for name, version in versions.items())
    if model.config.get("backend"):
        versions_line += f" · Keras backend {model.config['backend']}"
    per_class = _table(
        ["digit", "precision", "recall", "F1", "images"],
        [[str(row.digit), f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}", f"{row.support:,}"]
         for row in evaluation.per_class],
        numeric_from=1,
    )
    pairs = "".join(
        f"<li><strong>{pair.actual} read as {pair.predicted}</strong>: "
        f"{pair.count:,} time{'s' * (pair.count != 1)}</li>"
        for pair in evaluation.confused_pairs
    ) or "<li>None.</li>"
    validation = recipe.get("validation", model.metrics.get("validation", "test"))
    validation_words = {"test": "the test set, as the study did",
                        "none": "not measured: the model trained on every training image, so only the training "
                                "curves are drawn"}.get(validation, "a held-out slice of the training set")
    shown = min(evaluation.mistake_count, GALLERY_SIZE)
    gallery_caption = (f"The {shown} most confident of {evaluation.mistake_count:,} mistakes"
                       if evaluation.mistake_count else "No mistakes")
    return f"""<section id="{_anchor(model.name)}"><h2>{_e(model.name)}</h2>
<p class="muted">From <code>{_e(model.run_path)}</code> · model <strong>{_e(recipe.get("model", "?"))}</strong>
 · trained with {_e(recipe.get("loss", "?"))} and {_e(recipe.get("optimizer", "?"))}</p>
<div class="grid two">
<div class="card"><h3>Architecture</h3>{architecture}<h4>Training</h4>{training}</div>
<div class="card"><h3>Configuration</h3>{configuration}<p class="muted">{_e(versions_line)}</p></div>
</div>
{_curves_card(model, validation_words)}
<div class="card"><h3>Test set: {100 * evaluation.accuracy:.2f} % accuracy,
{evaluation.mistake_count:,} mistakes in {evaluation.count:,}</h3>
<p class="muted">Cross-entropy on the test images: {evaluation.loss:.4f} (the same measure for every model,
whatever loss it was trained with).</p>
<div class="grid confusion">
<div>{_figure(model.figures.get("confusion"),
              "Confusion matrix: rows are the actual digit, columns the prediction")}</div>
<div><h4>Per digit</h4>{per_class}<h4>Most confused</h4><ul class="pairs">{pairs}</ul></div>
</div></div>
<div class="card"><h3>Mistakes</h3>
{_figure(model.figures.get("mistakes"), gallery_caption)}</div>
{_reliability_card(model)}
</section>"""


def _reliability_card(model: ModelSection) -> str:
    if model.figures.get("reliability") is None:
        return ""
    return ('<div class="card"><h3>Calibration</h3><p class="muted">When the model says 95 %, is it right 95 % of '
            "the time? Expected calibration error (ECE) is the mean gap, over 15 confidence bins; a temperature "
            "fitted on the holdout (<code>digits evaluate --calibrate</code>) rescales the probabilities.</p>"
            f'{_figure(model.figures["reliability"], "Accuracy against confidence on the test set")}</div>')


def _curves_card(model: ModelSection, validation_words: str) -> str:
    verdict = model.overfitting
    if verdict is None:
        return ('<div class="card"><h3>Learning curves</h3><p class="muted">None: this model was not trained '
                "as one run (an ensemble averages trained models), so there are no curves to judge.</p></div>")
    return (f'<div class="card"><h3>Learning curves</h3><p class="muted">Validation is {_e(validation_words)}. '
            f'{_e(_curves_loss_words(model))}</p>'
            f'{_figure(model.figures.get("curves"), "Accuracy and loss per epoch, training against validation")}'
            f'<p class="verdict {_e(verdict.level)}">{_level_badge(verdict)} {_e(verdict.sentence)}</p></div>')


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
    rows = [["preset", _value(model.config.get("preset", recipe.get("preset", "—")))]]
    for name in recipe:
        if name == "preset":
            continue
        value = _value(ran.get(name, recipe[name]))
        if name in ran and ran[name] != recipe[name]:
            value += f" (asked: {_value(recipe[name]) if recipe[name] is not None else 'a whole epoch'})"
        rows.append([name.replace("_", " "), value])
    return rows


def _training_rows(model: ModelSection) -> list[list[str]]:
    metrics = model.metrics
    rows = [["status", _value(metrics.get("status"))], ["epochs finished", _value(metrics.get("epochs"))],
            ["training time", format_duration(metrics.get("training_seconds"))]]
    if metrics.get("epochs") is not None and model.config.get("recipe"):
        rows.append(["why it ended", stopping_words(metrics, model.config["recipe"])])
    if metrics.get("samples_per_second"):
        rows.append(["speed", f'{metrics["samples_per_second"]:,.0f} images/s'])
    if model.config.get("started"):
        rows.append(["started", _value(model.config["started"])])
    return rows


def _comparison_section(section: ComparisonSection) -> str:
    comparison = section.comparison
    table = _table(
        ["model", "test accuracy", "mistakes", "loss", "training time", "epochs", "parameters"],
        [[model.name + (" ★" if model.name in comparison.winners else ""), f"{100 * model.accuracy:.2f} %",
          f"{model.mistakes:,} / {model.count:,}", f"{model.loss:.4f}", format_duration(model.training_seconds),
          _value(model.epochs), "—" if model.parameters is None else f"{model.parameters:,}"]
         for model in comparison.models],
        numeric_from=1,
    )
    chart = _figure(section.chart, "Test error, test loss and training time of each model") if section.chart else ""
    conclusions = ""
    if section.conclusions:
        conclusions = ('<h3 id="conclusions">Conclusions</h3><ul class="conclusions">'
                       + "".join(f"<li>{_e(line)}</li>" for line in section.conclusions) + "</ul>")
    return (f'<section id="comparison"><h2>Comparison</h2><div class="card">{table}{chart}'
            f'<p class="verdict">{_e(comparison.sentence)}</p>{conclusions}</div></section>')


# --- small pieces ---------------------------------------------------------------------------------


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _anchor(name: str) -> str:
    return "model-" + "".join(character if character.isalnum() else "-" for character in name)


def _value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _epoch_count(epochs) -> str:
    return "— epochs" if epochs is None else f"{epochs:,} epoch{'s' * (epochs != 1)}"


def _level_badge(verdict: OverfittingVerdict) -> str:
    label = {"none": "no overfitting", "mild": "mild overfitting", "clear": "overfitting",
             "unknown": "overfitting unknown"}.get(verdict.level, verdict.level)
    if verdict.epochs == 1:
        label = "too short to judge"
    return f'<span class="badge level-{_e(verdict.level)}">{_e(label)}</span>'


def _figure(path: Path | None, caption: str) -> str:
    if path is None or not Path(path).is_file():
        return f'<p class="muted">(figure missing: {_e(caption)})</p>'
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _table(headers: list[str] | None, rows: list[list[str]], *, numeric_from: int | None,
           last_row_total: bool = False) -> str:
    def cell(tag: str, index: int, text: str) -> str:
        numeric = numeric_from is not None and index >= numeric_from
        return f'<{tag}{" class=num" if numeric else ""}>{_e(text)}</{tag}>'

    head = "" if headers is None else (
        "<thead><tr>" + "".join(cell("th", index, text) for index, text in enumerate(headers)) + "</tr></thead>")
    body = []
    for number, row in enumerate(rows):
        total = last_row_total and number == len(rows) - 1
        body.append(f'<tr{" class=total" if total else ""}>'
                    + "".join(cell("td", index, text) for index, text in enumerate(row)) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


CSS = """
:root { --ink: #1f2430; --muted: #667085; --line: #e4e7ec; --page: #f4f6fa; --card: #fff;
        --blue: #2f6fdf; --green: #1f8a5b; --amber: #b86e00; --red: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--ink); line-height: 1.5;
       font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; }
header { background: linear-gradient(135deg, #1d3a78, #2f6fdf); color: #fff; padding: 28px 0 0; }
header h1 { margin: 0; font-size: 28px; letter-spacing: -0.01em; }
header .byline { margin: 4px 0 16px; opacity: 0.85; font-size: 13px; }
header code { background: rgba(255,255,255,0.15); color: #fff; }
header, main, footer { padding-left: max(24px, calc((100% - 1120px) / 2));
                       padding-right: max(24px, calc((100% - 1120px) / 2)); }
nav { display: flex; flex-wrap: wrap; gap: 4px; }
nav a { color: #fff; text-decoration: none; padding: 8px 14px; border-radius: 8px 8px 0 0; font-size: 14px;
        background: rgba(255,255,255,0.12); }
nav a:hover { background: rgba(255,255,255,0.25); }
main { padding-top: 24px; padding-bottom: 24px; }
section { margin-bottom: 36px; }
h2 { font-size: 22px; margin: 0 0 10px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 0 0 10px; }
h3#conclusions { margin-top: 18px; }
h4 { font-size: 13px; margin: 14px 0 6px; text-transform: uppercase; letter-spacing: 0.05em; color: var(--muted); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 18px 20px;
        box-shadow: 0 1px 3px rgba(16,24,40,0.06); margin-bottom: 16px; overflow-x: auto; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 16px; }
.card.stat { display: block; color: inherit; text-decoration: none; border-top: 4px solid var(--blue); }
.card.stat:hover { box-shadow: 0 4px 12px rgba(16,24,40,0.12); }
.card-title { font-weight: 600; font-size: 15px; }
.big { font-size: 40px; font-weight: 700; letter-spacing: -0.02em; line-height: 1.15; }
.big small { font-size: 20px; color: var(--muted); font-weight: 600; }
.muted { color: var(--muted); font-size: 13.5px; }
.grid { display: grid; gap: 16px; }
.grid.two { grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); align-items: start; }
.grid.two .card { margin-bottom: 0; }
.grid.two + .card { margin-top: 16px; }
.grid.confusion { grid-template-columns: minmax(0, 1.15fr) minmax(300px, 1fr); align-items: start; }
.verdict { background: #eef4ff; border-left: 4px solid var(--blue); padding: 12px 16px; border-radius: 8px;
           margin: 14px 0 0; font-size: 15px; }
.verdict.none { background: #ecf8f2; border-color: var(--green); }
.verdict.mild { background: #fff6e5; border-color: var(--amber); }
.verdict.clear { background: #fdecea; border-color: var(--red); }
.badge { display: inline-block; font-size: 11.5px; font-weight: 600; padding: 1px 8px; border-radius: 999px;
         vertical-align: middle; background: #eef0f4; color: var(--muted); }
.badge.best { background: var(--blue); color: #fff; }
.badge.ok, .badge.level-none { background: #dcf3e7; color: var(--green); }
.badge.warn, .badge.level-mild { background: #fdefd3; color: var(--amber); }
.badge.level-clear { background: #fbdcd9; color: var(--red); }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 700; border-bottom: none; }
tbody tr:hover { background: #f8f9fc; }
figure { margin: 12px 0 0; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { text-align: center; color: var(--muted); font-size: 13px; margin-top: 4px; }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em;
       background: #eef0f4; padding: 1px 5px; border-radius: 4px; }
ul.pairs { margin: 0; padding-left: 18px; font-size: 14px; }
footer { color: var(--muted); font-size: 12.5px; padding-bottom: 28px; }
@media (max-width: 800px) { .grid.confusion, .grid.two { grid-template-columns: 1fr; } }
"""
