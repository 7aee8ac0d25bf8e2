"""Shared pytest helpers and fixtures: running the `digits` command, tiny MNIST look-alikes, drawn digits."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

import digits

# --- the command -------------------------------------------------------------------------------------


def run_digits(*arguments, cwd=None, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `digits ARGUMENTS` as a user does, in a new process, and return its exit code and captured text.

    `env` replaces the environment when given. The process imports the same digits as these tests, whatever
    its working directory: a relative PYTHONPATH=src would otherwise find another copy, or none.
    """
    env = dict(os.environ if env is None else env)
    source = str(Path(digits.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([source, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "digits", *map(str, arguments)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder`, by its path inside it, with the SHA-256 of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# --- data ---------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file, gzip-compressed when the name ends in .gz."""
    magic = 0x0800 + array.ndim  # unsigned bytes, then the number of dimensions
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    content = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return path


@pytest.fixture
def idx_writer():
    """The `write_idx(path, array)` helper, for tests that build their own IDX files."""
    return write_idx


@pytest.fixture
def tiny_mnist() -> dict[str, np.ndarray]:
    """A small MNIST look-alike: 60 training and 20 test 28x28 uint8 images, labels cycling through 0..9.

    Each image is black with a bright 6x6 square whose place depends on its label and index, so images differ.
    """
    arrays = {}
    for split, count in (("train", 60), ("test", 20)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        for index, label in enumerate(labels):
            row, column = 2 + 2 * label, 2 + index % 20
            images[index, row:row + 6, column:column + 6] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


@pytest.fixture
def tiny_mnist_dir(tmp_path, tiny_mnist) -> Path:
    """A directory holding `tiny_mnist` as the four raw IDX files under their official names."""
    directory = tmp_path / "tiny-mnist"
    directory.mkdir()
    names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    for part, name in names.items():
        write_idx(directory / name, tiny_mnist[part])
    return directory


# --- serve --------------------------------------------------------------------------------------------


# One pen stroke per digit, as fractions of the square's side.
DIGIT_STROKES = {1: [(0.5, 0.18), (0.5, 0.82)], 7: [(0.3, 0.22), (0.7, 0.22), (0.45, 0.8)]}


def draw_digit_png(digit: int | None, *, side: int = 280, dark_on_light: bool = True) -> bytes:
    """A PNG like the draw-a-digit page sends: a thick-stroked 1 or 7 (or nothing, for None) on plain paper."""
    import io

    from PIL import Image, ImageDraw

    paper, ink = ("white", "black") if dark_on_light else ("black", "white")
    picture = Image.new("RGB", (side, side), paper)
    if digit is not None:
        stroke = [(round(x * side), round(y * side)) for x, y in DIGIT_STROKES[digit]]
        ImageDraw.Draw(picture).line(stroke, fill=ink, width=round(0.065 * side), joint="curve")
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def digit_png():
    """The `draw_digit_png(digit, side=280, dark_on_light=True)` helper: PNG bytes of a drawn 1 or 7, or blank."""
    return draw_digit_png


def draw_smiley():
    """A drawn smiley, 300x300, black on white: one round piece of ink that is no digit, whole or cut."""
    from PIL import Image, ImageDraw

    smiley = Image.new("L", (300, 300), 255)
    draw = ImageDraw.Draw(smiley)
    draw.ellipse((30, 30, 270, 270), outline=0, width=12)
    for eye_x in (105, 195):
        draw.ellipse((eye_x - 12, 95, eye_x + 12, 125), fill=0)
    draw.arc((80, 105, 220, 225), 20, 160, fill=0, width=12)
    return smiley


def child_processes(parent: int) -> list[int]:
    """The ids of the live processes whose parent is `parent` (none once it has ended)."""
    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.NoSuchProcess:
        return []
