"""The draw-a-digit page and a REST API over one classifier, served by FastAPI and uvicorn.

Every picture, whether drawn on the page, uploaded, or posted by a program, goes through
`digits.pictures.segment.find_digits_in_file`, the same preprocessing `digits predict` uses, and then through
`Classifier.classify`, the same inference; the answer is `NumberPrediction.to_dict`'s fields, as in
`digits predict --json`, so the three agree.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.formparsers import MultiPartException, MultiPartParser

from digits import __version__
from digits.inference.numbers import read_layout
from digits.pictures import decode, drawing, segment
from digits.serving import drawing_route, limits
from digits.serving.batching import BatchClassifier
from digits.serving.preparation_worker import PreparationFailed
from digits.serving.workers import PicturePreparer

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from digits.inference.classifier import Classifier
    from digits.inference.numbers import NumberPrediction

# A phone photo is a few MB; a canvas drawing is a few KB. Anything larger is refused unread.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# How many of the most probable digits a prediction lists.
TOP_COUNT = 3
# A form may hold the file and a few other fields; more are refused (400) before they are stored.
MAX_FORM_FILES, MAX_FORM_FIELDS = 4, 16
STATIC_DIR = Path(__file__).parent / "static"
# What messages call a raw body declared a drawing.
DRAWING_NAME = "the drawing"


class RankedDigit(BaseModel):
    digit: int = Field(ge=0, le=9)
    probability: float = Field(ge=0.0, le=1.0)


# The classifier's verdict on a picture: digits.inference.prediction's DIGIT and NOT_A_DIGIT for one digit,
# digits.inference.numbers' NUMBER and NOT_A_NUMBER for several.
Verdict = Literal["digit", "not a digit", "number", "not a number"]


class DigitReading(BaseModel):
    """One digit of the number, left to right."""

    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    probability: float = Field(ge=0.0, le=1.0, description="The model's probability for `digit`.")
    digit_score: float | None = Field(ge=0.0, le=1.0, description="How digit-like it is (null without a detector).")
    box: list[int] = Field(min_length=4, max_length=4,
                           description="Where it is in the picture: x, y, width, height in the picture's pixels.")


class Prediction(BaseModel):
    """What the model read in one picture: `digits.inference.numbers.NumberPrediction.to_dict`, then the model and
    the views it read."""

    digit: int | None = Field(ge=0, le=9, description="The most probable digit, for a picture of one digit; null "
                              "for several (see `number` and `digits`).")
    verdict: Verdict = Field(
        description="One digit: `not a digit` when the picture does not look like any digit (the model's "
        "not-a-digit detector, or without one the best digit's probability, is under its measured threshold). "
        "Several: `not a number` when one of them does not look like a digit, else `number`. The other fields "
        "still give the best guess."
    )
    probability: float = Field(ge=0.0, le=1.0, description="The model's probability for `digit`, or for the whole "
                               "number (the product of its digits').")
    digit_score: float | None = Field(
        ge=0.0, le=1.0, description="How digit-like the picture is (of a number: its least digit-like digit), from "
        "the model's not-a-digit detector (0 to 1); null for a model without one."
    )
    top: list[RankedDigit] | None = Field(
        description=f"The {TOP_COUNT} most probable digits, most probable first; equal probabilities lower digit "
        "first; null for several digits."
    )
    probabilities: list[float] | None = Field(
        min_length=10, max_length=10, description="One probability per digit 0..9; they sum to 1 (rounded to 6 "
        "places); null for several digits."
    )
    number: str = Field(description="The digits read, left to right, e.g. `2026` (one digit: `7`).")
    digits: list[DigitReading] = Field(description="Each digit read, left to right, and its box.")
    model: str = Field(description="Name of the model that answered.")
    view: list[list[int]] | None = Field(
        min_length=28,
        max_length=28,
        description="The 28×28 image the model saw: 28 rows of 28 values in 0..255, light ink on black; null for "
        "several digits (see `views`).",
    )
    views: list[list[list[int]]] = Field(description="The 28×28 image the model saw for each digit, left to right.")


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


PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorMessage, "description": "The upload is empty, not an image, or unreadable, or holds more "
          f"than {segment.MAX_DIGITS} digits; or a drawing's header or length is wrong."},
    403: {"model": ErrorMessage, "description": "The request comes from a page of another site (its `Origin`)."},
    408: {"model": ErrorMessage, "description": f"The body took longer than {limits.BODY_SECONDS:g} s to arrive."},
    413: {
        "model": ErrorMessage,
        "description": f"The upload is over {MAX_UPLOAD_BYTES // 2**20} MB, or the image has more pixels "
        "than the server accepts (a drawing: more than "
        f"{drawing.MAX_DRAWING_SIDE} a side), or needs more memory to prepare.",
    },
    415: {"model": ErrorMessage, "description": "A `text/plain` body, or a form-encoded one from a browser."},
    422: {"model": ErrorMessage, "description": "The picture is readable but holds no digit (no ink), or took "
          "longer to prepare than the server allows."},
    429: {"model": ErrorMessage, "description": "This client's uploads being received already hold its share "
          f"({limits.CLIENT_UPLOAD_BYTES // 2**20} MB) of the server's memory for uploads; send it again once they "
          "are answered."},
    503: {"model": ErrorMessage, "description": "The server is busy (too many uploads or pictures at once); "
          "send it again in a moment."},
}

BINARY = {"type": "string", "format": "binary"}
PREDICT_REQUEST_BODY = {
    "required": True,
    "description": "An image file (PNG, JPEG, BMP, GIF, TIFF or WebP): either the multipart form field "
    "`file`, or the raw request body. A drawing (what the page sends) is read fastest as the raw body of type "
    f"`{drawing.DRAWING_TYPE}`: a binary PGM, `P5 width height 255` and one byte of grey a pixel, at most "
    f"{drawing.MAX_DRAWING_SIDE} pixels a side.",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": BINARY}, "required": ["file"]}
        },
        drawing.DRAWING_TYPE: {"schema": BINARY},
        "image/*": {"schema": BINARY},
        "application/octet-stream": {"schema": BINARY},
    },
}


def create_app(
    classifier: Classifier, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, allowed_hosts: set[str] | None = None
) -> FastAPI:
    """The web application: the page at `/`, its assets under `/static/`, and the JSON API.

    `allowed_hosts`: host names it answers to besides localhost and IP addresses, and whose pages may post to it
    (behind a reverse proxy, the public name); None: any (see digits.serving.limits).
    """
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.preparer.close()  # An ASGI server that runs the lifespan stops the workers with the app.

    # Swagger UI and ReDoc load their scripts from a CDN, so they are off; the schema itself is served.
    app = FastAPI(
        lifespan=lifespan,
        title="digits",
        version=__version__,
        description="Read handwritten digits with an MNIST classifier. Errors are JSON `{\"detail\": sentence}`.",
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    stop_notice = limits.StopNotice()
    # Inside the guard: the page's drawings are answered before FastAPI's router (see DrawingRoute).
    app.add_middleware(drawing_route.DrawingRoute, max_upload_bytes=max_upload_bytes,
                       answer=lambda data, receive: answer_picture(data, DRAWING_NAME, checked_drawing(data), receive))
    app.add_middleware(limits.RequestGuard, allowed_hosts=allowed_hosts, stop_notice=stop_notice)
    # What `digits predict` and `digits.predict` call; ONNX Runtime's quick calls are made on the event loop.
    classify = BatchClassifier(classifier.classify, in_loop=classifier.runtime == "onnxruntime")
    prepare = app.state.preparer = PicturePreparer()

    def begin_stopping() -> None:
        """Refuse new work (503) and answer what is ready: called by `digits serve` when it is told to stop."""
        stop_notice.begin()
        prepare.stop_accepting()

    app.state.begin_stopping = begin_stopping

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")  # limits.RequestGuard adds the security headers.

    @app.get("/health", response_model=Health, summary="Is the server up?")
    async def health() -> Health:  # On the event loop: a `def` went to a thread and back, behind whatever ran.
        return Health(status="ok", model=classifier.name)

    @app.get("/model", response_model=ModelInfo, summary="The model that answers")
    def model_info() -> ModelInfo:
        return describe_model(classifier)

    @app.post(
        "/predict",
        response_model=Prediction,
        summary="Read the digit, or the number, in an image",
        responses=PREDICT_ERRORS,
        openapi_extra={"requestBody": PREDICT_REQUEST_BODY},
    )
    async def predict(request: Request) -> Response:
        # The page's drawings are answered by DrawingRoute before they get here; these lines read the rest.
        data, name = await read_image_bytes(request, max_upload_bytes)
        size = None
        if is_drawing(request):  # A drawing DrawingRoute did not take (in an app built without it).
            size, name = checked_drawing(data), DRAWING_NAME
        return Response(await answer_picture(data, name, size, request.receive), media_type="application/json")

    async def answer_picture(data: bytes, name: str, size: tuple[int, int, int] | None, receive) -> bytes:
        """The JSON answer for a picture's bytes (a drawing of `drawing.drawing_size` `size`, or any picture file),
        or an HTTPException; `receive` is the request's, whose body has been read (a client that leaves is noticed)."""
        try:
            # Every candidate digit, exactly as `digits predict` reads a file; given up if the client leaves.
            with classify.expect():  # Meanwhile, a batch being classified waits a little for its views.
                layout = await limits.unless_client_leaves(receive, prepare(data, name, size))
        except decode.ImageTooLarge as error:
            raise HTTPException(413, sentence(error)) from error
        except decode.NoDigitError as error:
            raise HTTPException(422, sentence(error)) from error
        except decode.ImageError as error:
            raise HTTPException(400, sentence(error)) from error
        except PreparationFailed as error:
            raise HTTPException(error.status, str(error)) from error
        prediction = describe_prediction(classifier.name, read_layout(layout, await classify.many(layout.views)))
        # Encoded once by pydantic's compiled serializer: returned as a model, FastAPI would check it against
        # `response_model` again and encode it in Python, 0.3 ms more CPU a drawing (the same values; numbers under
        # 1e-4 are written 0.00001 rather than 1e-05). `response_model` still describes it in the OpenAPI schema.
        return prediction.model_dump_json().encode()

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
        # A bug still answers in the API's shape; Starlette re-raises it so uvicorn logs the traceback.
        return JSONResponse({"detail": "The server failed unexpectedly; see its log."}, status_code=500,
                            headers=limits.SECURITY_HEADERS)

    return app


def is_drawing(request: Request) -> bool:
    """Whether the raw body is declared a drawing (`digits.pictures.drawing`); a form's files are read as files."""
    return drawing_route.declares_drawing(request.headers.get("content-type", ""))


def checked_drawing(data: bytes) -> tuple[int, int, int]:
    """A drawing's `drawing.drawing_size`, checked from its header on the event loop (its pixels are read by a
    worker without a decoder); HTTPException 400 or 413 in one sentence when it is not a drawing of that size."""
    try:
        return drawing.drawing_size(data, DRAWING_NAME)
    except decode.ImageTooLarge as error:
        raise HTTPException(413, sentence(error)) from error
    except decode.ImageError as error:
        raise HTTPException(400, sentence(error)) from error


def describe_model(classifier: Classifier) -> ModelInfo:
    info = classifier.info or {}
    return ModelInfo(
        name=classifier.name,
        architecture=info.get("architecture"),
        parameters=info.get("parameters"),
        test_accuracy=info.get("test_accuracy"),
        source=public_source(info.get("source")),
    )


async def read_image_bytes(request: Request, limit: int) -> tuple[bytes, str]:
    """The image's bytes and a name for messages, from a multipart field `file` or from the raw body.

    Bodies over `limit` bytes are refused with 413; a multipart form is parsed once, as it arrives.
    """
    name = "the request body"
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        body, filename = await file_field(request, limited_body(request, limit))
        name = f"the uploaded file {filename}" if filename else name
    else:
        body = b"".join([chunk async for chunk in limited_body(request, limit)])
    if not body:
        raise HTTPException(400, limits.EMPTY_UPLOAD_SENTENCE)
    return body, name


async def limited_body(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The request's body in chunks, refused with 413 as soon as it declares or reaches more than `limit` bytes."""
    too_large = limits.upload_too_large(limit)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    size = 0
    # The declared length can lie or be missing (chunked uploads), so the limit is also kept while reading.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        yield chunk


async def file_field(request: Request, body: AsyncGenerator[bytes, None]) -> tuple[bytes, str | None]:
    """The bytes and file name of the form field `file` in a multipart body, parsed once as `body` arrives.

    At most MAX_FORM_FILES files and MAX_FORM_FIELDS other fields (each up to 1 MB) are read; the file's bytes
    wait in a temporary file beyond 1 MB (Starlette's parser, as `Request.form` uses it).
    """
    parser = MultiPartParser(request.headers, body, max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise HTTPException(
            400,
            f"The multipart form cannot be read ({error.message.rstrip('.')}); send the image as the form "
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


def describe_prediction(model_name: str, reading: NumberPrediction) -> Prediction:
    """The API's answer for one picture: the reading's fields (as `digits predict --json` gives them), the model's
    name and the 28×28 views it read."""
    views = reading.views.tolist()
    return Prediction(**reading.to_dict(TOP_COUNT), model=model_name, view=views[0] if len(views) == 1 else None,
                      views=views)


def sentence(error: Exception) -> str:
    """The library's message as a sentence: it may start with a lower-case name such as "the request body"."""
    text = str(error)
    return text[:1].upper() + text[1:]


def public_source(source: object) -> str | None:
    """Where the model came from, without the server's local folders: a path is cut to its last part."""
    if source is None:
        return None
    text = str(source)
    if Path(text).is_absolute() or Path(text).exists():
        return f"{Path(text).name} (a file or run folder on the server)"
    return text
