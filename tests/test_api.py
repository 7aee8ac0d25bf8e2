"""The Python API a notebook uses: lazy top-level names, a run that holds its model, an evaluation that carries its
scores, a comparison that leaves its runs untouched, objects that show themselves as HTML, TensorBoard logs, and
errors in the library's words that the CLI turns into flags."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

import digits
from conftest import folder_digest
from digits.inference.classifier import PRETRAINED_DIR
from digits.reporting.display import run_card

SMALL = dict(train_limit=2000, test_limit=500, epochs=2)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_digits_and_help_load_no_tensorflow():
    # `digits --help` and reading presets leave TensorFlow, Keras and matplotlib unloaded.
    code = ("import sys, digits, digits.cli\n"
            "try:\n    digits.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "digits.get_preset('quick-cnn', epochs=2), digits.presets()\n"
            "import pydoc; pydoc.render_doc(digits)\n"
            "heavy = sorted(name for name in ('tensorflow', 'keras', 'matplotlib') if name in sys.modules)\n"
            "print('LOADED', heavy)")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout


def test_no_public_function_shares_its_name_with_a_module():
    import importlib.util
    import pkgutil

    modules = {module.name for module in pkgutil.walk_packages(digits.__path__, "digits.")}
    assert {"digits.training.fit", "digits.evaluation.metrics", "digits.inference.files"} <= modules
    for name in digits.__all__:
        assert f"digits.{name}" not in modules and importlib.util.find_spec(f"digits.{name}") is None, name
    # So importing every module leaves each public name the function it is (no attribute patching needed).
    for module in modules - {"digits.__main__"}:
        importlib.import_module(module)
    assert all(callable(getattr(digits, name)) for name in ("train", "evaluate", "predict", "compare"))
    assert digits.train.__module__ == "digits.api" and digits.predict.__module__ == "digits.api"
    assert set(digits.__all__) >= {"load_mnist", "get_preset", "train", "evaluate", "compare", "predict",
                                   "run_study", "load_run", "presets", "build_model"}
    with pytest.raises(AttributeError):
        digits.no_such_function  # noqa: B018


def test_help_shows_the_public_api_first():
    import pydoc

    text = pydoc.render_doc(digits, renderer=pydoc.plaintext)
    before_the_modules = text[:text.index("PACKAGE CONTENTS")]
    for name in set(digits.__all__) - {"__version__"}:
        assert f"    {name}(" in before_the_modules or f"    {name} " in before_the_modules, name
    assert dir(digits) == sorted(digits.__all__)  # tab completion offers the API, not os, sys or importlib


def test_presets_and_predictions_print_short_and_presets_show_as_a_table():
    presets = digits.presets()
    assert repr(presets).startswith("Presets(10: seed-shallow-mse, ") and len(repr(presets)) < 200
    assert repr(presets["quick-cnn"]).startswith("Preset('quick-cnn': cnn, 7 epochs; ") and "Recipe(" not in repr(
        presets["quick-cnn"])
    from digits.reporting.display import presets_table  # what Jupyter shows (digits registers it by class name)

    page = presets_table(presets)
    assert page.count("<tr>") == 1 + len(presets) and "<code>quick-cnn</code>" in page

    prediction = digits.predict(digits.load_mnist().test_images[:2])
    for printed in (repr(prediction), repr(prediction[0])):
        assert len(printed) < 120 and "array" not in printed and "\n" not in printed, printed


def test_every_class_registered_for_notebooks_exists_where_it_is_registered():
    """Jupyter finds each class by its module and name: a class that moved would silently show as a plain repr."""
    import importlib

    from digits import _NOTEBOOK_DISPLAYS
    from digits.reporting import display

    for (module, class_name), function in _NOTEBOOK_DISPLAYS.items():
        assert isinstance(getattr(importlib.import_module(module), class_name), type), (module, class_name)
        assert callable(getattr(display, function)), function
    assert type(digits.presets()).__module__ == "digits.training.presets"


def test_get_preset_takes_overrides_and_keeps_the_rest():
    recipe = digits.get_preset("quick-cnn", epochs=2, target_accuracy=None, validation="none")
    assert (recipe.epochs, recipe.target_accuracy, recipe.validation) == (2, None, "none")
    assert recipe.learning_rate == digits.get_preset("quick-cnn").learning_rate  # None and absent keep the preset's
    assert "quick-cnn" in digits.presets()


def test_library_errors_name_parameters_and_the_cli_names_flags():
    with pytest.raises(digits.DigitsError, match="`epochs` must be between 1 and 100000"):
        digits.get_preset("quick-shallow", epochs=0)
    with pytest.raises(digits.DigitsError, match="`epoch` is not a recipe setting; did you mean `epochs`"):
        digits.get_preset("quick-shallow", epoch=3)
    with pytest.raises(digits.DigitsError, match="`epochs` must be a number, not '3'"):
        digits.get_preset("quick-shallow", epochs="3")
    with pytest.raises(digits.DigitsError, match="Expected a run"):
        digits.evaluate(None)
    with pytest.raises(digits.DigitsError, match='`verbose` is 0, 1, 2 or "epochs"'):
        digits.train("quick-shallow", verbose="loud", runs_dir="/nonexistent-runs")
    with pytest.raises(digits.DigitsError) as caught:
        digits.get_preset("quick-shallow", validation="none", target_accuracy=0.9)
    assert "`validation=holdout`" in str(caught.value) and "--" not in str(caught.value)

    result = subprocess.run([sys.executable, "-m", "digits", "train", "quick-shallow", "--validation", "none",
                             "--target-accuracy", "0.9"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "--validation holdout" in result.stderr and "--target-accuracy none" in result.stderr
    assert "`" not in result.stderr


def test_api_mistakes_are_one_sentence_naming_the_parameter():
    data = digits.load_mnist()
    keras_model = digits.build_model("shallow")
    for call, words in [
        (lambda: digits.train(data, "quick-cnn"), "`recipe` comes first and `data` second"),
        (lambda: digits.train(3), "`recipe` is a preset's name (see digits.presets()) or a Recipe, not an int"),
        (lambda: digits.evaluate("runs/any", "mnist"), "`data` is what digits.load_mnist() returns"),
        (lambda: digits.evaluate(data, "runs/any"), "`run` comes first and `data` second"),
        (lambda: digits.evaluate(keras_model), "`run` is a run (what digits.train or digits.load_run returns"),
        (lambda: digits.compare("runs/a", 3), "`runs` is a run"),
        (lambda: digits.predict(data.test_images[0], model=keras_model), "`model` is None (the shipped model)"),
        (lambda: digits.predict(np.zeros((5, 784), np.uint8)), "not uint8 (5, 784)"),  # quoted as given
        (lambda: digits.predict([data.test_images[0], np.zeros((28, 28))]), "`images[1]` is uint8 images"),
        (lambda: digits.predict(["a.png", data.test_images[0]]), "`images` holds both arrays and paths"),
        (lambda: digits.predict(3), "`images` is uint8 arrays or picture paths, not an int"),
        (lambda: digits.predict([]), "`images` is empty; give uint8 arrays, picture files or folders"),
    ]:
        with pytest.raises(digits.DigitsError) as caught:
            call()
        assert words in str(caught.value), str(caught.value)
        assert "Keras model (shallow)" in str(caught.value) or "(shallow)" not in str(caught.value)


def test_predict_takes_a_list_of_arrays_as_one_batch():
    data = digits.load_mnist()
    listed = digits.predict([data.test_images[0], data.test_images[1:4]])
    np.testing.assert_array_equal(listed.probabilities, digits.predict(data.test_images[:4]).probabilities)
    assert len(listed) == 4


def test_sweep_and_export_errors_name_parameters_too(tmp_path):
    from digits.inference.export import export_model
    from digits.sweeps.run import default_storage, open_storage

    for call, parameter in [(lambda: default_storage(tmp_path, create=False), "`storage`"),
                            (lambda: open_storage("not-a-url"), "`storage`"),
                            (lambda: export_model(PRETRAINED_DIR / "model.keras", "litert", tmp_path / "m.onnx"),
                             "`out`")]:
        with pytest.raises(digits.DigitsError) as caught:
            call()
        assert parameter in str(caught.value) and "--" not in str(caught.value)

    result = subprocess.run([sys.executable, "-m", "digits", "sweep", "report", "mine", "--runs-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "--storage" in result.stderr and "`" not in result.stderr


# --- a trained run, evaluated, compared and used: two tiny runs trained once for the tests below ---------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(MNIST, two tiny quick-shallow runs of different seeds, their runs folder); the first has TensorBoard logs."""
    runs_dir = tmp_path_factory.mktemp("runs")
    data = digits.load_mnist()
    first = digits.train("quick-shallow", data, runs_dir, verbose=0, tensorboard=True, target_accuracy=None, **SMALL)
    second = digits.train("quick-shallow", data, runs_dir, verbose=0, target_accuracy=None, seed=1, **SMALL)
    return data, first, second, runs_dir


@pytest.mark.slow
def test_a_trained_run_holds_its_model_history_and_folder(trained):
    _, run, _, _ = trained
    assert run.model.count_params() == 50_890
    assert list(run.history["epoch"]) == [1, 2]
    assert run.metrics["status"] == "complete" and os.fspath(run) == str(run.folder)
    assert json.loads((run.folder / "config.json").read_text())["recipe"]["epochs"] == 2


@pytest.mark.slow
def test_the_history_in_memory_holds_the_numbers_of_history_csv(trained):
    from digits.training.runs import read_history

    _, run, _, _ = trained
    on_disk = read_history(run.folder / "history.csv")
    assert run.history.keys() == on_disk.keys()
    for column, values in on_disk.items():
        np.testing.assert_array_equal(run.history[column], values, err_msg=column)
        assert run.history[column].dtype == values.dtype, column


@pytest.mark.slow
def test_tensorboard_writes_training_and_validation_logs_into_the_run(trained):
    _, run, _, _ = trained
    events = {path.parent.name for path in (run.folder / "tensorboard").rglob("events.out.tfevents.*")}
    assert events == {"train", "validation"}


@pytest.mark.slow
def test_a_trained_run_shows_itself_as_a_card(trained):
    _, run, _, _ = trained
    card = run_card(run)  # What Jupyter shows for a TrainedRun (digits registers it with IPython).
    assert "validation accuracy" in card and "data:image/png;base64," in card


@pytest.mark.slow
def test_an_evaluation_carries_its_scores_itself(trained):
    data, run, _, _ = trained
    evaluation = digits.evaluate(run, data)

    assert evaluation.count == 500 and 0.5 < evaluation.accuracy <= 1
    assert evaluation.confusion.shape == (10, 10) and evaluation.confusion.sum() == 500
    assert evaluation.mistake_count == len(evaluation.mistakes) == round(500 * (1 - evaluation.accuracy))
    assert [row.digit for row in evaluation.per_class] == list(range(10))
    assert not hasattr(evaluation, "evaluation")
    written = json.loads((run.folder / "evaluation" / "evaluation.json").read_text())
    assert written["evaluation"]["accuracy"] == evaluation.accuracy
    # The report's architecture table shows the parameter arithmetic of the study's first layer.
    assert "784 × 64 + 64" in evaluation.report.read_text()


@pytest.mark.slow
def test_an_evaluation_draws_its_figures_and_shows_itself_as_a_card(trained, tmp_path):
    data, run, _, _ = trained
    evaluation = digits.evaluate(run, data, tmp_path / "evaluation")

    for figure in (evaluation.learning_curves(), evaluation.confusion_matrix(), evaluation.mistakes_gallery(),
                   evaluation.per_class_table().figure()):
        assert isinstance(figure, Figure)
    card = evaluation._repr_html_()
    assert f"{100 * evaluation.accuracy:.2f} % test accuracy" in card and card.count("<img") == 3

    # The per-class scores are a real table in a notebook (rows one can copy), and eleven short lines as text.
    table = evaluation.per_class_table()
    page = table._repr_html_()
    assert page.count("<tr") == 11 and "<img" not in page
    weakest = min(evaluation.per_class, key=lambda scores: scores.f1)
    assert f"<td>{weakest.digit}</td><td>{weakest.precision:.3f}</td>" in page
    assert len(repr(table).splitlines()) == 12 and "(weakest)" in repr(table)


@pytest.mark.slow
def test_evaluate_scores_a_trained_run_with_the_model_it_holds(trained, tmp_path):
    data, run, _, _ = trained
    # A copy of the run folder without its model.keras: only the model in memory can be scored.
    copy = shutil.copytree(run.folder, tmp_path / run.folder.name)
    (copy / "model.keras").unlink()
    in_memory = dataclasses.replace(run, folder=copy)

    evaluation = digits.evaluate(in_memory, data, tmp_path / "evaluation")
    assert evaluation.accuracy == digits.evaluate(run.folder, data, tmp_path / "from-the-folder").accuracy
    with pytest.raises(digits.DigitsError, match="has no model.keras"):
        digits.evaluate(copy, data, tmp_path / "from-the-copy")  # A folder is read from disk.


@pytest.mark.slow
def test_compare_writes_into_its_own_folder_and_leaves_the_runs_untouched(trained):
    data, run, second, runs_dir = trained
    before = {path: folder_digest(path) for path in (run.folder, second.folder)}

    compared = digits.compare(run, second, data=data)
    assert {path: folder_digest(path) for path in before} == before
    assert compared.folder.parent == runs_dir and compared.folder.name.endswith("-comparison")
    assert all(model.out_dir.parent == compared.folder for model in compared.models)
    assert compared.report.is_file() and isinstance(compared.chart(), Figure)
    assert compared.comparison.sentence in html.unescape(compared._repr_html_())


@pytest.mark.slow
def test_load_run_reads_a_run_folder_back(trained):
    _, run, _, _ = trained
    again = digits.load_run(run.folder)
    assert again.model.count_params() == 50_890 and again.recipe == run.recipe


@pytest.mark.slow
def test_predict_reads_images_with_a_runs_model(trained):
    data, run, _, _ = trained
    results = digits.predict(data.test_images[:5], model=run)
    assert [result.digit for result in results] == list(np.argmax(run.model.predict(
        data.test_images[:5, ..., None] / 255.0, verbose=0), axis=1))


def test_epoch_lines_print_one_line_per_epoch(capsys):
    from digits.training.callbacks import EpochLines

    lines = EpochLines(total_epochs=3)
    for epoch in range(3):
        lines.on_epoch_begin(epoch)
        lines.on_epoch_end(epoch, {"loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.91})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[2].startswith("epoch 3/3") and "validation accuracy 91.00 %" in printed[2]


def test_training_progress_is_one_updating_bar_in_a_terminal_and_lines_in_a_pipe(monkeypatch, capsys):
    import io

    from digits.training.callbacks import EpochLines, epoch_progress

    assert isinstance(epoch_progress(3, "quick-cnn"), EpochLines)  # pytest's captured stderr is a pipe

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert isinstance(epoch_progress(3, "quick-cnn"), EpochLines)  # stdout piped, as `| tee train.log` does
    monkeypatch.setattr(sys, "stdout", Terminal())
    progress = epoch_progress(3, "quick-cnn")
    progress.on_train_begin()
    for epoch in range(3):
        progress.on_epoch_begin(epoch)
        progress.on_epoch_end(epoch, {"loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.91})
    progress.on_train_end()
    screen = terminal.getvalue()
    # One line, redrawn in place ("\r") as epochs end (at most ten times a second), left at its last state.
    assert screen.count("\n") == 1 and screen.count("\r") >= 2 and not capsys.readouterr().out
    last = screen.rstrip("\n").split("\r")[-1]
    assert last.startswith("quick-cnn: epoch 3/3") and "validation accuracy 91.00 %" in last
