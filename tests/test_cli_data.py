"""`digits data` run as a user runs it: a subprocess, on the vendored MNIST and on data of one's own."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import run_digits

TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def digits_data(*arguments, cwd, **environment) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "DIGITS_DATA_DIR"}
    env["DIGITS_CACHE_DIR"] = str(cwd / "cache")  # Never the user's cache, and nothing to download.
    env.update(environment)
    return run_digits(*arguments, cwd=cwd, env=env, timeout=120)


def section_rows(stdout: str, title: str) -> dict[str, list[str]]:
    """The rows of one printed table, keyed by their first word."""
    section = stdout.split(title + "\n")[1].split("\n\n")[0]
    return {line.split()[0]: line.split()[1:] for line in section.splitlines()}


def assert_sample_grid(path) -> None:
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    assert 300 <= width <= 3000 and 100 <= height <= 2000 and width > height
    # Digits drawn white on black tiles over a white page: plenty of both, so the grid is not blank.
    assert (pixels < 30).mean() > 0.2 and (pixels > 225).mean() > 0.2


def test_data_command_inspects_vendored_mnist(tmp_path):
    result = digits_data("data", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "vendored copy" in out and "verified: sha256 matches the official MNIST files" in out
    arrays = section_rows(out, "Arrays")
    assert arrays["train_images"] == ["(60000,", "28,", "28)", "uint8"]
    assert arrays["test_labels"] == ["(10000,)", "uint8"]
    counts = section_rows(out, "Class counts")
    assert counts["test"] == [str(count) for count in TEST_COUNTS] + ["10000"]
    assert counts["training"][-1] == "60000"
    pixels = section_rows(out, "Pixel statistics (0 = black, 255 = white ink)")
    assert pixels["training"][:3] == ["0", "255", "33.318"]
    assert "First 12 training labels: 5 0 4 1 9 2 1 3 1 4 3 5" in out
    # Without --out the grid goes to ./out/, and its path is printed.
    grid = tmp_path / "out" / "sample_grid.png"
    assert f"{os.path.join('out', 'sample_grid.png')}" in out
    assert_sample_grid(grid)


def test_data_command_reads_other_data_and_says_it_is_unverified(tmp_path, tiny_mnist_dir):
    out_dir = tmp_path / "figures" / "new"
    result = digits_data("data", "--data-dir", str(tiny_mnist_dir), "--out", str(out_dir), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"directory {tiny_mnist_dir}" in result.stdout and "UNVERIFIED" in result.stdout
    assert section_rows(result.stdout, "Arrays")["train_images"][0] == "(60,"
    assert_sample_grid(out_dir / "sample_grid.png")


def test_data_command_honours_digits_data_dir(tmp_path, tiny_mnist_dir):
    result = digits_data("data", "--out", str(tmp_path), cwd=tmp_path, DIGITS_DATA_DIR=str(tiny_mnist_dir))
    assert result.returncode == 0, result.stderr
    assert f"DIGITS_DATA_DIR {tiny_mnist_dir}" in result.stdout


@pytest.mark.parametrize("damage", ["no-such-directory", "wrong-magic", "missing-file", "out-is-a-file"])
def test_bad_input_exits_with_one_line_and_no_traceback(tmp_path, tiny_mnist_dir, damage):
    data_dir, out_dir = tiny_mnist_dir, tmp_path / "figures"
    if damage == "no-such-directory":
        data_dir, expected = tmp_path / "no-such-directory", "does not exist"
    elif damage == "wrong-magic":
        (tiny_mnist_dir / "t10k-images-idx3-ubyte").write_bytes(b"\x89PNG" + bytes(100))
        expected = "t10k-images-idx3-ubyte is not an IDX image file"
    elif damage == "missing-file":
        (tiny_mnist_dir / "train-labels-idx1-ubyte").unlink()
        expected = "lacks the training labels"
    else:
        out_dir.write_text("a file, not a directory")
        expected = "choose a writable folder"

    result = digits_data("data", "--data-dir", str(data_dir), "--out", str(out_dir), cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.startswith("digits: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
