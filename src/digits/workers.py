"""The server's workers: pictures are prepared in worker processes, and classified in batches in a thread.

`digits.serve` hands each request's picture to a `PicturePreparer` and the resulting 28×28 view to a
`BatchClassifier`; both keep the event loop free to answer other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import io
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

import anyio.to_thread
import numpy as np
from PIL import Image

from digits import images

if TYPE_CHECKING:
    from digits.predict import Classifier

# Worker processes that prepare pictures, one per core of a small machine; more pictures wait their turn.
PREPARATION_PROCESSES = 2
# The most pictures one inference call classifies; more wait for the next call.
MAX_BATCH = 64


class PreparationFailed(Exception):
    """A preparation worker died before answering; the message is a sentence for the client."""


def compiled_predict(classifier: Classifier) -> Callable[[np.ndarray], np.ndarray]:
    """`classifier.predict` as a traced TensorFlow graph: the same probabilities, a tenth of the overhead.

    Calling a Keras model eagerly costs several milliseconds per call whatever the batch size; a server
    answering one picture per request pays that every time. Other backends use `classifier.predict` as is.
    """
    import keras

    if keras.backend.backend() != "tensorflow" or not isinstance(classifier.model, keras.Model):
        return classifier.predict
    import tensorflow as tf

    from digits.data import to_model_input

    model = classifier.model

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
    def probabilities(model_input):
        return model(model_input, training=False)

    def predict(images: np.ndarray) -> np.ndarray:
        return probabilities(to_model_input(images)).numpy()  # (N, 10)

    predict(np.zeros((1, 28, 28), np.uint8))  # Trace now, so the first visitor does not wait for it.
    return predict


class BatchClassifier:
    """Classifies the pictures of concurrent requests together: one inference call answers all who wait.

    A call costs about 0.7 ms of CPU for one picture but 0.18 ms per picture for 16 or more: most of it is
    Python and TensorFlow overhead, which batching shares. With 16 requests at once, each cost the whole
    server 2.4 ms of CPU instead of 3.0 ms. A picture alone is classified at once, and each picture gets
    the probabilities a call for it alone gives, up to float rounding.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int = MAX_BATCH):
        self.predict = predict
        self.max_batch = max_batch
        self.waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self.worker: asyncio.Task | None = None

    async def __call__(self, view: np.ndarray) -> np.ndarray:
        """The ten probabilities for one (28, 28) view."""
        answer = asyncio.get_running_loop().create_future()
        self.waiting.append((view, answer))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self.answer_waiting())
        return await answer

    async def answer_waiting(self) -> None:
        # The worker ends as soon as nobody waits, so nothing is left running when the server stops.
        while self.waiting:
            batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
            answers = [answer for _, answer in batch]
            try:
                views = np.stack([view for view, _ in batch])  # (N, 28, 28)
                probabilities = await anyio.to_thread.run_sync(self.predict, views)  # (N, 10)
                for answer, row in zip(answers, np.asarray(probabilities, dtype=np.float64), strict=True):
                    if not answer.done():  # A request whose client left is cancelled.
                        answer.set_result(row)
            except Exception as error:  # noqa: BLE001  Whatever failed, every waiting request hears of it.
                for answer in answers:
                    if not answer.done():
                        answer.set_exception(error)
            finally:
                # Answers still open here mean the worker itself was cancelled (the server is stopping).
                for answer in answers:
                    answer.cancel()


class PicturePreparer:
    """Prepares pictures in worker processes, so the event loop only speaks HTTP while they work.

    Preparing a picture is 2–3 ms of NumPy, SciPy and Pillow that mostly holds Python's GIL: done on the event
    loop it delays every other request, and threads only take turns with the loop. Separate processes run on
    the other cores. They are spawned, not forked: the server has TensorFlow's threads running, and a fork
    copies none of them safely. They import digits.images, not TensorFlow (about 60 MB each), and ignore
    Ctrl+C, which the server handles by closing them.
    """

    def __init__(self, processes: int = PREPARATION_PROCESSES):
        self.processes = processes
        self.pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers and wait until each has imported the preparation code (about a second)."""
        if self.pool is not None:
            return
        self.pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
        # The pool starts a worker per waiting job, so as many jobs at once start them all.
        picture = warm_up_png()
        warm_up = [self.pool.submit(images.prepare_file, picture) for _ in range(self.processes)]
        for job in warm_up:
            job.result()

    async def __call__(self, data: bytes, name: str) -> np.ndarray:
        """The (28, 28) uint8 view of an image file's bytes, exactly as `digits predict` reads a file.

        Raises what `images.prepare_file` raises (ImageError, NoDigitError), or PreparationFailed.
        """
        self.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self.pool, functools.partial(images.prepare_file, data, name=name))
        except BrokenProcessPool as error:
            # A worker died (killed, or out of memory on a huge picture): the next request starts new ones.
            self.close()
            raise PreparationFailed("The server's picture preparation failed; send the picture again.") from error

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def warm_up_png() -> bytes:
    """A small PNG of a "1" (a dark bar on white) that runs the whole preparation."""
    canvas = np.full((28, 28), 255, np.uint8)
    canvas[5:23, 12:16] = 0
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, "PNG")
    return buffer.getvalue()
