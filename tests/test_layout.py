"""The layout is the architecture: each stage imports only earlier stages (import-linter's contracts in
pyproject.toml), so a change that breaks the layering fails here as well as in `.ci/run`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
STAGES = ("data", "training", "evaluation", "reporting", "pictures", "inference", "serving", "sweeps")


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    # import-linter finds `digits` on the path: PYTHONPATH puts the copy under test first.
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, timeout=120, cwd=source_root,
                          env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"})


def test_every_stage_is_a_subpackage_that_says_what_it_owns_and_may_import():
    package = ROOT / "src" / "digits"
    for stage in STAGES:
        docstring = (package / stage / "__init__.py").read_text()
        assert docstring.startswith('"""') and "May import" in docstring, stage
    top_level_modules = sorted(path.name for path in package.glob("*.py"))
    assert len(top_level_modules) <= 12, top_level_modules


def test_the_stages_keep_their_layers():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, upward_import", [
    # An earlier stage importing a later one, inside a function (where a lazy import would hide it).
    ("data/mnist.py", "def _upward():\n    from digits.serving import app  # noqa\n"),
    # Two modules of one stage importing each other.
    ("training/recipes.py", "from digits.training import fit  # noqa\n"),
])
def test_an_upward_import_or_a_cycle_breaks_a_contract(tmp_path, module, upward_import):
    shutil.copytree(ROOT / "src" / "digits", tmp_path / "digits", ignore=shutil.ignore_patterns("mnist", "pretrained"))
    with open(tmp_path / "digits" / module, "a", encoding="utf-8") as source:
        source.write("\n\n" + upward_import)
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout + result.stderr
