"""What a worker process of `digits serve` runs: it prepares each picture its pipe brings and answers its layout.

`digits.serving.workers` starts these processes, hands them pictures and reads their answers.
"""

from __future__ import annotations

import io
import os
import signal
import traceback

import numpy as np
from PIL import Image

from digits.inference.preparation import limit_memory
from digits.pictures import decode

# The traceback of one error is cut to this many characters (its last lines: where it failed).
ERROR_LOG_CHARACTERS = 4000


def serve_preparations(connection, memory_limit: int) -> None:
    """A worker's life: prepare each picture the pipe brings, answer its view or its error, until the pipe closes."""
    # Imported here: SciPy's filters (0.2 s) are needed in the workers, not in the server that must start answering.
    from digits.pictures.drawing import drawing_image
    from digits.pictures.segment import find_digits, find_digits_in_file

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    find_digits_in_file(warm_up_png())  # Loads what the first picture needs (SciPy's filters, Pillow's PNG reader).
    limit_memory(memory_limit)
    silence_stderr()
    connection.send("ready")
    while True:
        try:
            data, name, drawing = connection.recv()
        except (EOFError, OSError):
            return  # The server has gone.
        try:
            if drawing is None:
                answer: tuple[str, object] = ("layout", find_digits_in_file(data, name=name))
            else:  # Its header was checked by the server: its pixels are read as they are.
                answer = ("layout", find_digits(drawing_image(data, drawing), name=name))
        except decode.ImageError as error:
            answer = ("error", error)
        except MemoryError:
            answer = ("error", decode.ImageTooLarge(
                f"{name} needs more than the {memory_limit / 2**20:,.0f} MB of memory this "
                "server gives one picture; send a smaller picture."))
        except Exception:  # noqa: BLE001  A bug, not the picture's fault: the log gets the traceback, the client a 500.
            answer = ("bug", traceback.format_exc()[-ERROR_LOG_CHARACTERS:])
        del data
        connection.send(answer)


def silence_stderr() -> None:
    """Send what a worker would write to stderr nowhere: its errors go to the server through the pipe.

    Hostile files make decoders warn at every picture (libtiff's own messages, Pillow's warnings): written to
    the server's log they could fill its disk. DIGITS_NATIVE_STDERR=1 keeps them, as for the server itself.
    """
    if os.environ.get("DIGITS_NATIVE_STDERR"):
        return
    import warnings

    warnings.simplefilter("ignore")
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    except OSError:
        pass


def warm_up_png() -> bytes:
    """A small PNG of a "1" (a dark bar on white) that runs the whole preparation."""
    canvas = np.full((28, 28), 255, np.uint8)
    canvas[5:23, 12:16] = 0
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "PNG")
    return buffer.getvalue()
