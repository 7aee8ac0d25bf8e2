"""The Python API a notebook uses: lazy top-level names, a run that holds its model, objects that show
themselves as HTML, TensorBoard logs, and errors in the library's words that the CLI turns into flags."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

import digits
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


def test_get_preset_takes_overrides_and_keeps_the_rest():
    recipe = digits.get_preset("quick-cnn", epochs=2, target_accuracy=None, validation="none")
    assert (recipe.epochs, recipe.target_accuracy, recipe.validation) == (2, None, "none")
    assert recipe.learning_rate == digits.get_preset("quick-cnn").learning_rate  # None and absent keep the preset's
    assert "quick-cnn" in digits.presets()


def test_library_errors_name_parameters_and_the_cli_names_flags():
    with pytest.raises(digits.DigitsError, match="`epochs` must be at least 1"):
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


@pytest.mark.slow
def test_a_trained_run_evaluates_compares_and_shows_itself(tmp_path):
    data = digits.load_mnist()
    run = digits.train("quick-shallow", data, tmp_path, verbose=0, tensorboard=True, target_accuracy=None, **SMALL)

    # The run holds the trained model, its history and its folder (and is path-like).
    assert run.model.count_params() == 50_890
    assert list(run.history["epoch"]) == [1, 2]
    assert run.metrics["status"] == "complete" and os.fspath(run) == str(run.folder)
    assert json.loads((run.folder / "config.json").read_text())["recipe"]["epochs"] == 2
    # TensorBoard wrote event files for training and validation into the run folder.
    events = {path.parent.name for path in (run.folder / "tensorboard").rglob("events.out.tfevents.*")}
    assert events == {"train", "validation"}
    card = run_card(run)  # What Jupyter shows for a TrainedRun (digits registers it with IPython).
    assert "validation accuracy" in card and "data:image/png;base64," in card

    evaluation = digits.evaluate(run, data)
    assert evaluation.count == 500 and 0.5 < evaluation.accuracy <= 1
    for figure in (evaluation.learning_curves(), evaluation.confusion_matrix(), evaluation.mistakes_gallery(),
                   evaluation.per_class_table()):
        assert isinstance(figure, Figure)
    card = evaluation._repr_html_()
    assert f"{100 * evaluation.accuracy:.2f} % test accuracy" in card and card.count("<img") == 3
    # The report's architecture table shows the parameter arithmetic of the study's first layer.
    assert "784 × 64 + 64" in evaluation.report.read_text()

    again = digits.load_run(run.folder)
    assert again.model.count_params() == 50_890 and again.recipe == run.recipe
    second = digits.train("quick-shallow", data, tmp_path, verbose=0, target_accuracy=None, seed=1, **SMALL)
    compared = digits.compare(run, second, data=data)
    assert isinstance(compared.chart(), Figure) and compared.report.is_file()
    assert compared.comparison.sentence in html.unescape(compared._repr_html_())

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
