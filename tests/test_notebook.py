"""The study notebook runs end to end in a real Jupyter kernel (on a slice of the data), shows its figures
inline, and its runs, evaluations and comparison display as HTML; the README's quickstart runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "study.ipynb"


def with_this_checkout(environment: dict) -> dict:
    """The environment with this checkout's src/ first on the path: the kernel and scripts run elsewhere."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), environment.get("PYTHONPATH")]))
    return {**environment, "PYTHONPATH": path}


def test_the_notebook_is_committed_without_outputs():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(not cell.outputs and cell.execution_count is None for cell in code_cells)


@pytest.mark.slow
def test_the_study_notebook_runs_and_shows_its_figures_and_cards(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("DIGITS_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("DIGITS_NOTEBOOK_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", with_this_checkout(dict(os.environ))["PYTHONPATH"])
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Any cell error raises CellExecutionError here and fails the test.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    def outputs(tag: str) -> list[dict]:
        return [cell.outputs for cell in notebook.cells if tag in cell.get("metadata", {}).get("tags", [])]

    figures = outputs("figure")
    assert len(figures) >= 4  # and the cards' figures
    for cell_outputs in outputs("table"):  # the per-class scores, a real table rather than a picture of one
        assert any("<table>" in output.get("data", {}).get("text/html", "") for output in cell_outputs), cell_outputs
    for cell_outputs in figures:  # each figure cell displayed a PNG
        assert any("image/png" in output.get("data", {}) for output in cell_outputs), cell_outputs
    for tag, words in (("run-card", "validation accuracy"), ("evaluation-card", "test accuracy"),
                       ("comparison-card", "comparison")):
        cards = outputs(tag)
        assert cards
        for cell_outputs in cards:
            html = [output["data"]["text/html"] for output in cell_outputs if "text/html" in output.get("data", {})]
            assert html and words in html[0] and "data:image/png;base64," in html[0]
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    # Question 2 shows both models' parameter arithmetic; question 4 answers in words, with its uncertainty.
    assert "hidden   784 × 64 + 64" in printed and "= 50,240 parameters" in printed
    assert "conv2    3 × 3 × 32 × 64 + 64" in printed and "= 34,826 parameters" in printed
    assert re.search(r"(Yes|No|Not measurably): the CNN's mistakes are between .*95 % bootstrap interval "
                     r"[-+]0\.\d{3} to [-+]0\.\d{3} over the CNN's \d+ and the shallow network's \d+ mistakes", printed)
    # Your own digit: the picture beside the 28×28 view the model read, its top 3 and digit score.
    [own_digit] = outputs("own-digit")
    card = next(output["data"]["text/html"] for output in own_digit if "text/html" in output.get("data", {}))
    assert card.count("data:image/png;base64,") == 2 and "top 3: " in card and "digit score" in card
    assert_reads_like_a_students_notebook(notebook)
    assert len(list((tmp_path / "runs").glob("*-seed-cnn"))) == 1


def text_lines(output) -> int:
    """Lines of plain text an output shows: a stream's or an error's, or a value's with no HTML or picture form."""
    if output.output_type == "stream":
        return len(output.text.splitlines())
    if output.output_type == "error":
        return len(output.get("traceback", []))
    data = output.get("data", {})
    if {"text/html", "image/png", "application/vnd.jupyter.widget-view+json"} & set(data):
        return 0
    return len(data.get("text/plain", "").splitlines())


def assert_reads_like_a_students_notebook(notebook) -> None:
    """What the study notebook promises a student: no cell of more than 20 lines of text (training shows one
    progress bar, not a line per epoch), no TensorFlow start-up noise, and every Figure drawn as a picture."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert sum(text_lines(output) for output in cell.outputs) <= 20, cell.source
        stderr = "".join(output.get("text", "") for output in cell.outputs if output.get("name") == "stderr")
        assert not any(noise in stderr for noise in TENSORFLOW_NOISE), stderr
        for output in cell.outputs:
            if output.get("data", {}).get("text/plain", "").startswith("<Figure size"):
                assert "image/png" in output["data"], cell.source


def readme_quickstart() -> str:
    """The README's Python quickstart: its first ```python block."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "README.md has no ```python block"
    return blocks[0]


def test_the_readme_quickstart_is_at_most_ten_lines():
    lines = [line for line in readme_quickstart().splitlines() if line.strip()]
    assert 3 <= len(lines) <= 10


# What TensorFlow writes to the native stderr as it starts, which a notebook must not show.
TENSORFLOW_NOISE = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cudart", "computation_placer")


def execute_in_a_kernel(cells: list[str], directory: Path, environment: dict | None = None):
    """The cells run in a fresh Jupyter kernel (no `%matplotlib inline`), as a student's notebook runs them."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    saved = dict(os.environ)
    os.environ.update(with_this_checkout({**os.environ, **(environment or {})}))
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(directory)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return notebook


@pytest.mark.slow
def test_the_readme_quickstart_runs_in_a_kernel_quietly_with_one_progress_bar_and_its_figure_inline(tmp_path):
    # DIGITS_QUICKSTART_SMALL shrinks its training the way the quickstart's own comment says.
    notebook = execute_in_a_kernel([readme_quickstart()], tmp_path, {"DIGITS_QUICKSTART_SMALL": "1"})
    outputs = notebook.cells[0].outputs
    assert list((tmp_path / "runs").glob("*/model.keras"))
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "test accuracy" in printed and "Predictions(3 images" in printed
    # The confusion matrix, the cell's last value, is a picture, not "<Figure size 616x572 with 1 Axes>".
    assert any("image/png" in output.get("data", {}) for output in outputs if output.output_type == "execute_result")
    stderr = "".join(output.get("text", "") for output in outputs if output.get("name") == "stderr")
    assert not any(noise in stderr for noise in TENSORFLOW_NOISE), stderr
    # Training shows one progress bar, updated in place and left at its last state, not a printed line per epoch.
    bars = [output for output in outputs if output.output_type == "display_data"]
    assert len(bars) == 1 and not printed.count("epoch 1/1"), bars
    assert re.match(r"quick-cnn: epoch 1/1 █{20} \d\d:\d\d<00:00, loss \d\.\d{4} · accuracy",
                    bars[0]["data"]["text/plain"])
