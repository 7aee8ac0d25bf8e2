"""The file attacks of issue 24 (items 9–16) against the `digits` command, and what each costs it.

Each attack builds its hostile file, picture, run folder or space in a temporary folder and runs one `digits`
command on it as a user would, in a new process. It prints one row per attack: the exit status, the seconds the
command took, the peak resident memory of the command and of every process it waited for (its picture worker
included), and the first line it wrote to stderr, beside what the second adversarial pass measured before the
fixes. Nothing leaves this machine.

    PYTHONPATH=src .venv/bin/python benchmarks/file_abuse.py                 # all attacks, about a minute
    PYTHONPATH=src .venv/bin/python benchmarks/file_abuse.py --only fits     # one of them

Target (issue 24): each attack ends in one sentence and a non-zero exit (the batch of item 9 reads its good
picture too), at once (the FITS within the 5 s preparation limit), in bounded memory, with no traceback.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import hostile_files  # The same hostile files the tests use.
from digits.inference.classifier import PRETRAINED_DIR

# A command still running after this long is taken for hung (a pipe waited on for ever) and killed.
HANG_SECONDS = 60


def run_digits(arguments: list[str], cwd: Path) -> dict:
    """Run `digits ARGUMENTS` in a new process; its exit status, seconds, peak memory (MB) and first error line."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "digits", *arguments], cwd=cwd, stdout=stdout,
                                   stderr=stderr, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        timer = threading.Timer(HANG_SECONDS, process.kill)  # a pipe waited on for ever
        timer.start()
        # wait4 gives the peak of the command and of every descendant it waited for (its picture worker).
        _, status, usage = os.wait4(process.pid, 0)
        timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read(), stderr.read()
    lines = [line for line in errors.splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith("digits:")), lines[-1] if lines else "")
    return {"status": process.returncode, "seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "stderr": first,
            "stdout": output, "traceback": "Traceback" in errors}


def remove_deep(folder: Path) -> None:
    """Remove a folder tree however deep (shutil.rmtree recurses, so 1,500 levels are a RecursionError)."""
    stack = [folder]
    while stack:
        current = stack[-1]
        children = list(os.scandir(current))
        folders = [Path(entry.path) for entry in children if entry.is_dir(follow_symlinks=False)]
        for entry in children:
            if not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
        if folders:
            stack.extend(folders)
        else:
            os.rmdir(stack.pop())


# --- the attacks ------------------------------------------------------------------------------------------


def shipped_run(folder: Path) -> Path:
    run = folder / "20261129-144008-pretrained"
    run.mkdir()
    for name in ("config.json", "metrics.json", "history.csv", "model.keras", "calibration.json", "not_a_digit.npz"):
        shutil.copy(PRETRAINED_DIR / name, run / name)
    return run


def seven(folder: Path) -> Path:
    from conftest import draw_digit_png

    path = folder / "7.png"
    path.write_bytes(draw_digit_png(7))
    return path


def bad_dds_and_a_seven(folder: Path) -> list[str]:
    picture = io.BytesIO()
    from PIL import Image

    Image.new("RGBA", (64, 64), (255, 255, 255, 255)).save(picture, "DDS")
    data = bytearray(picture.getvalue())
    data[80] = 1  # pixel-format flags Pillow does not implement
    (folder / "bad.dds").write_bytes(bytes(data))
    return ["predict", str(folder / "bad.dds"), str(seven(folder))]


def gzip_fits(folder: Path) -> list[str]:
    (folder / "big.fits").write_bytes(hostile_files.gzip_fits(6000))  # 146 KB
    return ["predict", str(folder / "big.fits")]


def nested_folders(folder: Path) -> list[str]:
    here = os.getcwd()
    os.makedirs(folder / "pictures")
    os.chdir(folder / "pictures")
    try:
        for _ in range(1500):
            os.mkdir("d")
            os.chdir("d")
    finally:
        os.chdir(here)
    return ["predict", str(folder / "pictures")]


def run_file_replaced(name: str, kind: str) -> Callable[[Path], list[str]]:
    def attack(folder: Path) -> list[str]:
        run = shipped_run(folder)
        (run / name).unlink()
        if kind == "fifo":
            os.mkfifo(run / name)
        else:
            (run / name).symlink_to("/dev/zero")
        return ["predict", "--model", str(run), str(seven(folder))]

    return attack


def calibration(temperature: str) -> Callable[[Path], list[str]]:
    def attack(folder: Path) -> list[str]:
        run = shipped_run(folder)
        (run / "calibration.json").write_text(f'{{"temperature": {temperature}}}')
        return ["predict", "--model", str(run), str(seven(folder))]

    return attack


def deep_calibration(folder: Path) -> list[str]:
    run = shipped_run(folder)
    (run / "calibration.json").write_text('{"a":' * 100_000)
    return ["predict", "--model", str(run), str(seven(folder))]


def detector_declaring(size: int) -> Callable[[Path], list[str]]:
    def attack(folder: Path) -> list[str]:
        run = shipped_run(folder)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as writer:
            writer.writestr("hidden_weights.npy", b"\0" * 1000)
        data = bytearray(archive.getvalue())
        central = data.rindex(b"PK\x01\x02")
        data[central + 24:central + 28] = size.to_bytes(4, "little")
        data[22:26] = size.to_bytes(4, "little")
        (run / "not_a_digit.npz").write_bytes(bytes(data))
        return ["predict", "--model", str(run), str(seven(folder))]

    return attack


def detector_inflating(folder: Path) -> list[str]:
    run = shipped_run(folder)
    with zipfile.ZipFile(run / "not_a_digit.npz", "w", zipfile.ZIP_DEFLATED) as writer, \
            writer.open("hidden_weights.npy", "w", force_zip64=True) as member:
        block = bytes(64 * 2**20)
        for _ in range(32):  # 2 GiB of zeros, about 2 MB deflated
            member.write(block)
    return ["predict", "--model", str(run), str(seven(folder))]


def space(text: str) -> Callable[[Path], list[str]]:
    def attack(folder: Path) -> list[str]:
        (folder / "space.toml").write_text(text)
        return ["sweep", str(folder / "space.toml"), "--trials", "1", "--runs-dir", str(folder / "runs")]

    return attack


def export_through_link(folder: Path) -> list[str]:
    (folder / "d").mkdir()
    (folder / "d" / "a.onnx.json").symlink_to(folder / "outside.json")
    return ["export", str(PRETRAINED_DIR / "model.keras"), "--out", str(folder / "d" / "a.onnx")]


# name: (what it is, what the second pass measured before the fixes, the attack)
ATTACKS: dict[str, tuple[str, str, Callable[[Path], list[str]]]] = {
    "control": ("(control: predict 7.png with a good run folder)", "", calibration("1.0")),
    "dds": ("predict bad.dds 7.png", "traceback, exit 1, neither read", bad_dds_and_a_seven),
    "fits": ("predict a 146 KB gzip FITS of 6,000²", "12 s, 1.8 GB", gzip_fits),
    "nested": ("predict 1,500 nested folders", "RecursionError", nested_folders),
    "nan": ("calibration.json temperature NaN", "traceback", calibration("NaN")),
    "tiny": ("calibration.json temperature 1e-320", "0 (nan%), exit 0", calibration("1e-320")),
    "inf": ("calibration.json temperature inf", "uniform 10 %, exit 0", calibration("Infinity")),
    "deep-json": ("calibration.json nested 100,000 deep", "RecursionError", deep_calibration),
    "fifo-calibration": ("calibration.json a FIFO", "hangs for ever", run_file_replaced("calibration.json", "fifo")),
    "fifo-detector": ("not_a_digit.npz a FIFO", "hangs for ever", run_file_replaced("not_a_digit.npz", "fifo")),
    "zero-detector": ("not_a_digit.npz a link to /dev/zero", "4.3 GB, then MemoryError",
                      run_file_replaced("not_a_digit.npz", "zero")),
    "npz-declares": ("not_a_digit.npz member declaring 4 GB", "traceback (1 TiB)", detector_declaring(4_000_000_000)),
    "npz-inflates": ("not_a_digit.npz member inflating to 2 GiB", "2.7 GB resident", detector_inflating),
    "batch": ("space reaching --batch-size 2⁶³−1",  "segmentation fault",
              space('base = "quick-cnn"\n[search.batch_size]\nlow = 1\nhigh = 9223372036854775807\n')),
    "seed": ("space seed 2⁴⁰", "traceback",
             space('base = "quick-cnn"\nseed = 1099511627776\n[search.epochs]\nlow = 1\nhigh = 3\n')),
    "space-deep": ("space nested 100,000 deep", "RecursionError",
                   space('base = "quick-cnn"\nx = ' + "[" * 100_000 + "]" * 100_000 + "\n")),
    "choices": ("space with 1,000,000 choices", "accepted: 37 s, 1.4 GB",
                space('base = "quick-cnn"\n[search.seed]\nchoices = [' + ",".join(map(str, range(10**6))) + "]\n")),
    "export-link": ("export --out d/a.onnx, link at d/a.onnx.json", "wrote outside d/", export_through_link),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(ATTACKS), action="append", help="run only these attacks")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| attack | before | exit | seconds | peak memory | what the user reads |")
    print("|---|---|---|---|---|---|")
    for name in args.only or list(ATTACKS):
        description, before, attack = ATTACKS[name]
        folder = Path(tempfile.mkdtemp())
        try:
            arguments = attack(folder)
            result = run_digits(arguments, folder)
            if name == "export-link":
                written = (folder / "outside.json").exists()
                result["stderr"] += f" (outside.json {'written' if written else 'not written'})"
            if result["stdout"].strip() and arguments[0] == "predict":  # The batch's lines: one per file.
                result["stderr"] = " / ".join(line.split(": ", 1)[1][:110] for line in result["stdout"].splitlines())
        finally:
            remove_deep(folder)
        said = result["stderr"][:160] + (" TRACEBACK" if result["traceback"] else "")
        print(f"| {description} | {before} | {result['status']} | {result['seconds']:.1f} | "
              f"{result['peak_mb']:.0f} MB | {said} |", flush=True)

if __name__ == "__main__":
    sys.exit(main())
