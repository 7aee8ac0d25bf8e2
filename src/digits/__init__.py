"""digits: train, understand, compare and use MNIST handwritten-digit classifiers.

The public API is a handful of functions, imported on first use so that `import digits` (and `digits
--help`) loads no TensorFlow:

    import digits
    run = digits.train("quick-cnn", epochs=2)      # a TrainedRun: model, history, folder
    evaluation = digits.evaluate(run)              # accuracy, mistakes, verdicts, figures
    evaluation.confusion_matrix()                  # a matplotlib Figure, shown inline
"""

import os
import sys
import types

__version__ = "0.1.0"

# TensorFlow is the study's own backend and the fastest we measured on these CPUs; a user's choice wins.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lines) is noise to a user of the CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'digits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


class _Package(types.ModuleType):
    """`digits.train`, `digits.evaluate` and `digits.predict` stay the functions after their same-named
    modules are imported: Python would otherwise set the package attribute to the module."""

    def __setattr__(self, name: str, value) -> None:
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            return  # The module stays reachable as sys.modules["digits.<name>"] and `from digits.<name> import`.
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
