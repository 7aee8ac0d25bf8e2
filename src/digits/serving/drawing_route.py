"""The page's drawings answered before FastAPI's router: `DrawingRoute`, an ASGI middleware of `digits serve`.

A drawing (POST /predict of type `image/x-portable-graymap`, `digits.pictures.drawing`) is most of what the server
answers; FastAPI's routing, request object and endpoint machinery cost a quarter of the app's own CPU for it
(docs/serving-speed.md). `digits.serving.app` installs the route inside `limits.RequestGuard`, with its /predict code.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from digits.pictures import drawing
from digits.serving import limits


def declares_drawing(content_type: str) -> bool:
    """Whether a Content-Type declares a drawing, whatever its parameters and case."""
    return content_type.split(";")[0].strip().lower() == drawing.DRAWING_TYPE


class DrawingRoute:
    """ASGI middleware inside `limits.RequestGuard`: the page's drawings, POST /predict of type
    `drawing.DRAWING_TYPE`, answered without FastAPI's router, request object and endpoint machinery; everything
    else goes on to FastAPI. The same limits, checks and answers as `/predict` there (which still describes them in
    the OpenAPI schema): `answer` is the endpoint's own code (`digits.serving.app`); a refusal is FastAPI's JSON
    `{"detail": sentence}` with the exception's headers; anything unexpected goes up to the app's error handler.

    `answer(data, receive)`: the JSON answer for a drawing's bytes, or a Starlette HTTPException; `receive` is the
    request's, whose body has been read."""

    def __init__(self, app, answer: Callable[[bytes, Callable], Awaitable[bytes]], max_upload_bytes: int):
        self.app = app
        self.answer = answer
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope, receive, send) -> None:
        if not (scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST"
                and declares_drawing(header(scope, b"content-type"))):
            await self.app(scope, receive, send)
            return
        headers: Mapping[str, str] = {}
        try:
            data = await self.read_body(scope, receive)
            body, status = await self.answer(data, receive), 200
        except StarletteHTTPException as error:  # Ours, and limits.RequestGuard's (408, 429, 503) from `receive`.
            body, status, headers = json_detail(error.detail), error.status_code, error.headers or {}
        head = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        head += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    async def read_body(self, scope, receive) -> bytes:
        """The body, as `read_image_bytes` reads a raw one: 413 beyond max_upload_bytes, 400 when empty."""
        too_large = limits.upload_too_large(self.max_upload_bytes)
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_upload_bytes:
            raise too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_upload_bytes:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if not size:
            raise StarletteHTTPException(400, limits.EMPTY_UPLOAD_SENTENCE)
        return b"".join(chunks)


def header(scope, name: bytes) -> str:
    """The first value of a request header (lower-case `name`), as Starlette's `Request.headers.get` gives it."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def json_detail(detail: str) -> bytes:
    """`{"detail": detail}` as FastAPI's JSONResponse writes it."""
    return json.dumps({"detail": detail}, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
