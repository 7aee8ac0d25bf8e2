"""Preparing a user's picture files in a worker process, within the time and memory the server gives one picture.

`digits predict` and `digits.predict` read files a user hands them, and a hostile or merely odd file (a
GZIP-compressed FITS of 160 KB, a progressive JPEG of 20,000 scans) can cost gigabytes or minutes to decode. The
server prepares each upload in a worker process it kills after `PREPARATION_SECONDS` and whose memory it caps;
`BoundedPreparer` gives files the same limits: one worker process, a new Python running this module (not a fork:
the caller may have TensorFlow's threads running; and not multiprocessing's spawn, which imports the caller's
main script again, so a script calling `digits.predict` without an `if __name__ == "__main__"` guard would run
twice), with its address space capped; a file that takes too long, or
whose decoding kills the worker, is one sentence for that file, and the next file gets a fresh worker. Any other
failure of the picture libraries on one file (a DDS whose pixel format Pillow does not implement) is that
file's sentence too, never a traceback that stops the others.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from digits.pictures.decode import ImageError, ImageTooLarge, load_image
from digits.pictures.segment import Layout, find_digits

# A picture's limits, the server's workers' too (digits.serving.workers and preparation_worker import them), so a
# file is read the same way on both sides: an ordinary photo takes 2–3 ms and a 40-megapixel PNG about a second,
# while a hostile file can take minutes of CPU.
PREPARATION_SECONDS = 5.0
# Memory the worker may use beyond its own code, for one picture: a 40-megapixel RGBA picture is 160 MB decoded,
# and Pillow and NumPy make a few copies of it.
WORKER_MEMORY_BYTES = 1024 * 2**20
# Starting the worker imports Pillow, SciPy and NumPy (about a second on a loaded machine).
START_SECONDS = 60.0

# Each --show picture: the original, at most SHOW_HEIGHT tall (and twice that wide).
SHOW_HEIGHT = 280


class BoundedPreparer:
    """Prepares picture files one at a time in a worker process, each within `time_limit` seconds and
    `memory_limit` bytes; use it as a context manager, so the worker ends with the block."""

    def __init__(self, time_limit: float = PREPARATION_SECONDS, memory_limit: int = WORKER_MEMORY_BYTES):
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.process: subprocess.Popen | None = None
        self.connection: Connection | None = None

    def __enter__(self) -> BoundedPreparer:
        return self

    def __exit__(self, *exception) -> None:
        self.stop()

    def prepare(self, path: str | Path, *, keep_original: bool = False) -> tuple[Layout, np.ndarray | None, float]:
        """The digits found in the picture at `path` (`digits.pictures.segment.Layout`, each candidate prepared
        28×28) and, with keep_original, a small RGB copy of it ((h, w, 3) uint8, at most SHOW_HEIGHT tall) with
        the copy's pixels per picture pixel; ImageError with one sentence naming the file otherwise."""
        name = str(path)
        connection = self._started()
        connection.send((name, keep_original))
        if not connection.poll(self.time_limit):
            self.stop()
            raise ImageError(f"Preparing {name} took longer than the {self.time_limit:g} s digits allows for a "
                             "picture; save it as a simpler picture (a PNG or a baseline JPEG).")
        try:
            kind, answer = connection.recv()
        except (EOFError, OSError):
            # The worker died: the kernel killed it, or its allocator gave up beyond the memory cap.
            self.stop()
            raise ImageTooLarge(f"{name} needs more than the {self.memory_limit / 2**20:,.0f} MB of memory "
                                "digits gives one picture; shrink it before reading a digit from it.") from None
        if kind == "error":
            raise (ImageTooLarge if answer[0] else ImageError)(answer[1])
        return answer

    def _started(self) -> Connection:
        if self.process is not None and self.connection is not None and self.process.poll() is None:
            return self.connection
        self.stop()
        ours, theirs = socket.socketpair()
        # The worker imports the digits this process runs, wherever it lies (a checkout, a notebook's sys.path).
        source = str(Path(__file__).resolve().parents[2])
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source,
                                                                                 os.environ.get("PYTHONPATH")]))}
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "digits.inference.preparation", str(theirs.fileno()), str(self.memory_limit)],
                pass_fds=[theirs.fileno()], env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        self.connection = Connection(ours.detach())
        try:
            ready = self.connection.recv() if self.connection.poll(START_SECONDS) else None
        except (EOFError, OSError):
            ready = None
        if ready != "ready":
            self.stop()
            raise ImageError("The worker process that prepares pictures did not start; run the command again.")
        return self.connection

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=5)
            self.process = None


def serve_preparations(connection: Connection, memory_limit: int) -> None:
    """The worker: find the digits in each file the pipe names, answer ("layout", (layout, original, scale)) or
    ("error", (too large, sentence)), until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the caller's to handle: it stops this worker.
    limit_memory(memory_limit)
    connection.send("ready")
    while True:
        try:
            name, keep_original = connection.recv()
        except (EOFError, OSError):
            return  # The caller has gone.
        answer: tuple[str, object]
        try:
            image = load_image(name)
            layout = find_digits(image, name=name)
            original = display_copy(image) if keep_original else None
            answer = ("layout", (layout, None if original is None else np.asarray(original),
                                 1.0 if original is None else original.width / image.width))
        except ImageError as error:
            answer = ("error", (isinstance(error, ImageTooLarge), str(error)))
        except MemoryError:
            answer = ("error", (True, f"{name} needs more than the {memory_limit / 2**20:,.0f} MB of memory digits "
                                      "gives one picture; shrink it before reading a digit from it."))
        except Exception as error:  # noqa: BLE001  Pillow's readers raise many types for a damaged file.
            answer = ("error", (False, f"{name} cannot be decoded ({type(error).__name__} in the picture reader): it "
                                       "is damaged or a variant digits cannot read; save it again as a PNG or JPEG."))
        connection.send(answer)


def limit_memory(extra_bytes: int) -> None:
    """Cap this process's address space at what it uses now plus `extra_bytes` (Linux; elsewhere nothing)."""
    try:
        import resource

        pages = int(Path("/proc/self/statm").read_text().split()[0])
        limit = pages * resource.getpagesize() + extra_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass


def display_copy(image):
    """The picture as RGB, at most SHOW_HEIGHT tall (and twice that wide), transparency over mid grey."""
    from PIL import Image

    flat = _flatten_for_display(image)
    scale = min(SHOW_HEIGHT / flat.height, 2 * SHOW_HEIGHT / flat.width)
    size = (max(1, round(flat.width * scale)), max(1, round(flat.height * scale)))
    return flat.resize(size, Image.Resampling.LANCZOS)


def _flatten_for_display(image):
    """The picture as RGB; transparency shown over mid grey so both light and dark ink stay visible."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(backdrop, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels / max(float(pixels.max()), 1.0) * 255
        return Image.fromarray(pixels.astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


if __name__ == "__main__":
    # The worker: `python -m digits.inference.preparation DESCRIPTOR MEMORY_LIMIT`, started by BoundedPreparer.
    serve_preparations(Connection(int(sys.argv[1])), int(sys.argv[2]))
