"""The server's workers: pictures are prepared in worker processes, each within its time and memory limits.

`digits.serving.app` hands each request's picture to a `PicturePreparer` and the resulting 28×28 views to a
`digits.serving.batching.BatchClassifier`; both keep the event loop free to answer other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING

# One home for a picture's limits: `digits predict` prepares files under the same ones.
from digits.inference.preparation import PREPARATION_SECONDS
from digits.serving.preparation_worker import (
    DIRECT_SEND_BYTES,
    ErrorLog,
    PreparationFailed,
    PreparationWorker,
)

if TYPE_CHECKING:
    from digits.pictures.segment import Layout

# Worker processes that prepare pictures, one per core of a small machine; more pictures wait their turn.
PREPARATION_PROCESSES = 2
# Pictures waiting for a free worker beyond this many are refused (503) rather than queued without end.
MAX_WAITING_PICTURES = 64
# Workers that die while starting are replaced, up to this many in a row; then the server stops trying
# (a worker that can never start, as with a broken installation, would otherwise be restarted without end).
MAX_FAILED_STARTS = 2 * PREPARATION_PROCESSES


STOPPING_SENTENCE = "The server is stopping; send the picture again in a moment."
FAILED_SENTENCE = "The server's picture preparation failed; send the picture again."


class PicturePreparer:
    """Prepares pictures in worker processes, each picture within a time limit, so the event loop only speaks HTTP.

    Preparing a picture is 2–3 ms of NumPy, SciPy and Pillow that mostly holds Python's GIL: done on the event
    loop it delays every other request, and threads only take turns with the loop. Separate processes run on
    the other cores. A hostile file can cost minutes (a progressive JPEG of 20,000 scans) or gigabytes: a worker
    that has not answered within `time_limit` seconds, or whose client left, is killed and replaced, and each
    worker's memory is capped. Workers are spawned, not forked: the server has TensorFlow's threads running,
    and a fork copies none of them safely. They import digits.pictures.decode, not TensorFlow (about 60 MB each),
    ignore Ctrl+C, which the server handles by closing them, and exit when the server's end of their pipe closes.
    A worker holds up to DRAWINGS_PER_WORKER of the page's drawings, the next ones waiting in its pipe; any other
    picture has a worker to itself, which alone is killed when its client leaves.
    """

    def __init__(self, processes: int = PREPARATION_PROCESSES, time_limit: float = PREPARATION_SECONDS):
        self.processes = processes
        self.time_limit = time_limit
        self.workers: list[PreparationWorker] = []  # All live workers: starting, idle or busy.
        self.ready: list[PreparationWorker] = []  # The live workers that have started: idle or busy.
        self.starting: list[PreparationWorker] = []  # Started, not yet ready, and not yet watched by a task.
        # Requests waiting for a worker, first come first served, each with whether its picture is a small drawing.
        self.waiting: list[tuple[asyncio.Future, bool]] = []
        self.becoming_ready: set[asyncio.Task] = set()
        self.failed_starts = 0  # Workers in a row that died before they were ready.
        self.error_log = ErrorLog()
        self.stopping = False  # Set by stop_accepting: no new picture is taken and no worker started.

    @property
    def idle(self) -> list[PreparationWorker]:
        """The ready workers that hold no picture."""
        return [worker for worker in self.ready if not worker.pictures]

    @property
    def started(self) -> bool:
        return bool(self.workers) or bool(self.becoming_ready)

    def start(self, wait: bool = True) -> None:
        """Start the workers; with `wait`, wait until each has imported the preparation code (about half a second).

        Without waiting, the workers get ready while the caller goes on (a server loads its model and starts
        listening meanwhile); a picture that arrives before any is ready waits for the first one.
        """
        if not self.started:
            self.starting = [PreparationWorker(self.release) for _ in range(self.processes)]
            self.workers = list(self.starting)
        if wait:
            for worker in self.starting:
                worker.wait_ready()
            self.ready += self.starting
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
        message = ForkingPickler.dumps((data, name, drawing))  # What `connection.send(...)` writes.
        small_drawing = drawing is not None and len(message) <= DIRECT_SEND_BYTES
        worker = await self.free_worker(small_drawing)
        try:
            kind, answer = await worker.prepare(message, self.time_limit)
        except TimeoutError:
            self.replace(worker)
            raise PreparationFailed(
                422, f"Preparing {name} took longer than the {self.time_limit:g} s this server allows for a picture; "
                "send a simpler picture (a PNG or a baseline JPEG)."
            ) from None
        except (EOFError, OSError):
            if worker not in self.workers:  # Stopped for a drawing before this one in its pipe (over its time limit).
                raise PreparationFailed(503, FAILED_SENTENCE) from None
            # The worker died (killed, or out of memory): the next request gets a new one. It has ended, so waiting
            # for it costs nothing, and gives its exit status to the log.
            self.replace(worker, wait=True)
            self.error_log.write(f"a worker process ended (exit status {worker.process.exitcode}) while preparing "
                                 f"{name}; another takes its place.")
            raise PreparationFailed(503, FAILED_SENTENCE) from None
        except BaseException:
            # The client left (the request was cancelled). A picture's work, which may take minutes, stops with it; a
            # small drawing's milliseconds are finished and its answer dropped, as other drawings may wait behind it.
            if not small_drawing:
                self.replace(worker)
            raise
        if kind == "bug":
            self.error_log.write(f"preparing {name} failed in a worker process:\n{answer}")
            raise PreparationFailed(500, f"The server failed to prepare {name}; see its log.")
        if isinstance(answer, BaseException):  # ("error", the ImageError the worker raised)
            raise answer
        return answer  # type: ignore[return-value]

    async def free_worker(self, small_drawing: bool) -> PreparationWorker:
        """A worker with room for the next picture, which holds its place (`PreparationWorker.hold`); first come, first
        served (a place freed is handed to the next in line). A small drawing goes to the least busy worker holding
        only small drawings, fewer than DRAWINGS_PER_WORKER; any other picture waits for an idle worker."""
        if self.stopping:
            raise PreparationFailed(503, STOPPING_SENTENCE)
        worker = None
        if not self.waiting:
            worker = min((worker for worker in self.ready if worker.takes(small_drawing)),
                         key=lambda worker: worker.pictures, default=None)
        if worker is not None:
            worker.hold(small_drawing)
        else:
            if len(self.waiting) >= MAX_WAITING_PICTURES:
                raise PreparationFailed(
                    503, f"The server is already preparing {MAX_WAITING_PICTURES} pictures; send it again in a moment."
                )
            turn: asyncio.Future = asyncio.get_running_loop().create_future()
            self.waiting.append((turn, small_drawing))
            try:
                worker = await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    # Handed a place just as its client left: pass it on.
                    turn.result().let_go()
                    self.release(turn.result())
                raise
            finally:
                if (turn, small_drawing) in self.waiting:
                    self.waiting.remove((turn, small_drawing))
        if not worker.process.is_alive():  # Killed while idle (out of memory elsewhere): use a fresh one.
            self.replace(worker)
            return await self.free_worker(small_drawing)
        return worker

    def release(self, worker: PreparationWorker) -> None:
        """A worker is ready, or has room again (it answered): its places go to the requests waiting, in turn."""
        if worker not in self.workers:
            return  # Stopped meanwhile.
        if worker not in self.ready:
            self.ready.append(worker)
        while self.waiting:
            turn, small_drawing = self.waiting[0]
            if turn.done():
                self.waiting.pop(0)
                continue
            if not worker.takes(small_drawing):
                return  # The first in line waits for a worker with room for its picture.
            self.waiting.pop(0)
            worker.hold(small_drawing)
            turn.set_result(worker)

    def replace(self, worker: PreparationWorker, wait: bool = False) -> None:
        """Kill a worker whose picture was abandoned, and start another in the background."""
        worker.stop(wait=wait)
        if worker in self.ready:
            self.ready.remove(worker)
        if worker not in self.workers:
            return  # Already replaced, for another picture it held.
        self.workers.remove(worker)
        if self.stopping:
            return
        fresh = PreparationWorker(self.release)
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
            fresh = PreparationWorker(self.release)
            self.workers.append(fresh)
            self.join_when_ready(fresh)
            return
        if not self.workers:
            for turn, _ in self.waiting:
                if not turn.done():
                    turn.set_exception(PreparationFailed(
                        503, "The server's picture preparation workers failed to start; send the picture again."))

    def stop_accepting(self) -> None:
        """The server is stopping: pictures waiting for a worker get 503 now, and new ones too; a picture being
        prepared is still answered, within its time limit."""
        self.stopping = True
        for turn, _ in self.waiting:
            if not turn.done():
                turn.set_exception(PreparationFailed(503, STOPPING_SENTENCE))

    def close(self) -> None:
        for task in self.becoming_ready:
            task.cancel()
        for worker in self.workers:
            worker.stop()
        self.workers, self.ready, self.starting = [], [], []
        for turn, _ in self.waiting:
            if not turn.done():
                turn.set_exception(PreparationFailed(503, "The server is stopping; send the picture again later."))
