"""digits: train, understand, compare and use MNIST handwritten-digit classifiers.

The public API (`help(digits.train)` and the others say more):

    load_mnist()                       the verified MNIST that ships with digits, as uint8 arrays
    presets()                          the training presets by name: recipe, purpose, the study's result
    get_preset(name, **overrides)      one preset's recipe, with fields replaced (epochs=2, ...)
    build_model(name)                  a fresh Keras model: "shallow", "cnn" or "cnn-bn"
    train(recipe, data)                train a preset into a new run folder; returns a TrainedRun
    load_run(path)                     a finished run folder, read back as a TrainedRun
    evaluate(run, data)                test accuracy, mistakes, verdicts, figures and report.html
    compare(run, run, ..., data=data)  several runs on the same test images, with a verdict
    predict(images, model=None)        read digits in uint8 arrays or in picture files and folders
    run_study(data)                    the whole study: train, evaluate, compare, report
    DigitsError                        the error a user can cause: one sentence naming the fix

    import digits
    data = digits.load_mnist()
    run = digits.train("quick-cnn", data, epochs=2)   # a TrainedRun: model, history, folder
    evaluation = digits.evaluate(run, data)           # accuracy, mistakes, verdicts, figures
    evaluation.confusion_matrix()                     # a matplotlib Figure, shown inline in Jupyter

The functions load on first use, so `import digits` (and `digits --help`) loads no TensorFlow. The
subpackages below are the stages those functions are built from (data, training, evaluation, reporting,
pictures, inference, serving, sweeps).
"""

import importlib
import os
import sys

from digits import quiet_start

__version__ = "0.1.0"

# TensorFlow is the study's own backend and the fastest we measured on these CPUs; a user's choice wins.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lines) is noise to a user of the CLI or a
# notebook: its logging is quietened here, before anything imports TensorFlow, and the lines it writes before
# that logging starts are caught by digits.quiet_start.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
quiet_start.install()

# Each public name and the module that defines it.
_PUBLIC = {
    "load_mnist": "digits.api",
    "presets": "digits.api",
    "get_preset": "digits.api",
    "build_model": "digits.api",
    "train": "digits.api",
    "load_run": "digits.api",
    "evaluate": "digits.api",
    "compare": "digits.api",
    "predict": "digits.api",
    "run_study": "digits.api",
    "DigitsError": "digits.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'digits' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public API only, which is what tab completion and help() should offer first.
    return sorted(__all__)


# In a notebook, each of these classes (module, name) shows itself through this function of digits.reporting.display.
_NOTEBOOK_DISPLAYS = {
    ("digits.training.fit", "TrainedRun"): "run_card",
    ("digits.evaluation.metrics", "Evaluation"): "evaluation_table",
    # An EvaluatedModel extends Evaluation, and Jupyter would otherwise show it through the Evaluation's table.
    ("digits.reporting.evaluated_model", "EvaluatedModel"): "evaluation_card",
    ("digits.evaluation.comparison", "Comparison"): "comparison_table",
    ("digits.training.presets", "Presets"): "presets_table",
    ("digits.inference.files", "FileResult"): "file_result_card",
    ("digits.inference.files", "FileResults"): "file_results_cards",
}


def _show_results_in_notebooks() -> None:
    """In Jupyter a TrainedRun shows itself as a card, an Evaluation and a Comparison as small tables. They are
    registered here, by the class's name, because training and evaluation never import drawing (digits.reporting
    comes after them) and `import digits` must not load TensorFlow."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    html_formatter = shell.display_formatter.formatters["text/html"]
    for (module, class_name), function in _NOTEBOOK_DISPLAYS.items():
        html_formatter.for_type_by_name(module, class_name, _displayed_by(function))
    # digits draws its Figures without pyplot (nothing stays open), so matplotlib's inline hook, which pyplot or
    # `%matplotlib inline` installs, never registers: a Figure would show as "<Figure size 616x572 with 1 Axes>".
    # A PNG printer registered by name shows it as a picture; one already registered by `%matplotlib inline`
    # (by class) comes first, so a user's own choice of format wins.
    shell.display_formatter.formatters["image/png"].for_type_by_name("matplotlib.figure", "Figure", _figure_png)


def _displayed_by(function: str):
    def html(result) -> str:
        # By name, like the public functions above: the package root is the API's layer, above every stage.
        return getattr(importlib.import_module("digits.reporting.display"), function)(result)

    return html


def _figure_png(figure) -> bytes:
    return importlib.import_module("digits.reporting.plots").to_png(figure)


_show_results_in_notebooks()
