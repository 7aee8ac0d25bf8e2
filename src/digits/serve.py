"""The draw-a-digit page and a REST API over one classifier, served by FastAPI and uvicorn.

Every picture, whether drawn on the page, uploaded, or posted by a program, goes through
`digits.images.prepare_file`, the same preprocessing `digits predict` uses, so the three agree.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from digits import __version__, images

if TYPE_CHECKING:
    from digits.predict import Classifier

# A phone photo is a few MB; a canvas drawing is a few KB. Anything larger is refused unread.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Pictures up to this size (the page sends 140×140) are prepared on the event loop's thread, in 2–3 ms.
INLINE_PIXELS = 256 * 256
# Bigger pictures prepared at the same time, each in a worker thread; more wait their turn.
PREPARATION_THREADS = 2
# The most pictures one inference call classifies; more wait for the next call.
MAX_BATCH = 64
# How many of the most probable digits a prediction lists.
TOP_COUNT = 3
STATIC_DIR = Path(__file__).parent / "static"
# The page loads nothing from elsewhere; the browser enforces it.
PAGE_SECURITY_POLICY = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'"


class RankedDigit(BaseModel):
    digit: int = Field(ge=0, le=9)
    probability: float = Field(ge=0.0, le=1.0)


class Prediction(BaseModel):
    """What the model read in one picture."""

    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    probability: float = Field(ge=0.0, le=1.0, description="The model's probability for `digit`.")
    probabilities: list[float] = Field(
        min_length=10, max_length=10, description="One probability per digit 0..9; they sum to 1."
    )
    top: list[RankedDigit] = Field(description=f"The {TOP_COUNT} most probable digits, most probable first.")
    model: str = Field(description="Name of the model that answered.")
    view: list[list[int]] = Field(
        min_length=28,
        max_length=28,
        description="The 28×28 image the model saw: 28 rows of 28 values in 0..255, light ink on black.",
    )


class ModelInfo(BaseModel):
    """The model this server loaded at start-up."""

    name: str
    architecture: str | None = Field(description="Model architecture, e.g. `cnn` or `shallow`.")
    parameters: int | None = Field(description="Number of trainable and non-trainable weights.")
    test_accuracy: float | None = Field(description="Accuracy on the 10,000 MNIST test images, when known.")
    source: str | None = Field(description="Where the model was loaded from.")


class Health(BaseModel):
    status: str = Field(description="`ok` when the server is up and the model is loaded.")
    model: str


class ErrorMessage(BaseModel):
    detail: str = Field(description="One sentence naming the cause and the fix.")


PREDICT_ERRORS = {
    400: {"model": ErrorMessage, "description": "The upload is empty, not an image, or unreadable."},
    413: {
        "model": ErrorMessage,
        "description": f"The upload is over {MAX_UPLOAD_BYTES // 2**20} MB, or the image has more pixels "
        "than the server accepts.",
    },
    422: {"model": ErrorMessage, "description": "The picture is readable but holds no digit (no ink)."},
}

BINARY = {"type": "string", "format": "binary"}
PREDICT_REQUEST_BODY = {
    "required": True,
    "description": "An image file (PNG, JPEG, BMP, GIF, TIFF or WebP): either the multipart form field "
    "`file`, or the raw request body.",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": BINARY}, "required": ["file"]}
        },
        "image/*": {"schema": BINARY},
        "application/octet-stream": {"schema": BINARY},
    },
}


def create_app(classifier: Classifier, *, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The web application: the page at `/`, its assets under `/static/`, and the JSON API."""
    # Swagger UI and ReDoc load their scripts from a CDN, so they are off; the schema itself is served.
    app = FastAPI(
        title="digits",
        version=__version__,
        description="Read handwritten digits with an MNIST classifier. Errors are JSON `{\"detail\": sentence}`.",
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    classify = BatchClassifier(compiled_predict(classifier))
    # Preparing a picture holds Python's GIL most of the time, so more threads only take turns and add
    # switching (benchmarks/serve_load.py, 50 clients: 108–134 requests/s with 2 threads, 85–89 with 40).
    preparation_threads = anyio.CapacityLimiter(PREPARATION_THREADS)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_SECURITY_POLICY})

    @app.get("/health", response_model=Health, summary="Is the server up?")
    def health() -> Health:
        return Health(status="ok", model=classifier.name)

    @app.get("/model", response_model=ModelInfo, summary="The model that answers")
    def model_info() -> ModelInfo:
        return describe_model(classifier)

    @app.post(
        "/predict",
        response_model=Prediction,
        summary="Read the digit in an image",
        responses=PREDICT_ERRORS,
        openapi_extra={"requestBody": PREDICT_REQUEST_BODY},
    )
    async def predict(request: Request) -> Prediction:
        data, name = await read_image_bytes(request, max_upload_bytes)
        width, height = header_size(data)
        refuse_huge_image(width, height)
        if width * height <= INLINE_PIXELS:
            # A worker thread would share Python's GIL with the event loop, and each hand-over waits: at
            # 50 clients drawing on the page, preparing here gave 327 requests/s (p99 54 ms) instead of
            # 234 (p99 282 ms) (benchmarks/serve_load.py).
            view = prepare_bytes(data, name)
        else:
            # A big picture takes longer; a worker thread keeps the event loop answering meanwhile.
            view = await anyio.to_thread.run_sync(prepare_bytes, data, name, limiter=preparation_threads)
        return describe_prediction(classifier.name, view, await classify(view))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        # A bug still answers in the API's shape; Starlette re-raises it so uvicorn logs the traceback.
        return JSONResponse({"detail": "The server failed unexpectedly; see its log."}, status_code=500)

    return app


def describe_model(classifier: Classifier) -> ModelInfo:
    info = classifier.info or {}
    return ModelInfo(
        name=classifier.name,
        architecture=info.get("architecture"),
        parameters=info.get("parameters"),
        test_accuracy=info.get("test_accuracy"),
        source=None if info.get("source") is None else str(info["source"]),
    )


async def read_image_bytes(request: Request, limit: int) -> tuple[bytes, str]:
    """The image's bytes and a name for messages, from a multipart field `file` or from the raw body.

    Bodies over `limit` bytes are refused with 413.
    """
    too_large = HTTPException(
        413, f"The upload is larger than {limit:,} bytes; send a smaller image (a photo scaled down is enough)."
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    # The declared length can lie or be missing (chunked uploads), so the limit is also kept while reading.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body, name = b"".join(chunks), "the request body"

    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        body, filename = await file_field(request, body)
        name = f"the uploaded file {filename}" if filename else name
    if not body:
        raise HTTPException(400, "The upload is empty; send the bytes of an image file (PNG, JPEG, ...).")
    return body, name


async def file_field(request: Request, body: bytes) -> tuple[bytes, str | None]:
    """The bytes and file name of the form field `file` in a multipart body that has already been read."""

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except StarletteHTTPException as error:
        raise HTTPException(
            400,
            f"The multipart form cannot be read ({str(error.detail).rstrip('.')}); send the image as the form "
            "field 'file' or as the raw request body.",
        ) from error
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(
                400, "The form has no file field named 'file'; send the image as multipart field 'file'."
            )
        return await upload.read(), upload.filename
    finally:
        await form.close()


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
                for answer, row in zip(answers, np.asarray(probabilities, dtype=np.float64)):
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


def prepare_bytes(data: bytes, name: str = "the request body") -> np.ndarray:
    """The (28, 28) uint8 view of an image file's bytes, exactly as `digits predict` reads a file."""
    try:
        return images.prepare_file(data, name=name)  # (28, 28) uint8, light ink on black
    except images.NoDigitError as error:
        raise HTTPException(422, sentence(error)) from error
    except images.ImageError as error:
        raise HTTPException(400, sentence(error)) from error


def describe_prediction(model_name: str, view: np.ndarray, probabilities: np.ndarray) -> Prediction:
    """The API's answer for one view and its ten probabilities."""
    ranking = np.argsort(-probabilities, kind="stable")
    return Prediction(
        digit=int(ranking[0]),
        probability=float(probabilities[ranking[0]]),
        probabilities=probabilities.tolist(),
        top=[RankedDigit(digit=int(digit), probability=float(probabilities[digit])) for digit in ranking[:TOP_COUNT]],
        model=model_name,
        view=view.tolist(),
    )


def sentence(error: Exception) -> str:
    """The library's message as a sentence: it may start with a lower-case name such as "the request body"."""
    text = str(error)
    return text[:1].upper() + text[1:]


def header_size(data: bytes) -> tuple[int, int]:
    """The image's width and height, read from its header alone; (0, 0) when it is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                return header.size
    except Image.DecompressionBombError:
        return images.MAX_PIXELS + 1, 1
    except Exception:
        return 0, 0  # Not readable as an image: prepare_file says precisely why.


def refuse_huge_image(width: int, height: int) -> None:
    """Answer 413 for an image with more pixels than `images.MAX_PIXELS`."""
    if width * height > images.MAX_PIXELS:
        raise HTTPException(
            413,
            f"The image is {width:,}×{height:,} pixels, more than the {images.MAX_PIXELS:,} this server "
            "accepts; scale it down and send it again.",
        )
