"""Classifying the views of concurrent requests together: one inference call answers every request waiting.

`digits.serving.app` hands each request's prepared 28×28 views to a `BatchClassifier`; its pictures are prepared by
`digits.serving.workers.PicturePreparer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio.to_thread
import numpy as np

if TYPE_CHECKING:
    from digits.inference.prediction import Prediction, Predictions

# The most pictures one inference call classifies; more wait for the next call.
MAX_BATCH = 64
# While other requests' pictures are being prepared, a batch waits up to this long for their views to join it: a
# call's fixed cost (the model's 6 MB of weights, read from memory again after the work between two calls) is
# then shared. Nothing being prepared, a batch is classified at once.
GATHER_SECONDS = 0.005


class BatchClassifier:
    """Classifies the pictures of concurrent requests together: one inference call answers all who wait.

    `classify` is `digits.inference.classifier.Classifier.classify`, the method `digits predict` and
    `digits.predict` call, so each picture gets their answer. A call costs about 0.7 ms of CPU for one picture but
    0.18 ms per picture for 16 or more: most of it is Python and TensorFlow overhead, which batching shares. With
    16 requests at once, each cost the whole server 2.4 ms of CPU instead of 3.0 ms. A picture alone is classified
    at once, and each picture gets the answer a call for it alone gives, up to float rounding. While other requests'
    pictures are being prepared (`expect`), a batch waits for their views, at most `gather_seconds`.

    `in_loop`: call `classify` on the event loop instead of in a thread. ONNX Runtime reads a drawing's digits in
    about 0.1 ms, and handing them to a thread and back cost more than that (0.16 ms of CPU a call, measured
    side by side), and a whole batch (MAX_BATCH views) holds the loop about 6 ms; a Keras model takes
    milliseconds for one, which would hold up every other request, so it runs in a thread.
    """

    def __init__(self, classify: Callable[[np.ndarray], Predictions], max_batch: int = MAX_BATCH,
                 in_loop: bool = False, gather_seconds: float = GATHER_SECONDS):
        self.classify = classify
        self.max_batch = max_batch
        self.in_loop = in_loop
        self.gather_seconds = gather_seconds
        self.waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self.worker: asyncio.Task | None = None
        self.expected = 0  # Requests whose pictures are being prepared (`expect`): their views may come soon.
        self.arrived: asyncio.Event | None = None  # Set while a batch gathers, when views arrive or a picture fails.

    @contextlib.contextmanager
    def expect(self):
        """Around preparing a request's picture: batches wait a little for its views (`gather`). Leaving it and
        calling `many` happen in one step of the request, so a gathering batch never misses views that came."""
        self.expected += 1
        try:
            yield
        finally:
            self.expected -= 1
            self.poke()  # Its views follow at once, or never (the picture failed): a gathering batch looks again.

    async def __call__(self, view: np.ndarray) -> Prediction:
        """The prediction for one (28, 28) view."""
        return (await self.many(view[np.newaxis]))[0]

    async def many(self, views: np.ndarray) -> Predictions:
        """The predictions for (N, 28, 28) views (a number's candidate digits), classified together with those of
        the other requests waiting."""
        answer = asyncio.get_running_loop().create_future()
        self.waiting.append((views, answer))
        self.poke()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.create_task(self.answer_waiting())
        return await answer

    def poke(self) -> None:
        if self.arrived is not None:
            self.arrived.set()

    async def gather(self) -> None:
        """Wait, at most gather_seconds, while pictures being prepared may add views to a batch not yet full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_seconds
        while (self.expected > 0 and sum(len(views) for views, _ in self.waiting) < self.max_batch
               and (left := deadline - loop.time()) > 0):
            self.arrived = asyncio.Event()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return
            finally:
                self.arrived = None

    async def answer_waiting(self) -> None:
        # The worker ends as soon as nobody waits, so nothing is left running when the server stops.
        while self.waiting:
            await self.gather()
            # Requests in order while their views fit in max_batch (always at least one request).
            taken, size = 1, len(self.waiting[0][0])
            while taken < len(self.waiting) and size + len(self.waiting[taken][0]) <= self.max_batch:
                size += len(self.waiting[taken][0])
                taken += 1
            batch, self.waiting = self.waiting[:taken], self.waiting[taken:]
            answers = [answer for _, answer in batch]
            try:
                views = np.concatenate([views for views, _ in batch])  # (N, 28, 28)
                if self.in_loop:
                    predictions = self.classify(views)
                    await asyncio.sleep(0)  # Other requests get the loop between two batches.
                else:
                    predictions = await anyio.to_thread.run_sync(self.classify, views)
                start = 0
                for (request_views, _), answer in zip(batch, answers, strict=True):
                    if not answer.done():  # A request whose client left is cancelled.
                        answer.set_result(predictions[start : start + len(request_views)])
                    start += len(request_views)
            except Exception as error:  # noqa: BLE001  Whatever failed, every waiting request hears of it.
                for answer in answers:
                    if not answer.done():
                        answer.set_exception(error)
            finally:
                # Answers still open here mean the worker itself was cancelled (the server is stopping).
                for answer in answers:
                    answer.cancel()
