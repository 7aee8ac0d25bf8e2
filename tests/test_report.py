"""The HTML report and the notebook cards: every section present, figures embedded, nothing fetched, all text
escaped (run names and paths are a user's), and Evaluation and Comparison shown as tables in Jupyter."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from digits.evaluation.comparison import ModelSummary, compare
from digits.evaluation.metrics import evaluation_fields, overfitting_verdict, score
from digits.reporting import display, plots
from digits.reporting.html import ComparisonSection, DataSection, ModelSection, render_report, write_report

# A run name, preset or path a user (or someone who sent them a run folder) chose.
HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    probabilities = rng.dirichlet(np.ones(10), 300)
    probabilities[np.arange(250), labels[:250]] += 5  # 250 of 300 clearly right
    images = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    epochs = np.arange(1, 6)
    history = {"epoch": epochs, "loss": 1 / epochs, "accuracy": 1 - 0.1 / epochs,
               "val_loss": 1 / epochs + 0.05 * epochs, "val_accuracy": 1 - 0.15 / epochs}
    evaluation = score(labels, probabilities)
    figures = {"curves": folder / "curves.png", "confusion": folder / "confusion.png",
               "mistakes": folder / "mistakes.png"}
    plots.learning_curves(history, figures["curves"])
    plots.confusion_figure(evaluation.confusion, figures["confusion"])
    plots.mistakes_gallery(images, evaluation.mistakes, figures["mistakes"])
    plots.sample_grid(images, labels, folder / "samples.png")
    plots.comparison_chart(summaries := [ModelSummary.from_evaluation("quick-cnn", evaluation, training_seconds=12.5,
                                                                      epochs=5),
                                         ModelSummary.from_evaluation("ensemble <b>3</b>", evaluation)],
                           folder / "chart.png")
    config = {"preset": "quick-cnn", "recipe": {"model": "cnn", "loss": "categorical_crossentropy",
                                                "optimizer": "adam", "epochs": 5, "validation": "test"},
              "versions": {"keras": "3.15"}, "backend": "tensorflow"}
    metrics = {"status": "complete", "epochs": 5, "training_seconds": 12.5, "parameters": 34_826}
    layers = [{"layer": "conv2d", "type": "Conv2D", "output_shape": "26 × 26 × 32", "parameters": 320},
              {"layer": "dense", "type": "Dense", "output_shape": "10", "parameters": 16_010}]
    model = ModelSection(**evaluation_fields(evaluation), name="quick-cnn", run_path="runs/20250101-000000-quick-cnn",
                         config=config, metrics=metrics, architecture=layers,
                         overfitting=overfitting_verdict(history), figures=figures)
    # An ensemble has no learning curves of its own.
    ensemble = ModelSection(**evaluation_fields(evaluation), name="ensemble <b>3</b>", run_path="3 members",
                            config={}, metrics={}, architecture=[], overfitting=None,
                            figures={key: figures[key] for key in ("confusion", "mistakes")})
    data = DataSection(source="vendored copy", verified=True, train_class_counts=[6000] * 10,
                       test_class_counts=[1000] * 10, evaluated_count=300,
                       sample_grid=folder / "samples.png")
    comparison = ComparisonSection(compare(summaries), folder / "chart.png")
    return model, ensemble, data, comparison


def test_report_has_every_section_in_the_study_order(sections):
    model, ensemble, data, comparison = sections
    page = render_report(title="digits · the study", models=[model, ensemble], data=data, comparison=comparison)

    positions = [page.index(f'<section id="{key}"') for key in ("summary", "data", "model-quick-cnn", "comparison")]
    assert positions == sorted(positions)
    for heading in ("Architecture", "Configuration", "Learning curves", "Per digit", "Most confused", "Mistakes"):
        assert f">{heading}<" in page
    assert model.overfitting.sentence.split(":")[0] in page  # the verdict is stated
    assert f"{model.mistake_count:,} mistakes" in page
    assert "12.5 s" in page  # the training time from metrics.json
    assert "16,010" in page and "26 × 26 × 32" in page  # the architecture table
    assert "tie on accuracy" in page  # both rows are the same evaluation, so the comparison calls a tie


def test_report_embeds_every_figure_and_fetches_nothing(sections, tmp_path):
    model, ensemble, data, comparison = sections
    path = write_report(tmp_path / "report.html", title="study", models=[model, ensemble], data=data,
                        comparison=comparison)
    page = path.read_text(encoding="utf-8")

    # Sample grid, curves, confusion and gallery of the model, confusion and gallery of the ensemble, chart.
    assert page.count('src="data:image/png;base64,') == 1 + 3 + 2 + 1
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(source.startswith(("data:", "#")) for source in sources)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page
    assert not (tmp_path / "report.html.partial").exists()


def test_text_is_escaped_and_an_ensemble_without_curves_says_so(sections):
    model, ensemble, data, comparison = sections
    page = render_report(title="<script>alert(1)</script>", models=[ensemble])

    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "ensemble &lt;b&gt;3&lt;/b&gt;" in page and "<b>3</b>" not in page
    assert "no curves to judge" in page and "No single architecture" in page


def test_an_ensembles_probabilities_get_an_evaluation_folder_and_a_comparison(tmp_path):
    import json

    from digits.reporting.evaluated_model import report_predictions
    from digits.study import compare_models

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 200)
    images = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    members = [rng.dirichlet(np.ones(10), 200) + 3 * np.eye(10)[labels] for _ in range(3)]
    averaged = np.mean(members, axis=0)

    ensemble = report_predictions("ensemble", labels, averaged, images, tmp_path / "ensemble", source="3 members")
    single = report_predictions("member 1", labels, members[0], images, tmp_path / "member", source="run 1",
                                metrics={"training_seconds": 10.0, "epochs": 3})
    written = sorted(path.name for path in (tmp_path / "ensemble").iterdir())
    # No curves to draw; the reliability diagram shows the ensemble's calibration.
    assert written == ["confusion.png", "evaluation.json", "mistakes.png", "reliability.png", "report.html"]
    numbers = json.loads((tmp_path / "ensemble" / "evaluation.json").read_text())
    assert numbers["overfitting"] is None and numbers["evaluation"]["count"] == 200
    assert 0 <= numbers["calibration"]["expected_calibration_error"] <= 1

    (tmp_path / "comparison").mkdir()
    comparison = compare_models([single, ensemble], tmp_path / "comparison")
    assert {model.name for model in comparison.models} == {"ensemble", "member 1"}
    assert 'id="comparison"' in (tmp_path / "comparison" / "report.html").read_text(encoding="utf-8")


def test_a_hostile_model_name_is_escaped_everywhere_the_report_shows_it(sections):
    model, ensemble, data, comparison = sections
    hostile = dataclasses.replace(model, name=HOSTILE, run_path=f"runs/{HOSTILE}")
    summaries = [ModelSummary.from_evaluation(HOSTILE, model, training_seconds=12.5, epochs=5),
                 ModelSummary.from_evaluation("plain", model)]
    page = render_report(title="study", models=[hostile, ensemble], data=data, command=f"digits run {HOSTILE}",
                         comparison=ComparisonSection(compare(summaries), conclusions=[f"{HOSTILE} ties."]))

    assert "<script" not in page
    # The byline's command, the nav, the summary card, the section heading and its run folder, the comparison
    # table, its verdict sentence and the conclusions (twice: the headline finding and the list).
    assert page.count(ESCAPED) >= 9
    assert 'href="#model--script-alert-1---script-"' in page  # the anchor keeps letters and digits only


def test_notebook_cards_escape_names_and_paths(sections, tmp_path):
    from digits.reporting.evaluated_model import report_predictions
    from digits.study import StudyResult

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, 100)
    probabilities = rng.dirichlet(np.ones(10), 100) + 3 * np.eye(10)[labels]
    images = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    evaluated = report_predictions(HOSTILE, labels, probabilities, images, tmp_path / "model", source="members")
    card = display.evaluation_card(evaluated)
    assert "<script" not in card and f"evaluation · {ESCAPED}" in card
    assert card.count('src="data:image/png;base64,') == 2  # the confusion matrix and the mistakes, small
    assert "<script" not in evaluated.report.read_text(encoding="utf-8")

    plain = dataclasses.replace(evaluated, name="plain")
    result = StudyResult(tmp_path / HOSTILE, [evaluated, plain], compare([evaluated.summary(), plain.summary()]))
    card = display.comparison_card(result)
    assert "<script" not in card and card.count(ESCAPED) >= 3  # the table, the sentence, the report's path

    # A stand-in for a TrainedRun (a real one needs Keras): the card reads its recipe, metrics and folder.
    run = SimpleNamespace(recipe=SimpleNamespace(preset=HOSTILE, model="mlp"), config={}, history={},
                          metrics={"epochs": 2, "training_seconds": 3.0, "parameters": 50_890},
                          folder=Path("runs") / HOSTILE)
    card = display.run_card(run)
    assert "<script" not in card and f"run · {ESCAPED} (mlp)" in card and f"<code>runs/{ESCAPED}</code>" in card
    assert "no validation" in card and "50,890 parameters" in card


def test_a_template_given_too_little_fails_instead_of_printing_nothing():
    import jinja2

    from digits.reporting.templating import render

    with pytest.raises(jinja2.UndefinedError, match="evaluation"):
        render("notebook/evaluation_table.html.j2")


def test_jupyter_shows_evaluations_and_comparisons_as_escaped_tables(tmp_path):
    # A real IPython shell, started before `import digits`, as in a notebook; digits registers its formatters.
    code = """
import json, sys
import numpy as np
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
import digits
from digits.evaluation.comparison import ModelSummary, compare
from digits.evaluation.metrics import score
from digits.reporting.evaluated_model import report_predictions

labels, probabilities = np.array([0, 1, 2, 3]), np.eye(10)[[0, 1, 2, 5]] * 0.9 + 0.01
evaluation = score(labels, probabilities)
comparison = compare([ModelSummary("a <b>", 0.99, 0.1, 100, 10_000), ModelSummary("c", 0.98, 0.1, 200, 10_000)])
# An evaluated model is an Evaluation too, but shows its own card, not the Evaluation's table.
evaluated = report_predictions("four digits", labels, probabilities, np.zeros((4, 28, 28), np.uint8), sys.argv[1],
                               source="test")
print(json.dumps([shell.display_formatter.format(value)[0].get("text/html")
                  for value in (evaluation, comparison, evaluated)]
                 + [("digits.training.fit", "TrainedRun") in shell.display_formatter.formatters["text/html"]
                    .deferred_printers]))  # a run's card, registered without loading Keras
"""
    shown = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    evaluation_html, comparison_html, evaluated_html, run_card_registered = json.loads(shown.stdout.splitlines()[-1])
    assert run_card_registered
    assert "75.00 %" in evaluation_html and "1 of 4" in evaluation_html and "3 read as 5 (1)" in evaluation_html
    assert "a &lt;b&gt; ★" in comparison_html and "99.00 %" in comparison_html and "is better" in comparison_html
    assert "evaluation · four digits" in evaluated_html and "75.00 % test accuracy" in evaluated_html
    assert "data:image/png;base64," in evaluated_html
