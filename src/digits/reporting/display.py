"""How runs, evaluations and comparisons show themselves in a notebook: small HTML cards with inline figures.

Jupyter calls an object's `_repr_html_` to display it; the objects' methods call these functions. The
figures come from digits.reporting.plots, the same functions the CLI and the HTML report draw with.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from digits.evaluation.comparison import format_duration
from digits.evaluation.metrics import overfitting_verdict
from digits.reporting import plots

# Wide enough to read, narrow enough that a card and its figures fit beside a notebook's code.
FIGURE_WIDTH_PX = 460
CARD_STYLE = ("font-family:-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;border:1px solid #e4e7ec;"
              "border-radius:10px;padding:12px 16px;margin:4px 0;max-width:980px;color:#1f2430;background:#fff")
VERDICT_COLORS = {"none": "#1f8a5b", "mild": "#b86e00", "clear": "#b3261e", "unknown": "#667085"}


def run_curves(run):
    """A trained run's learning curves (a Figure), titled with its preset."""
    return plots.learning_curves(run.history, title=run.recipe.preset, loss_name=plots.loss_name(run.config))


def run_card(run) -> str:
    """A trained run: its validation result, cost, overfitting verdict and learning curves."""
    metrics = run.metrics
    accuracy = metrics.get("validation_accuracy")
    headline = ("no validation: score it with `digits.evaluate(run)`" if accuracy is None else
                f"{100 * accuracy:.2f} % validation accuracy ({metrics.get('validation')}), "
                f"validation loss {metrics['validation_loss']:.4f}")
    facts = [f"{metrics.get('epochs')} epochs", f"{metrics.get('training_seconds', 0):.1f} s of training",
             f"{metrics.get('parameters', 0):,} parameters", f"<code>{_e(run.folder)}</code>"]
    verdict = ""
    if len(run.history.get("loss", [])) and accuracy is not None:
        verdict = _verdict(overfitting_verdict(run.history))
    figure = _image(plots.to_png(run_curves(run)), "learning curves") if len(run.history.get("loss", [])) else ""
    return _card(f"run · {_e(run.recipe.preset)} ({_e(run.recipe.model)})", headline, facts, verdict, [figure])


def evaluation_card(evaluated) -> str:
    """An evaluated model: test accuracy, mistakes, loss, verdicts and its figures, small."""
    evaluation = evaluated.evaluation
    headline = (f"{100 * evaluation.accuracy:.2f} % test accuracy · {evaluation.mistake_count:,} mistakes in "
                f"{evaluation.count:,} · cross-entropy {evaluation.loss:.4f}")
    pairs = ", ".join(f"{pair.actual}→{pair.predicted} ({pair.count})" for pair in evaluation.confused_pairs[:3])
    facts = [f"most confused: {pairs or 'none'}", f"report: <code>{_e(evaluated.report)}</code>"]
    verdict = _verdict(evaluated.overfitting) if evaluated.overfitting else ""
    figures = [_file_image(evaluated.figures.get(key), key) for key in ("curves", "confusion", "mistakes")]
    return _card(f"evaluation · {_e(evaluated.name)}", headline, facts, verdict, figures)


def comparison_card(compared) -> str:
    """Several evaluated models side by side, the verdict sentence and the comparison chart."""
    comparison = compared.comparison
    rows = "".join(
        f"<tr><td>{_e(model.name)}{' ★' if model.name in comparison.winners else ''}</td>"
        f"<td style='text-align:right'>{100 * model.accuracy:.2f} %</td>"
        f"<td style='text-align:right'>{model.mistakes:,} / {model.count:,}</td>"
        f"<td style='text-align:right'>{model.loss:.4f}</td>"
        f"<td style='text-align:right'>{format_duration(model.training_seconds)}</td></tr>"
        for model in comparison.models)
    table = ("<table style='border-collapse:collapse;font-size:13px'><tr><th>model</th><th>test accuracy</th>"
             f"<th>mistakes</th><th>loss</th><th>training</th></tr>{rows}</table>")
    chart = _file_image(compared.folder / "comparison.png", "comparison chart")
    facts = [f"report: <code>{_e(compared.report)}</code>"]
    return _card("comparison", table, facts, f"<p>{_e(comparison.sentence)}</p>", [chart])


def _card(title: str, headline: str, facts: list[str], verdict: str, figures: list[str]) -> str:
    return (f'<div style="{CARD_STYLE}"><div style="font-weight:600;font-size:15px">{title}</div>'
            f'<div style="font-size:14px;margin:4px 0">{headline}</div>'
            f'<div style="color:#667085;font-size:12.5px">{" · ".join(facts)}</div>{verdict}'
            f'<div style="display:flex;flex-wrap:wrap;gap:8px;margin-top:6px">{"".join(figures)}</div></div>')


def _verdict(verdict) -> str:
    color = VERDICT_COLORS.get(verdict.level, "#667085")
    return (f'<p style="border-left:4px solid {color};padding:4px 10px;margin:8px 0 0;font-size:13px">'
            f"{_e(verdict.sentence)}</p>")


def _file_image(path: Path | None, caption: str) -> str:
    if path is None or not Path(path).is_file():
        return ""
    return _image(Path(path).read_bytes(), caption)


def _image(png: bytes, caption: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{_e(caption)}" style="max-width:{FIGURE_WIDTH_PX}px">'


def _e(value) -> str:
    return html.escape(str(value), quote=True)
