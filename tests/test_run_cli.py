"""`digits run`, `digits evaluate` and `digits compare` as a user runs them: real subprocesses, tiny settings."""

import html
import json
import shutil
from pathlib import Path

import pytest

from conftest import folder_digest, run_digits

pytestmark = pytest.mark.slow

TINY = ["--train-limit", "2000", "--test-limit", "500", "--epochs", "1"]
# Two epochs: the smallest study whose learning curves have more than one point.
SMALL_STUDY = ["--train-limit", "2000", "--test-limit", "500", "--epochs", "2"]
QUICK_PRESETS = ["quick-shallow-mse", "quick-shallow-poisson", "quick-shallow", "quick-cnn"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study, shared by the tests below: (the finished process, the runs folder)."""
    workdir = tmp_path_factory.mktemp("study")
    finished = run_digits("run", "--runs-dir", workdir / "runs", *SMALL_STUDY, cwd=workdir)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return finished, workdir / "runs"


def run_folders(runs_dir):
    return sorted(path for path in runs_dir.iterdir() if (path / "config.json").is_file())


def run_of(runs_dir, preset):
    return next(path for path in run_folders(runs_dir) if path.name.split("-", 2)[2] == preset)


def test_run_trains_evaluates_and_reports_every_model_of_the_study(study):
    finished, runs_dir = study
    runs = run_folders(runs_dir)
    # The shallow networks' folders are made in the same second (they train together), so compare as sets.
    assert sorted(path.name.split("-", 2)[2] for path in runs) == sorted(QUICK_PRESETS)
    for run in runs:
        evaluation_dir = run / "evaluation"
        for name in ("evaluation.json", "report.html", "learning_curves.png", "confusion.png", "mistakes.png"):
            assert (evaluation_dir / name).stat().st_size > 0, name
        numbers = json.loads((evaluation_dir / "evaluation.json").read_text())
        assert numbers["evaluation"]["count"] == 500  # the run's --test-limit was respected
        assert sum(map(sum, numbers["evaluation"]["confusion"])) == 500
        assert numbers["architecture"] and numbers["parameters"] in (50_890, 34_826)
        assert numbers["overfitting"]["epochs"] == 2  # a curve of two points, not one dot

    studies = [path for path in runs_dir.iterdir() if path.name.endswith("-study")]
    assert len(studies) == 1
    pointer = json.loads((studies[0] / "study.json").read_text())
    assert sorted(Path(path).name for path in pointer["runs"]) == sorted(run.name for run in runs)
    page = (studies[0] / "report.html").read_text(encoding="utf-8")
    sections = ('id="data"', 'id="comparison"', 'id="conclusions"', *(f'id="model-{name}"' for name in QUICK_PRESETS))
    for section in sections:
        assert section in page

    output = finished.stdout
    assert "test accuracy" in output and all(name in output for name in QUICK_PRESETS)
    assert f"Report: {studies[0] / 'report.html'}" in output
    accuracy = json.loads((runs[1] / "evaluation" / "evaluation.json").read_text())["evaluation"]["accuracy"]
    assert f"{100 * accuracy:.2f} %" in output  # the printed table shows the computed figure


def test_the_study_records_where_its_seconds_went(study):
    _, runs_dir = study
    studies = [path for path in runs_dir.iterdir() if path.name.endswith("-study")]
    seconds = json.loads((studies[0] / "study.json").read_text())["seconds"]
    # The three shallow networks train together, in one fit(); the CNN alone.
    trainings = {phase: phase.removeprefix("train ").split(" + ") for phase in seconds if phase.startswith("train ")}
    assert list(trainings.values()) == [QUICK_PRESETS[:3], QUICK_PRESETS[3:]]
    for name in QUICK_PRESETS:
        training = json.loads((run_of(runs_dir, name) / "metrics.json").read_text())["training_seconds"]
        phase = next(phase for phase, presets in trainings.items() if name in presets)
        # Training a model takes at least its fit, and its figures are drawn (in a second thread) after it.
        assert seconds[phase] >= training > 0
        assert seconds[f"figures and report {name}"] > 0
        assert list(seconds).index(f"figures and report {name}") > list(seconds).index(phase)
    assert seconds["comparison and study report"] > 0


def test_the_study_compares_its_two_shallow_configurations_against_the_studys_own_figures(study):
    finished, runs_dir = study
    studies = [path for path in runs_dir.iterdir() if path.name.endswith("-study")]
    conclusions = json.loads((studies[0] / "study.json").read_text())["conclusions"]
    configurations = conclusions[0]
    mse, poisson = (json.loads((run_of(runs_dir, name) / "evaluation" / "evaluation.json").read_text())["evaluation"]
                    for name in ("quick-shallow-mse", "quick-shallow-poisson"))
    better = "MSE + SGD" if mse["accuracy"] >= poisson["accuracy"] else "Poisson + Adadelta"
    assert configurations.startswith(f"Of the study's two configurations of the shallow network, {better}")
    assert f"{100 * mse['accuracy']:.2f} %" in configurations and f"{100 * poisson['accuracy']:.2f} %" in configurations
    assert "90.34 % after 500 epochs" in configurations and "about 82 % after 500 epochs" in configurations
    # Each model is set beside the study's figure for it, and says why its training ended.
    for name in QUICK_PRESETS:
        line = next(line for line in conclusions if line.startswith(f"{name}:"))
        assert "its 2 planned epochs" in line and "the study:" in line
    page = (studies[0] / "report.html").read_text(encoding="utf-8")
    assert configurations in html.unescape(page) and configurations in finished.stdout
    # Both configurations' learning curves have a point per epoch.
    for name in ("quick-shallow-mse", "quick-shallow-poisson"):
        history = (run_of(runs_dir, name) / "history.csv").read_text().splitlines()
        assert len(history) == 1 + 2
        assert (run_of(runs_dir, name) / "evaluation" / "learning_curves.png").stat().st_size > 0


def test_evaluate_writes_where_asked_and_prints_the_report_path(study, tmp_path):
    _, runs_dir = study
    run = run_folders(runs_dir)[0]
    finished = run_digits("evaluate", run, "--out", tmp_path / "again", cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    accuracy = json.loads((tmp_path / "again" / "evaluation.json").read_text())["evaluation"]["accuracy"]
    assert f"Test set: {100 * accuracy:.2f} % accuracy" in (tmp_path / "again" / "report.html").read_text()
    assert f"Report:  {tmp_path / 'again' / 'report.html'}" in finished.stdout
    verdict = json.loads((tmp_path / "again" / "evaluation.json").read_text())["overfitting"]["sentence"]
    assert verdict in finished.stdout


def test_compare_writes_a_new_comparison_folder_and_only_reads_the_runs(study, tmp_path):
    _, runs_dir = study
    shallow, cnn = run_of(runs_dir, "quick-shallow"), run_of(runs_dir, "quick-cnn")
    before = {run: folder_digest(run) for run in (shallow, cnn)}
    finished = run_digits("compare", shallow, cnn, "--out", tmp_path / "comparison", cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    assert {run: folder_digest(run) for run in before} == before
    for run in (shallow, cnn):  # Each run's evaluation is written inside the comparison folder instead.
        assert (tmp_path / "comparison" / run.name / "evaluation.json").is_file()
    summary = json.loads((tmp_path / "comparison" / "comparison.json").read_text())
    assert {row["name"] for row in summary["comparison"]["models"]} == {"quick-shallow", "quick-cnn"}
    assert summary["comparison"]["sentence"] in finished.stdout
    page = (tmp_path / "comparison" / "report.html").read_text(encoding="utf-8")
    assert 'id="model-quick-shallow"' in page and 'id="model-quick-cnn"' in page and 'id="comparison"' in page


def test_compare_scores_runs_tested_on_different_images_on_the_images_they_share(study, tmp_path):
    _, runs_dir = study
    fewer = run_digits("train", "quick-shallow", "--train-limit", "500", "--test-limit", "300", "--epochs", "1",
                   "--runs-dir", tmp_path / "runs", "--quiet", cwd=tmp_path)
    assert fewer.returncode == 0, fewer.stderr
    (small_run,) = run_folders(tmp_path / "runs")
    finished = run_digits("compare", run_of(runs_dir, "quick-cnn"), small_run, "--out", tmp_path / "comparison",
                      cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    summary = json.loads((tmp_path / "comparison" / "comparison.json").read_text())
    assert {row["count"] for row in summary["comparison"]["models"]} == {300}  # 500 and 300: both on the first 300
    assert "out of 300" in summary["comparison"]["sentence"]
    assert "scored on the first 300" in summary["conclusions"][0]
    page = (tmp_path / "comparison" / "report.html").read_text(encoding="utf-8")
    assert "<strong>300</strong> test images" in page
    # The study run's own evaluation (on its 500 images) is left as it was.
    own = json.loads((run_of(runs_dir, "quick-cnn") / "evaluation" / "evaluation.json").read_text())
    assert own["evaluation"]["count"] == 500


@pytest.fixture
def damaged_runs(study, tmp_path):
    """Copies of a good run, each broken the way a user's folder might be."""
    _, runs_dir = study
    good = run_folders(runs_dir)[0]
    broken = {}
    for kind in ("incomplete", "corrupted-config", "corrupted-model"):
        broken[kind] = shutil.copytree(good, tmp_path / kind, ignore=shutil.ignore_patterns("evaluation"))
    (broken["incomplete"] / "metrics.json").unlink()
    (broken["corrupted-config"] / "config.json").write_text("{not json")
    (broken["corrupted-model"] / "model.keras").write_bytes(b"not a zip file")
    (tmp_path / "not-a-run").mkdir()
    broken["not-a-run"] = tmp_path / "not-a-run"
    broken["missing"] = tmp_path / "nowhere"
    return good, broken


@pytest.mark.parametrize("kind, words", [("missing", "no run folder"), ("not-a-run", "not a run folder"),
                                         ("incomplete", "incomplete"), ("corrupted-config", "damaged"),
                                         ("corrupted-model", "damaged")])
def test_evaluate_refuses_a_bad_run_folder_in_one_sentence(damaged_runs, tmp_path, kind, words):
    _, broken = damaged_runs
    finished = run_digits("evaluate", broken[kind], cwd=tmp_path)

    assert finished.returncode == 1
    # TensorFlow may log its own start-up lines first; the user's answer is the last line, and only one.
    last_line = finished.stderr.strip().splitlines()[-1]
    assert last_line.startswith("digits: error: ") and words in last_line
    assert "Traceback" not in finished.stderr and finished.stderr.count("digits: error:") == 1
    assert not (broken[kind] / "evaluation").exists()


def test_compare_refuses_a_bad_folder_or_a_single_run(damaged_runs, tmp_path):
    good, broken = damaged_runs
    bad = run_digits("compare", good, broken["incomplete"], cwd=tmp_path)
    assert bad.returncode == 1 and "incomplete" in bad.stderr and "Traceback" not in bad.stderr

    single = run_digits("compare", good, cwd=tmp_path)
    assert single.returncode == 1 and "at least two run folders" in single.stderr


def test_run_refuses_to_write_into_a_folder_that_holds_files(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "report.html").write_text("someone's report")
    finished = run_digits("run", "--runs-dir", tmp_path / "runs", "--out", tmp_path / "taken", *TINY, cwd=tmp_path)

    assert finished.returncode == 1 and "nothing is overwritten" in finished.stderr
    assert (tmp_path / "taken" / "report.html").read_text() == "someone's report"
    assert not (tmp_path / "runs").exists()  # refused before any training
