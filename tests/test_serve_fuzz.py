"""Issue 15: property-based fuzzing of the API, bounded so it runs in CI in well under a minute.

Hypothesis mutates real pictures (bytes flipped, cut, spliced) and invents request bodies and content
types; schemathesis generates requests from the OpenAPI schema. No request may get a 5xx other than 503
(busy), and every error must be the API's one-sentence JSON.
"""

import io
import warnings

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis import checks

from digits.inference.classifier import load_classifier
from digits.serving.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def seed_pictures() -> list[bytes]:
    """A "1" in each format the server reads: the material Hypothesis mutates."""
    canvas = Image.new("L", (40, 40), 255)
    canvas.paste(0, (18, 6, 22, 34))
    pictures = []
    for image_format, mode in (("PNG", "L"), ("JPEG", "L"), ("GIF", "L"), ("BMP", "RGB"), ("TIFF", "F"),
                               ("WEBP", "RGB")):
        buffer = io.BytesIO()
        canvas.convert(mode).save(buffer, image_format)
        pictures.append(buffer.getvalue())
    return pictures


@st.composite
def damaged_pictures(draw) -> bytes:
    picture = bytearray(draw(st.sampled_from(seed_pictures())))
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(picture) - 1))
        picture[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        picture = picture[: draw(st.integers(0, len(picture)))]
    if draw(st.booleans()):
        picture += draw(st.binary(max_size=64))
    return bytes(picture)


@pytest.fixture(scope="module")
def app():
    application = create_app(load_classifier())
    yield application
    application.state.preparer.close()


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as test_client:
        yield test_client


def assert_api_answer(response):
    # A 503 only for "busy"; a worker that crashed on a picture (503 "send it again") or a bug (500) fails.
    assert response.status_code < 500 or "already preparing" in response.text, response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail[:1].isupper() and detail.endswith("."), detail


@FUZZ
@given(picture=damaged_pictures() | st.binary(max_size=512))
def test_any_bytes_posted_as_a_picture_get_an_answer_or_one_sentence(client, picture):
    assert_api_answer(client.post("/predict", content=picture, headers={"Content-Type": "image/png"}))


@FUZZ
@given(
    body=st.binary(max_size=256) | damaged_pictures(),
    content_type=st.sampled_from(["", "image/png", "application/octet-stream", "text/plain", "multipart/form-data",
                                  "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                                  "application/json", "image/*; charset=\u00ff"]),
)
def test_any_body_with_any_content_type_gets_an_answer_or_one_sentence(client, body, content_type):
    # Sent as Latin-1 bytes, as a client on the wire may: httpx 0.29 encodes a str header as ASCII and refuses \u00ff.
    headers = {"Content-Type": content_type.encode("latin-1")}
    assert_api_answer(client.post("/predict", content=body, headers=headers))


@FUZZ
@given(field=st.sampled_from(["file", "File", "picture", ""]), filename=st.text(max_size=40),
       picture=damaged_pictures())
def test_any_multipart_upload_gets_an_answer_or_one_sentence(client, field, filename, picture):
    response = client.post("/predict", files={field or "x": (filename or "x", picture, "image/png")})
    assert_api_answer(response)


@pytest.fixture(scope="module")
def api_operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_requests_generated_from_the_openapi_schema_get_documented_answers(api_operations, data):
    operation = data.draw(st.sampled_from(api_operations))
    case = data.draw(operation.as_strategy())
    response = case.call()
    # Every check but positive_data_acceptance: the schema says "binary", and most bytes are no picture (400).
    case.validate_response(response, checks=[checks.not_a_server_error, checks.status_code_conformance,
                                             checks.content_type_conformance, checks.response_schema_conformance])
    assert response.status_code < 500 or "already preparing" in response.text, response.text
