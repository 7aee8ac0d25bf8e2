"""One picture-preparing worker process as the server sees it: its pipe, the pictures it holds, its answers read on
the event loop; the error a request gets when its picture is not prepared; the log the workers' errors go to.

`digits.serving.workers.PicturePreparer` starts, hands out, replaces and stops these workers; the worker's own side
is `digits.serving.worker_process`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from digits.inference.preparation import WORKER_MEMORY_BYTES
from digits.serving.worker_process import serve_preparations

# A picture (pickled with its name) up to this size is written to an idle worker's connection at once: the empty
# socket pair (Linux gives it 208 KB, net.core.wmem_default) takes it without blocking, and were it smaller the
# idle worker is reading. A bigger one is written from a thread, which waits while the worker reads it. The
# page's drawings are 39 KB of grey pixels; the thread's round trip cost each about 0.1 ms of CPU.
DIRECT_SEND_BYTES = 64 * 1024
# A worker holds up to this many of the page's drawings at once: the one it prepares and the next in its pipe, which
# it starts the moment it answers, instead of waiting for the event loop to read its answer and send it another
# (4-5 ms on two busy cores, while its preparing took 3; docs/serving-speed.md). Pictures that are not such drawings
# get a worker of their own. Three drawings' messages (39 KB each, DIRECT_SEND_BYTES at most) fit the socket pair's
# buffer.
DRAWINGS_PER_WORKER = 3
# A worker's error (a bug: a picture it failed on for a reason other than the picture) goes to the server's
# log, at most this many in ERROR_LOG_SECONDS; more are counted, not written, so that a client sending the
# same bad picture in a loop cannot fill the disk the log is written to.
ERROR_LOG_COUNT, ERROR_LOG_SECONDS = 10, 60.0


class PreparationFailed(Exception):
    """A picture was not prepared (too slow, worker died, server busy); a sentence and an HTTP status for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
    """One process that prepares pictures sent through its pipe, one at a time, in the order they were sent.

    `has_room(worker)` is called each time the worker answers, when it has room for another picture.
    """

    def __init__(self, has_room: Callable[[PreparationWorker], None] | None = None):
        self.has_room = has_room
        self.pictures = 0  # Pictures it holds (handed to it, not yet answered).
        self.small_drawings_only = True  # Whether those are all small drawings, which others may join.
        self.answers: deque[asyncio.Future] = deque()  # For the pictures written to it, in order.
        self.loop: asyncio.AbstractEventLoop | None = None  # Reading its answers, while some are awaited.
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

    def takes(self, small_drawing: bool) -> bool:
        """Whether it has room for a picture: a small drawing joins small drawings; any other picture needs it idle."""
        if small_drawing:
            return self.small_drawings_only and self.pictures < DRAWINGS_PER_WORKER
        return not self.pictures

    def hold(self, small_drawing: bool) -> None:
        self.pictures += 1
        self.small_drawings_only = self.small_drawings_only and small_drawing

    def let_go(self) -> None:
        """A picture's place is free (its answer was read, or it was never sent)."""
        self.pictures -= 1
        if not self.pictures:
            self.small_drawings_only = True

    async def prepare(self, message: bytes | memoryview, time_limit: float) -> tuple[str, object]:
        """Write a picture's pickled message to the worker and await its answer, within `time_limit` seconds of the
        worker starting it (after the small drawings written before it, each within its own limit)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + time_limit * (1 + len(self.answers))
        answer = loop.create_future()
        if len(message) <= DIRECT_SEND_BYTES:
            self.connection.send_bytes(message)
        else:
            # Sending 10 MB through a pipe waits for the worker to read it; a thread keeps the loop free.
            try:
                await asyncio.wait_for(loop.run_in_executor(None, self.connection.send_bytes, message), time_limit)
            except BaseException:
                self.let_go()  # Not sent: the worker is replaced, or its place is free again.
                raise
        self.answers.append(answer)
        if self.loop is None:
            self.loop = loop
            loop.add_reader(self.connection.fileno(), self.read_answer)
        return await asyncio.wait_for(answer, max(0.0, deadline - time.monotonic()))

    def read_answer(self) -> None:
        """The event loop's callback when an answer has arrived: it goes to its picture's request (dropped if the
        request has gone), and the worker's place to the next picture waiting."""
        try:
            reply = self.connection.recv()
        except (EOFError, OSError):
            self.stop_reading(EOFError())  # It died: every picture it held fails.
            return
        answer = self.answers.popleft()
        if not self.answers:
            self.stop_reading()
        if not answer.done():
            answer.set_result(reply)
        self.let_go()
        if self.has_room is not None:
            self.has_room(self)

    def stop_reading(self, error: BaseException | None = None) -> None:
        """Stop watching for answers; with `error`, the pictures still awaited fail with it."""
        loop, self.loop = self.loop, None
        if loop is not None and loop.is_closed():
            return  # Stopped after the server's loop ended: nobody awaits an answer any more.
        if loop is not None:
            loop.remove_reader(self.connection.fileno())
        while self.answers:
            answer = self.answers.popleft()
            if error is not None and not answer.done():
                answer.set_exception(error)

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
        holds a large picture's memory takes 20-110 ms to end, and the loop answered nobody meanwhile. Pictures still
        written to it fail with EOFError."""
        if not self.connection.closed:
            self.stop_reading(EOFError())
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        if wait:
            self.process.join(timeout=5)
        else:
            threading.Thread(target=self.process.join, args=(5,), daemon=True).start()
