"""How runs, evaluations and comparisons show themselves in a notebook: small HTML cards with inline figures.

Jupyter shows an object through its `_repr_html_`, or through a formatter registered for its class: digits
registers `run_card` (TrainedRun), `evaluation_table` (Evaluation) and `comparison_table` (Comparison) by class
name when imported in a notebook (digits/__init__.py), since training and evaluation never import reporting;
an EvaluatedModel (digits.reporting.evaluated_model, registered too, since it extends Evaluation) and
digits.study's StudyResult call `evaluation_card` and `comparison_card`. The cards are
templates (templates/notebook/), and the figures come from digits.reporting.plots, the same functions the CLI
and the HTML report draw with.
"""

from __future__ import annotations

from digits.evaluation.comparison import Comparison
from digits.evaluation.metrics import Evaluation, overfitting_verdict
from digits.reporting import plots
from digits.reporting.templating import render


def run_curves(run):
    """A trained run's learning curves (a Figure), titled with its preset."""
    return plots.learning_curves(run.history, title=run.recipe.preset, loss_name=plots.loss_name(run.config))


def run_card(run) -> str:
    """A trained run: its validation result, cost, overfitting verdict and learning curves."""
    trained = len(run.history.get("loss", [])) > 0
    validated = run.metrics.get("validation_accuracy") is not None
    return render("notebook/run_card.html.j2", run=run, metrics=run.metrics,
                  verdict=overfitting_verdict(run.history) if trained and validated else None,
                  curves_png=plots.to_png(run_curves(run)) if trained else None)


def evaluation_card(evaluated) -> str:
    """An evaluated model (an EvaluatedModel): test accuracy, mistakes, loss, verdicts and its figures."""
    return render("notebook/evaluation_card.html.j2", evaluated=evaluated)


def comparison_card(compared) -> str:
    """Several evaluated models (digits.study.StudyResult) side by side, the verdict and the comparison chart."""
    return render("notebook/comparison_card.html.j2", compared=compared)


def evaluation_table(evaluation: Evaluation) -> str:
    """An Evaluation's numbers as a small table (the figures come from digits.reporting.plots)."""
    return render("notebook/evaluation_table.html.j2", evaluation=evaluation)


def presets_table(presets) -> str:
    """The presets (digits.presets()) as a table: name, model, epochs, what each is for, the study's result."""
    return render("notebook/presets_table.html.j2", presets=presets.values())


def per_class_table(table) -> str:
    """Precision, recall and F1 of each digit (an EvaluatedModel's `per_class_table()`), the weakest F1 marked."""
    return render("notebook/per_class_table.html.j2", table=table)


# How many screen pixels each of the 28×28 pixels the model read takes in a card: as tall as the original's copy.
VIEW_SCALE = 6


def file_result_card(result) -> str:
    """One picture file read by `digits.predict` (a FileResult): the original beside the 28×28 view the model
    read, the digit, the top 3 and the digit score (for a number: the number, and each digit's reading and view),
    or the reason the file could not be read."""
    import io

    from PIL import Image

    def png(image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    side = 28 * VIEW_SCALE
    views = [] if result.prediction is None else [
        png(Image.fromarray(view).resize((side, side), Image.Resampling.NEAREST)) for view in result.prediction.views]
    original = png(result.original) if result.original is not None else None
    return render("notebook/file_result_card.html.j2", result=result, view_pngs=views, original_png=original)


# A folder of a thousand photos must not make a notebook cell of a thousand cards (each holds its pictures).
MAX_CARDS_SHOWN = 24


def file_results_cards(results) -> str:
    """Every file of one `digits.predict` call (a FileResults): how many got each verdict, then each file's card,
    the first MAX_CARDS_SHOWN of them."""
    from digits.inference.files import UNREADABLE  # only a folder's answers need the inference stage's names
    from digits.inference.numbers import NOT_A_NUMBER, NUMBER
    from digits.inference.prediction import DIGIT, NOT_A_DIGIT

    cards = [file_result_card(result) for result in results[:MAX_CARDS_SHOWN]]
    described = {DIGIT: "read as a digit", NUMBER: "read as a number", NOT_A_DIGIT: "not a digit",
                 NOT_A_NUMBER: "not a number", UNREADABLE: "could not be read"}
    return render("notebook/file_results.html.j2", counts=results.counts(), described=described, total=len(results),
                  cards=cards)


def comparison_table(comparison: Comparison) -> str:
    """A Comparison's ranking, best first, and its verdict."""
    return render("notebook/comparison_table.html.j2", comparison=comparison)
