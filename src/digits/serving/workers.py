"""The server's workers: pictures are prepared in worker processes, each within its time and memory limits.

`digits.serving.app` hands each request's picture to a `PicturePreparer` and the resulting 28×28 views to a
`digits.serving.batching.BatchClassifier`; both keep the event loop free to answer other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

# One home for a picture's limits: `digits predict` prepares files under the same ones (re-exported here).
from digits.inference.preparation import PREPARATION_SECONDS, WORKER_MEMORY_BYTES, limit_memory
from digits.pictures import decode

if TYPE_CHECKING:
    from digits.pictures.segment import Layout

# Worker processes that prepare pictures, one per core of a small machine; more pictures wait their turn.
PREPARATION_PROCESSES = 2
# Pictures waiting for a free worker beyond this many are refused (503) rather than queued without end.
MAX_WAITING_PICTURES = 64
# A picture (pickled with its name) up to this size is written to an idle worker's connection at once: the empty
# socket pair (Linux gives it 208 KB, net.core.wmem_default) takes it without blocking, and were it smaller the
# idle worker is reading. A bigger one is written from a thread, which waits while the worker reads it. The
# page's drawings are 39 KB of grey pixels; the thread's round trip cost each about 0.1 ms of CPU.
DIRECT_SEND_BYTES = 64 * 1024
# Workers that die while starting are replaced, up to this many in a row; then the server stops trying
# (a worker that can never start, as with a broken installation, would otherwise be restarted without end).
MAX_FAILED_STARTS = 2 * PREPARATION_PROCESSES
# A worker's error (a bug: a picture it failed on for a reason other than the picture) goes to the server's
# log, at most this many in ERROR_LOG_SECONDS; more are counted, not written, so that a client sending the
# same bad picture in a loop cannot fill the disk the log is written to.
ERROR_LOG_COUNT, ERROR_LOG_SECONDS = 10, 60.0
# The traceback of one error is cut to this many characters (its last lines: where it failed).
ERROR_LOG_CHARACTERS = 4000


STOPPING_SENTENCE = "The server is stopping; send the picture again in a moment."


class PreparationFailed(Exception):
    """A picture was not prepared (too slow, worker died, server busy); a sentence and an HTTP status for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PicturePreparer:
    """Prepares pictures in worker processes, each picture within a time limit, so the event loop only speaks HTTP.

    Preparing a picture is 2–3 ms of NumPy, SciPy and Pillow that mostly holds Python's GIL: done on the event
    loop it delays every other request, and threads only take turns with the loop. Separate processes run on
    the other cores. A hostile file can cost minutes (a progressive JPEG of 20,000 scans) or gigabytes: a worker
    that has not answered within `time_limit` seconds, or whose client left, is killed and replaced, and each
    worker's memory is capped. Workers are spawned, not forked: the server has TensorFlow's threads running,
    and a fork copies none of them safely. They import digits.pictures.decode, not TensorFlow (about 60 MB each),
    ignore Ctrl+C, which the server handles by closing them, and exit when the server's end of their pipe closes.
    """

    def __init__(self, processes: int = PREPARATION_PROCESSES, time_limit: float = PREPARATION_SECONDS):
        self.processes = processes
        self.time_limit = time_limit
        self.workers: list[PreparationWorker] = []  # All live workers: starting, idle or busy.
        self.idle: list[PreparationWorker] = []
        self.starting: list[PreparationWorker] = []  # Started, not yet ready, and not yet watched by a task.
        self.waiting: list[asyncio.Future] = []  # Requests waiting for an idle worker, first come first served.
        self.becoming_ready: set[asyncio.Task] = set()
        self.failed_starts = 0  # Workers in a row that died before they were ready.
        self.error_log = ErrorLog()
        self.stopping = False  # Set by stop_accepting: no new picture is taken and no worker started.

    @property
    def started(self) -> bool:
        return bool(self.workers) or bool(self.becoming_ready)

    def start(self, wait: bool = True) -> None:
        """Start the workers; with `wait`, wait until each has imported the preparation code (about half a second).

        Without waiting, the workers get ready while the caller goes on (a server loads its model and starts
        listening meanwhile); a picture that arrives before any is ready waits for the first one.
        """
        if not self.started:
            self.starting = [PreparationWorker() for _ in range(self.processes)]
            self.workers = list(self.starting)
        if wait:
            for worker in self.starting:
                worker.wait_ready()
            self.idle += self.starting
            self.starting = []

    async def __call__(self, data: bytes, name: str, drawing: tuple[int, int, int] | None = None) -> Layout:
        """The candidate digits of an image file's bytes (`Layout`), exactly as `digits predict` reads a file.

        `drawing`: the bytes are a drawing of this `digits.pictures.drawing.drawing_size`, read without a decoder.
        Raises what `digits.pictures.segment.find_digits_in_file` raises (ImageError, NoDigitError, TooManyDigits),
        or PreparationFailed.
        """
        self.start(wait=False)
        for worker in self.starting:  # Workers started before the event loop ran: each joins when ready.
            self.join_when_ready(worker)
        self.starting = []
        worker = await self.idle_worker()
        try:
            kind, answer = await worker.prepare(data, name, self.time_limit, drawing)
        except TimeoutError:
            self.replace(worker)
            raise PreparationFailed(
                422, f"Preparing {name} took longer than the {self.time_limit:g} s this server allows for a picture; "
                "send a simpler picture (a PNG or a baseline JPEG)."
            ) from None
        except (EOFError, OSError):
            # The worker died (killed, or out of memory): the next request gets a new one. It has ended, so waiting
            # for it costs nothing, and gives its exit status to the log.
            self.replace(worker, wait=True)
            self.error_log.write(f"a worker process ended (exit status {worker.process.exitcode}) while preparing "
                                 f"{name}; another takes its place.")
            raise PreparationFailed(503, "The server's picture preparation failed; send the picture again.") from None
        except BaseException:
            self.replace(worker)  # The client left (the request was cancelled): its work stops with it.
            raise
        self.release(worker)
        if kind == "bug":
            self.error_log.write(f"preparing {name} failed in a worker process:\n{answer}")
            raise PreparationFailed(500, f"The server failed to prepare {name}; see its log.")
        if isinstance(answer, BaseException):  # ("error", the ImageError the worker raised)
            raise answer
        return answer  # type: ignore[return-value]

    async def idle_worker(self) -> PreparationWorker:
        """A worker for the next picture; first come, first served (a freed worker is handed to the next in line)."""
        if self.stopping:
            raise PreparationFailed(503, STOPPING_SENTENCE)
        if self.idle and not self.waiting:
            worker = self.idle.pop()
        else:
            if len(self.waiting) >= MAX_WAITING_PICTURES:
                raise PreparationFailed(
                    503, f"The server is already preparing {MAX_WAITING_PICTURES} pictures; send it again in a moment."
                )
            turn: asyncio.Future = asyncio.get_running_loop().create_future()
            self.waiting.append(turn)
            try:
                worker = await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self.release(turn.result())  # Handed a worker just as its client left: pass it on.
                raise
            finally:
                if turn in self.waiting:
                    self.waiting.remove(turn)
        if not worker.process.is_alive():  # Killed while idle (out of memory elsewhere): use a fresh one.
            self.replace(worker)
            return await self.idle_worker()
        return worker

    def release(self, worker: PreparationWorker) -> None:
        while self.waiting:
            turn = self.waiting.pop(0)
            if not turn.done():
                turn.set_result(worker)
                return
        self.idle.append(worker)

    def replace(self, worker: PreparationWorker, wait: bool = False) -> None:
        """Kill a worker whose picture was abandoned, and start another in the background."""
        worker.stop(wait=wait)
        if worker in self.workers:
            self.workers.remove(worker)
        if self.stopping:
            return
        fresh = PreparationWorker()
        self.workers.append(fresh)
        self.join_when_ready(fresh)

    def join_when_ready(self, worker: PreparationWorker) -> None:
        task = asyncio.get_running_loop().create_task(self.when_ready(worker))
        self.becoming_ready.add(task)
        task.add_done_callback(self.becoming_ready.discard)

    async def when_ready(self, worker: PreparationWorker) -> None:
        try:
            await worker.readable(timeout=None)
            ready = worker.connection.recv()
        except (EOFError, OSError):
            ready = None
        if worker not in self.workers or self.stopping:
            return  # Stopped meanwhile (the server is closing, or it was replaced).
        if ready == "ready":
            self.failed_starts = 0
            self.release(worker)
            return
        # It died while importing (killed, or out of memory): another takes its place, so that the server keeps
        # all its workers. A worker that cannot start at all (a broken installation) is not restarted for ever:
        # after MAX_FAILED_STARTS in a row requests wait for the others, and with none left they hear why.
        worker.stop()
        self.workers.remove(worker)
        self.failed_starts += 1
        if self.failed_starts <= MAX_FAILED_STARTS:
            fresh = PreparationWorker()
            self.workers.append(fresh)
            self.join_when_ready(fresh)
            return
        if not self.workers:
            for turn in self.waiting:
                if not turn.done():
                    turn.set_exception(PreparationFailed(
                        503, "The server's picture preparation workers failed to start; send the picture again."))

    def stop_accepting(self) -> None:
        """The server is stopping: pictures waiting for a worker get 503 now, and new ones too; a picture being
        prepared is still answered, within its time limit."""
        self.stopping = True
        for turn in self.waiting:
            if not turn.done():
                turn.set_exception(PreparationFailed(503, STOPPING_SENTENCE))

    def close(self) -> None:
        for task in self.becoming_ready:
            task.cancel()
        for worker in self.workers:
            worker.stop()
        self.workers, self.idle, self.starting = [], [], []
        for turn in self.waiting:
            if not turn.done():
                turn.set_exception(PreparationFailed(503, "The server is stopping; send the picture again later."))


class ErrorLog:
    """The server's log (its stderr) for the workers' errors: at most ERROR_LOG_COUNT per ERROR_LOG_SECONDS.

    The workers send their tracebacks back through their pipe, so they are written here, by the server, where
    its operator reads them (a worker's own stderr is the server's native log, a deleted temporary file, when
    the command line runs it).
    """

    def __init__(self, count: int | None = None, seconds: float | None = None):
        self.count = ERROR_LOG_COUNT if count is None else count
        self.seconds = ERROR_LOG_SECONDS if seconds is None else seconds
        self.window_start = -float("inf")
        self.written = self.left_out = 0

    def write(self, text: str) -> None:
        now = time.monotonic()
        if now - self.window_start >= self.seconds:
            if self.left_out:
                self.emit(f"{self.left_out:,} more worker errors in {self.seconds:g} s were not logged.")
            self.window_start, self.written, self.left_out = now, 0, 0
        if self.written >= self.count:
            self.left_out += 1
            return
        self.written += 1
        if self.written == self.count:
            text += f"\n(The next worker errors in {self.seconds:g} s are counted, not logged.)"
        self.emit(text)

    @staticmethod
    def emit(text: str) -> None:
        try:
            print(f"digits serve: {text.rstrip()}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass  # No log to write to (stderr closed): the client still gets its 500.


class PreparationWorker:
    """One process that prepares pictures sent through its pipe, one at a time."""

    def __init__(self):
        context = multiprocessing.get_context("spawn")
        self.connection, worker_end = context.Pipe()
        self.process = context.Process(target=serve_preparations, args=(worker_end, WORKER_MEMORY_BYTES), daemon=True)
        self.process.start()
        worker_end.close()

    def wait_ready(self) -> None:
        try:
            ready = self.connection.recv()
        except (EOFError, OSError):
            ready = None
        if ready != "ready":
            raise PreparationFailed(503, "A picture preparation worker failed to start.")

    async def prepare(self, data: bytes, name: str, time_limit: float,
                      drawing: tuple[int, int, int] | None = None) -> tuple[str, object]:
        deadline = time.monotonic() + time_limit
        message = ForkingPickler.dumps((data, name, drawing))  # What `connection.send(...)` writes.
        if len(message) <= DIRECT_SEND_BYTES:
            self.connection.send_bytes(message)
        else:
            # Sending 10 MB through a pipe waits for the worker to read it; a thread keeps the loop free.
            sending = asyncio.get_running_loop().run_in_executor(None, self.connection.send_bytes, message)
            await asyncio.wait_for(sending, time_limit)
        await self.readable(timeout=max(0.0, deadline - time.monotonic()))
        return self.connection.recv()

    async def readable(self, timeout: float | None) -> None:
        """Wait until the worker answered (or died, which reads as end of file)."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        descriptor = self.connection.fileno()

        def answered() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(descriptor, answered)
        try:
            await asyncio.wait_for(ready, timeout)
        finally:
            loop.remove_reader(descriptor)

    def stop(self, wait: bool = True) -> None:
        """Kill the process. `wait=False` (on the event loop) leaves waiting for its end to a thread: a worker that
        holds a large picture's memory takes 20-110 ms to end, and the loop answered nobody meanwhile."""
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        if wait:
            self.process.join(timeout=5)
        else:
            threading.Thread(target=self.process.join, args=(5,), daemon=True).start()


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
