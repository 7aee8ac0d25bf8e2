"""Issue 24, items 9, 10 and 13: files a user or a run folder hands digits.

A picture that breaks a decoder, or takes minutes, is its own line; a run folder's pipe, device link, deep
nesting or zip bomb is one sentence at once, in bounded memory.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hostile_files
from conftest import draw_digit_png, run_digits
from digits.cli import main
from digits.errors import DigitsError
from digits.inference import files
from digits.inference.classifier import PRETRAINED_DIR, load_classifier
from digits.inference.not_a_digit import DETECTOR_FILE
from digits.inference.not_a_digit_file import load_detector
from digits.inference.preparation import BoundedPreparer
from digits.pictures.decode import ImageError


def corrupt_dds() -> bytes:
    """A DDS whose pixel-format flags Pillow does not implement: its reader raises NotImplementedError (found by
    fuzzing)."""
    picture = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 255, 255, 255)).save(picture, "DDS")
    data = bytearray(picture.getvalue())
    data[80] = 1  # DDS_PIXELFORMAT.dwFlags: alpha only, which Pillow's reader does not handle.
    return bytes(data)


# --- item 9: one bad picture does not stop the batch -------------------------------------------------------


@pytest.mark.slow
def test_a_picture_that_breaks_its_decoder_is_its_own_line_and_the_others_are_read(tmp_path):
    bad, seven = tmp_path / "bad.dds", tmp_path / "7.png"
    bad.write_bytes(corrupt_dds())
    seven.write_bytes(draw_digit_png(7))
    result = run_digits("predict", bad, seven)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    bad_line, seven_line = result.stdout.splitlines()
    # The picture reader's NotImplementedError is decode's one sentence (issue 24, item 3), not a traceback.
    assert bad_line == (f"{bad}: error: {bad} is not an image that can be read; use a PNG, JPEG, BMP, GIF, TIFF or "
                        "WebP file.")
    assert seven_line.startswith(f"{seven}: 7 (")
    assert result.stderr.strip() == "digits: 1 of 2 files could not be read."


# --- item 13: the CLI prepares pictures within the server's limits ------------------------------------------


def test_a_picture_over_the_time_limit_is_abandoned_and_the_next_file_is_read(tmp_path):
    slow, one = tmp_path / "slow.fits", tmp_path / "one.png"
    slow.write_bytes(hostile_files.gzip_fits(3000))  # 30 KB; about 1.5 s of pure-Python decoding
    one.write_bytes(draw_digit_png(1))
    with BoundedPreparer(time_limit=0.3) as preparer:
        with pytest.raises(ImageError, match=r"^Preparing .*slow\.fits took longer than the 0\.3 s digits allows"):
            preparer.prepare(slow)
        layout, original, _ = preparer.prepare(one, keep_original=True)
    assert layout.is_single and layout.views[0].max() == 255 and original.shape[0] <= 280


def test_a_picture_over_the_memory_limit_is_one_sentence(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(hostile_files.blank_png(6000, 6000))  # 36 megapixels: within the pixel limit, 36 MB grey
    with BoundedPreparer(memory_limit=64 * 2**20) as preparer, pytest.raises(
            ImageError, match=r"big\.png needs more than the 64 MB of memory digits gives one picture"):
        preparer.prepare(big)


def test_a_script_without_a_main_guard_can_predict_files(tmp_path):
    # The worker is a new Python running digits.inference.preparation, not multiprocessing's spawn, which would
    # import this unguarded script again in the worker.
    (tmp_path / "one.png").write_bytes(draw_digit_png(1))
    script = tmp_path / "read.py"
    script.write_text("import digits\nprint(digits.predict(['one.png'])[0].digit)\n")
    source = str(Path(files.__file__).resolve().parents[2])
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=environment, check=False)
    assert result.returncode == 0 and result.stdout == "1\n", result.stderr[-2000:]


def test_deeply_nested_folders_are_one_sentence_not_a_recursion_error(tmp_path):
    # Python 3.11's own walkers (os.walk, Path.rglob) recurse: 1,500 nested folders were a RecursionError.
    folder = tmp_path / "pictures"
    deepest = folder
    for _ in range(files.MAX_FOLDER_DEPTH + 1):
        deepest = deepest / "d"
    deepest.mkdir(parents=True)
    (deepest / "one.png").write_bytes(b"")
    with pytest.raises(DigitsError, match=r"holds folders nested more than 32 deep; give the folder that holds"):
        files.find_image_files([folder])


def test_too_many_files_are_refused_before_any_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_FILES", 5)
    for index in range(7):
        (tmp_path / f"{index}.png").write_bytes(b"")
    with pytest.raises(DigitsError, match=r"holds more than 5 files; give fewer pictures at a time\.$"):
        files.find_image_files([tmp_path])


# --- item 10: a run folder's pipes, device links and zip bombs ---------------------------------------------


@pytest.fixture
def shipped_run(tmp_path) -> Path:
    """The shipped model's folder, copied: a complete run with a calibration.json and a not-a-digit detector."""
    folder = tmp_path / "20261129-144008-pretrained"
    folder.mkdir()
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "calibration.json", DETECTOR_FILE):
        shutil.copy(PRETRAINED_DIR / name, folder / name)
    return folder


def replace_with(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


def stop_waiting_on(path: Path) -> threading.Timer:
    """If the code under test waits on the pipe at `path`, open and close its other end after 20 s, so the test
    fails instead of hanging."""
    def release() -> None:
        with open(path, "wb"):
            pass

    timer = threading.Timer(20, release)
    timer.daemon = True
    timer.start()
    return timer


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize("name", ["config.json", "metrics.json", "history.csv", "calibration.json", DETECTOR_FILE])
def test_a_run_file_that_is_a_pipe_or_a_device_is_one_sentence_at_once(shipped_run, name, kind):
    target = shipped_run / name
    replace_with(target, kind)
    timer = stop_waiting_on(target) if kind == "fifo" else None
    try:
        with pytest.raises(DigitsError) as caught:
            load_classifier(shipped_run)
    finally:
        if timer:
            timer.cancel()
    message = str(caught.value)
    assert str(target) in message and "not a regular file but a folder, a pipe, a device or a socket" in message
    assert "\n" not in message, message


def test_an_exported_models_sidecar_that_is_a_pipe_is_not_waited_on(tmp_path):
    model = tmp_path / "model.onnx"
    shutil.copy(PRETRAINED_DIR / "model.onnx", model)
    sidecar = tmp_path / "model.onnx.json"
    os.mkfifo(sidecar)
    timer, started = stop_waiting_on(sidecar), time.monotonic()
    try:
        classifier = load_classifier(model)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 15  # Not released by the timer after 20 s: it never waited on the pipe.
    assert classifier.temperature == 1.0 and classifier.info["architecture"] is None  # read without its description


def npz_with(member_bytes: bytes, *, declared_size: int | None = None) -> bytes:
    """An .npz whose hidden_weights.npy member holds `member_bytes` (deflated), optionally claiming another size."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
        writer.writestr("hidden_weights.npy", member_bytes)
    data = bytearray(archive.getvalue())
    if declared_size is not None:
        central = data.rindex(b"PK\x01\x02")  # The central directory's entry; its uncompressed size is at +24.
        data[central + 24:central + 28] = struct.pack("<I", declared_size)
        data[22:26] = struct.pack("<I", declared_size)  # The local header's, too.
    return bytes(data)


def npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


ZIP_BOMBS = {
    "declares 4 GB": npz_with(b"\0" * 1000, declared_size=4_000_000_000),
    "inflates to 64 MB": npz_with(npy_header((8 * 2**20,)) + bytes(64 * 2**20)),
    "declares a 1 TiB array": npz_with(npy_header((2**37,)) + bytes(800)),
}


@pytest.mark.parametrize("bomb", ZIP_BOMBS.values(), ids=ZIP_BOMBS.keys())
def test_a_detector_that_declares_or_inflates_to_too_much_is_refused_before_it_is_inflated(tmp_path, bomb):
    import resource

    path = tmp_path / DETECTOR_FILE
    path.write_bytes(bomb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DigitsError, match=rf"^Cannot read the not-a-digit detector {path} \(its member "
                                          r"hidden_weights\.npy (declares|inflates)"):
        load_detector(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024  # KB: nothing big was held


def test_a_run_file_in_a_pipe_is_one_sentence_from_evaluate_too(shipped_run, capsys):
    target = shipped_run / "metrics.json"
    replace_with(target, "fifo")
    timer = stop_waiting_on(target)
    try:
        assert main(["evaluate", str(shipped_run)]) == 1
    finally:
        timer.cancel()
    error = capsys.readouterr().err.strip()
    assert error == (f"digits: error: Cannot read {target} (it is not a regular file but a folder, a pipe, a device "
                     "or a socket); the run is damaged, so train it again.")
