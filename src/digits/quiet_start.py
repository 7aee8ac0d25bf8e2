"""TensorFlow's native start-up lines, kept out of notebooks and scripts as the CLI keeps them out of a terminal.

Importing TensorFlow writes lines such as "All log messages before absl::InitializeLog() is called are written
to STDERR", the oneDNN notice and "Could not find cuda drivers" straight to file descriptor 2, before its own
logging (and TF_CPP_MIN_LOG_LEVEL) applies; Jupyter shows them as red output under whichever cell first trained
or loaded a model. `import digits` installs an import hook that sends descriptor 2 to a temporary file while
TensorFlow is first imported, by whatever imports it, and shows what it caught only if that import fails. Set
DIGITS_NATIVE_STDERR=1 to see the lines. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 goes to a temporary file inside the block; its text is written back if the block fails."""
    if os.environ.get("DIGITS_NATIVE_STDERR"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 to redirect (a closed or replaced stream)
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            os.write(2, caught.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader:
    """The loader TensorFlow's package would have, running its module code with descriptor 2 silenced."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # resource readers, is_package, ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with native_stderr_silenced():
            self._loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the ordinary way, once, and gives it the quiet loader."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        uninstall()  # once: the lookup below, and every later import, go the ordinary way
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_HOOK = _QuietTensorFlowImport()


def install() -> None:
    """Silence TensorFlow's first import (nothing to do once it is loaded)."""
    if "tensorflow" not in sys.modules and _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def uninstall() -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_HOOK)
