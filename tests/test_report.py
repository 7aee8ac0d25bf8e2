"""The HTML report: every section present, figures embedded, nothing fetched, all text escaped."""

import re

import numpy as np
import pytest

from digits.evaluation.comparison import ModelSummary, compare
from digits.evaluation.metrics import evaluate, overfitting_verdict
from digits.reporting import plots
from digits.reporting.html import ComparisonSection, DataSection, ModelSection, render_report, write_report


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
    evaluation = evaluate(labels, probabilities)
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
    model = ModelSection(name="quick-cnn", run_path="runs/20250101-000000-quick-cnn", config=config,
                         metrics=metrics, architecture=layers, evaluation=evaluation,
                         overfitting=overfitting_verdict(history), figures=figures)
    # An ensemble has no learning curves of its own.
    ensemble = ModelSection(name="ensemble <b>3</b>", run_path="3 members", config={}, metrics={},
                            architecture=[], evaluation=evaluation, overfitting=None,
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
    assert f"{model.evaluation.mistake_count:,} mistakes" in page
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

    from digits.study import compare_models, evaluate_predictions

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 200)
    images = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
    members = [rng.dirichlet(np.ones(10), 200) + 3 * np.eye(10)[labels] for _ in range(3)]
    averaged = np.mean(members, axis=0)

    ensemble = evaluate_predictions("ensemble", labels, averaged, images, tmp_path / "ensemble", source="3 members")
    single = evaluate_predictions("member 1", labels, members[0], images, tmp_path / "member", source="run 1",
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
