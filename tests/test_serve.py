"""The REST API of `digits serve`, through FastAPI's test client, and the `digits serve` command itself."""

import asyncio
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from conftest import child_processes, draw_digit_png, run_digits
from digits.data.mnist import load_mnist
from digits.inference.classifier import Classifier, load_classifier
from digits.inference.runtime import OnnxModel
from digits.pictures import decode as images
from digits.pictures.prepare import prepare_file
from digits.serving.app import MAX_UPLOAD_BYTES, create_app
from digits.serving.batching import BatchClassifier
from digits.serving.process import is_loopback

with warnings.catch_warnings():
    # Starlette's test client warns, on import, that it will move to another HTTP library; not our concern.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

STATIC_DIR = Path(__file__).parents[1] / "src" / "digits" / "serving" / "static"


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()  # The pretrained model shipped with digits, as `digits serve` uses by default.


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier)) as test_client:
        yield test_client


def post_png(client, png: bytes):
    return client.post("/predict", content=png, headers={"Content-Type": "image/png"})


def png_header_only(width: int, height: int) -> bytes:
    """The first bytes of a PNG claiming width × height pixels: enough for a reader to learn its size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def assert_one_sentence_error(response, status: int, *words: str):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail[0].isupper() and detail.endswith("."), detail
    for word in words:
        assert word.lower() in detail.lower(), detail


# --- predictions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("digit", [1, 7])
@pytest.mark.parametrize("dark_on_light", [True, False], ids=["black-on-white", "white-on-black"])
def test_a_drawn_digit_is_read_whatever_the_ink_colour(client, classifier, digit_png, digit, dark_on_light):
    response = post_png(client, digit_png(digit, dark_on_light=dark_on_light))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["digit"] == digit
    assert len(answer["probabilities"]) == 10
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert answer["probability"] == max(answer["probabilities"])
    assert [entry["digit"] for entry in answer["top"]][0] == digit and len(answer["top"]) == 3
    assert answer["model"] == classifier.name
    view = np.array(answer["view"])
    assert view.shape == (28, 28) and view.min() == 0 and view.max() == 255


def test_multipart_upload_and_raw_body_give_the_same_answer(client, digit_png):
    png = digit_png(7)

    raw = post_png(client, png).json()
    form = client.post("/predict", files={"file": ("seven.png", png, "image/png")}).json()
    octet = client.post("/predict", content=png, headers={"Content-Type": "application/octet-stream"}).json()

    assert raw == form == octet


# --- drawings: the page's grey pixels, read without a decoder -----------------------------------------


def page_drawing(digit_indices: list[int]) -> np.ndarray:
    """(140, 280) uint8: MNIST test digits drawn side by side as the page sends its box, dark ink on white."""
    test_images = load_mnist().test_images
    canvas = np.full((140, 280), 255, np.uint8)
    for place, index in enumerate(digit_indices):
        # Each digit scaled to the box's height, in its own square from the left (one digit: in the middle).
        ink = np.kron(test_images[index].astype(np.int32), np.ones((5, 5), np.int32))  # (140, 140) in 0..255
        left = 70 if len(digit_indices) == 1 else 140 * place
        canvas[:, left:left + 140] = np.minimum(canvas[:, left:left + 140], 255 - ink * (255 - 0x11) // 255)
    return canvas


def pgm(drawing: np.ndarray) -> bytes:
    height, width = drawing.shape
    return f"P5\n{width} {height}\n255\n".encode() + drawing.tobytes()


def rgba_png(drawing: np.ndarray) -> bytes:
    """The drawing as the page sent it before its grey pixels: an opaque RGBA PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(drawing).convert("RGBA").save(buffer, "PNG")
    return buffer.getvalue()


def post_drawing(client, body: bytes):
    return client.post("/predict", content=body, headers={"Content-Type": "image/x-portable-graymap"})


# Single digits (MNIST test images 0-3: a 7, a 2, a 1, a 0) and two numbers of two digits.
DRAWINGS = [[0], [1], [2], [3], [4, 5], [6, 7]]


@pytest.mark.parametrize("digit_indices", DRAWINGS, ids=lambda indices: "+".join(map(str, indices)))
def test_a_drawing_sent_as_grey_pixels_gets_the_answer_its_png_gets(client, digit_indices):
    drawing = page_drawing(digit_indices)

    from_pixels = post_drawing(client, pgm(drawing))
    from_png = post_png(client, rgba_png(drawing))

    assert from_pixels.status_code == from_png.status_code == 200, from_pixels.text
    pixels_answer, png_answer = from_pixels.json(), from_png.json()
    labels = "".join(str(label) for label in load_mnist().test_labels[digit_indices])
    assert png_answer["number"] == labels  # The drawings are read right, so agreeing means something.
    for key in ("number", "digit", "verdict", "view", "views"):
        assert pixels_answer[key] == png_answer[key], key
    assert [reading["box"] for reading in pixels_answer["digits"]] == [reading["box"] for reading in
                                                                       png_answer["digits"]]
    np.testing.assert_allclose(pixels_answer["probability"], png_answer["probability"], atol=1e-6)
    if png_answer["probabilities"] is not None:
        np.testing.assert_allclose(pixels_answer["probabilities"], png_answer["probabilities"], atol=1e-6)


def test_a_drawing_uploaded_as_a_pgm_file_gets_the_same_answer(client):
    drawing = pgm(page_drawing([4, 5]))

    as_drawing = post_drawing(client, drawing).json()
    as_file = client.post("/predict", files={"file": ("number.pgm", drawing, "image/x-portable-graymap")}).json()

    assert as_drawing == as_file
    assert as_drawing["number"] == "41"  # MNIST test images 4 and 5.


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"P5\n280 140\n255\n" + bytes(39_199), 400, ["280×140", "39,199 bytes"]),
    (b"P5\n280 140\n255\n" + bytes(39_201), 400, ["39,201 bytes"]),
    (b"P5\n99999 99999\n255\n" + bytes(10), 413, ["99,999×99,999", "2,048"]),
    (b"P5\n0 140\n255\n", 400, ["0×140"]),
    (b"P5\n28 28\n65535\n" + bytes(2 * 28 * 28), 400, ["P5"]),
    (b"P2\n2 1\n255\n0 0\n", 400, ["binary PGM"]),
    (draw_digit_png(7), 400, ["binary PGM"]),
], ids=["one-byte-short", "one-byte-long", "absurd-size", "no-pixels", "16-bit", "plain-text-pgm", "a-png"])
def test_a_malformed_drawing_is_refused_from_its_header_in_one_sentence(client, body, status, words):
    assert_one_sentence_error(post_drawing(client, body), status, *words)


def test_drawings_waiting_in_one_workers_pipe_get_their_own_layouts_and_one_whose_client_left_stops_none():
    from digits.pictures.drawing import drawing_image, drawing_size
    from digits.pictures.segment import find_digits
    from digits.serving import preparation_worker, workers

    bodies = [pgm(page_drawing(indices)) for indices in ([0], [1], [2, 3], [4], [5])]
    alone = [find_digits(drawing_image(body, drawing_size(body)), name="the drawing").views for body in bodies]

    async def send_together():
        preparer = workers.PicturePreparer(processes=1)
        preparer.start()
        try:
            [worker] = preparer.workers
            requests = [asyncio.ensure_future(preparer(body, "the drawing", drawing_size(body))) for body in bodies]
            await asyncio.sleep(0)  # Each request has run once: three drawings are in the worker's pipe.
            held = worker.pictures
            requests[1].cancel()  # Its client left while its drawing waited behind the first.
            layouts = await asyncio.gather(*requests, return_exceptions=True)
            return held, layouts, preparer.workers == [worker] and worker.process.is_alive(), len(preparer.idle)
        finally:
            preparer.close()

    held, layouts, same_worker, idle = asyncio.run(send_together())
    assert held == preparation_worker.DRAWINGS_PER_WORKER == 3
    assert isinstance(layouts[1], asyncio.CancelledError)
    for index in (0, 2, 3, 4):
        assert np.array_equal(layouts[index].views, alone[index])
    assert same_worker and idle == 1  # Not killed for the drawing whose client left, and free again.


@pytest.mark.slow
def test_api_agrees_with_digits_predict_on_the_same_file(client, classifier, digit_png, tmp_path):
    picture = tmp_path / "seven.png"
    picture.write_bytes(digit_png(7, side=500))

    answer = post_png(client, picture.read_bytes()).json()
    command = run_digits("predict", picture, "--json", timeout=120)

    assert command.returncode == 0, command.stderr
    cli_answer = json.loads(command.stdout)["results"][0]
    assert cli_answer["digit"] == answer["digit"] == 7
    np.testing.assert_allclose(cli_answer["probabilities"], answer["probabilities"], atol=1e-5)
    # The library the CLI calls sees the same 28×28 image and gives the same ten probabilities.
    view = prepare_file(picture)
    assert view.tolist() == answer["view"]
    np.testing.assert_allclose(classifier.classify(view[np.newaxis]).probabilities[0], answer["probabilities"],
                               atol=1e-5)


# --- batching: concurrent pictures share one inference call ---------------------------------------


@pytest.mark.parametrize("in_loop", [False, True], ids=["in-a-thread", "on-the-event-loop"])
def test_pictures_waiting_together_are_classified_in_one_call_with_the_answers_of_one_at_a_time(classifier,
                                                                                                in_loop):
    views = load_mnist().test_images[:20]  # 20 different digits, so a mixed-up answer shows.
    batch_sizes = []

    def recording_classify(batch):
        batch_sizes.append(len(batch))
        return classifier.classify(batch)

    classify = BatchClassifier(recording_classify, max_batch=8, in_loop=in_loop)

    async def all_at_once():
        return await asyncio.gather(*(classify(view) for view in views))

    together = asyncio.run(all_at_once())

    assert batch_sizes == [8, 8, 4]
    for view, prediction in zip(views, together, strict=True):
        (alone,) = classifier.classify(view[np.newaxis])
        assert prediction.digit == alone.digit and prediction.verdict == alone.verdict
        np.testing.assert_allclose(prediction.probabilities, alone.probabilities, atol=1e-5)
        np.testing.assert_allclose(prediction.digit_score, alone.digit_score, atol=1e-5)


def test_a_batch_waits_for_the_views_of_a_picture_being_prepared_and_not_for_one_that_fails(classifier):
    views = load_mnist().test_images[:3]
    batch_sizes = []

    def recording_classify(batch):
        batch_sizes.append(len(batch))
        return classifier.classify(batch)

    classify = BatchClassifier(recording_classify, in_loop=True, gather_seconds=10.0)

    async def request(view, preparing_seconds, fails=False):
        with classify.expect():  # As the server's /predict prepares a picture.
            await asyncio.sleep(preparing_seconds)
            if fails:
                raise ValueError("no digit")
        return await classify(view)

    async def three_requests():
        # The first picture is ready at once, the second 10 ms later; the third fails 20 ms later.
        return await asyncio.gather(request(views[0], 0.0), request(views[1], 0.01), request(views[2], 0.02, True),
                                    return_exceptions=True)

    started = time.perf_counter()
    first, second, third = asyncio.run(three_requests())

    # One call for both pictures, made as soon as nothing more was being prepared: not after the 10 s limit.
    assert batch_sizes == [2] and time.perf_counter() - started < 5
    assert isinstance(third, ValueError)
    for view, prediction in ((views[0], first), (views[1], second)):
        np.testing.assert_allclose(prediction.probabilities, classifier.classify(view[np.newaxis]).probabilities[0],
                                   atol=1e-5)


def test_a_failed_inference_answers_every_waiting_picture_and_the_next_one_is_classified(classifier):
    failures = [RuntimeError("the first call fails")]

    def failing_once(batch):
        if failures:
            raise failures.pop()
        return classifier.classify(batch)

    classify = BatchClassifier(failing_once)
    views = load_mnist().test_images[:3]

    async def three_then_one():
        first = await asyncio.gather(*(classify(view) for view in views), return_exceptions=True)
        return first, await classify(views[0])

    first, after = asyncio.run(three_then_one())

    assert [str(answer) for answer in first] == ["the first call fails"] * 3
    np.testing.assert_allclose(after.probabilities, classifier.classify(views[:1]).probabilities[0], atol=1e-5)


def test_concurrent_requests_get_the_answers_they_get_one_at_a_time(client, digit_png):
    # 140 pixels are prepared on the event loop, 420 in a worker thread; both meet in the batches.
    pngs = [
        digit_png(digit, side=side, dark_on_light=dark)
        for digit in (1, 7) for side in (140, 420) for dark in (True, False)
    ]
    one_at_a_time = [post_png(client, png).json() for png in pngs]

    with ThreadPoolExecutor(len(pngs)) as pool:
        concurrent = [response.json() for response in pool.map(lambda png: post_png(client, png), pngs)]

    for alone, together in zip(one_at_a_time, concurrent, strict=True):
        assert together["digit"] == alone["digit"] and together["view"] == alone["view"]
        np.testing.assert_allclose(together["probabilities"], alone["probabilities"], atol=1e-5)


# --- errors: JSON with one sentence and the right status ------------------------------------------


def test_an_empty_body_is_refused(client):
    assert_one_sentence_error(post_png(client, b""), 400, "empty")


def test_an_empty_uploaded_file_is_refused(client):
    response = client.post("/predict", files={"file": ("empty.png", b"", "image/png")})
    assert_one_sentence_error(response, 400, "empty")


def test_text_is_not_an_image(client):
    response = client.post("/predict", content=b"hello, world", headers={"Content-Type": "image/png"})
    assert_one_sentence_error(response, 400, "not an image")


def test_a_truncated_png_is_refused(client, digit_png):
    assert_one_sentence_error(post_png(client, digit_png(7)[:300]), 400, "truncated")


def test_a_form_without_a_file_field_is_refused(client, digit_png):
    response = client.post("/predict", files={"picture": ("seven.png", digit_png(7), "image/png")})
    assert_one_sentence_error(response, 400, "'file'")


def test_a_broken_multipart_form_is_refused(client):
    response = client.post("/predict", content=b"--x\r\nnot a form", headers={"Content-Type": "multipart/form-data"})
    assert_one_sentence_error(response, 400, "multipart form cannot be read")


def test_a_blank_picture_has_no_digit(client, digit_png):
    assert_one_sentence_error(post_png(client, digit_png(None)), 422, "no digit found")


def test_a_body_declared_too_large_is_refused_unread(classifier, digit_png):
    png = digit_png(7)
    with TestClient(create_app(classifier, max_upload_bytes=len(png) - 1)) as small_client:
        assert_one_sentence_error(post_png(small_client, png), 413, "larger than")


def test_a_streamed_body_is_cut_off_at_the_limit(classifier):
    # No Content-Length: the limit must hold while reading.
    chunks = (b"\0" * 1024 for _ in range(64))
    with TestClient(create_app(classifier, max_upload_bytes=10_000)) as small_client:
        response = small_client.post("/predict", content=chunks, headers={"Content-Type": "image/png"})
    assert_one_sentence_error(response, 413, "larger than")


def test_the_default_limit_is_ten_megabytes(client):
    response = client.post("/predict", content=b"\0" * (MAX_UPLOAD_BYTES + 1), headers={"Content-Type": "image/png"})
    assert MAX_UPLOAD_BYTES == 10 * 2**20
    assert_one_sentence_error(response, 413, f"{MAX_UPLOAD_BYTES:,}")


def test_an_image_with_too_many_pixels_is_refused_from_its_header(client):
    side = int(images.MAX_PIXELS**0.5) + 1
    assert_one_sentence_error(post_png(client, png_header_only(side, side)), 413, "pixels")


def test_an_unexpected_failure_still_answers_json(digit_png):
    class BrokenModel(OnnxModel):
        def __init__(self):  # No session: every call fails.
            pass

        def __call__(self, model_input):
            raise RuntimeError("a bug")

    broken = Classifier(name="broken", model=BrokenModel())  # Fails on every picture, as a bug in inference would.
    with TestClient(create_app(broken), raise_server_exceptions=False) as broken_client:
        assert_one_sentence_error(post_png(broken_client, digit_png(7)), 500, "failed unexpectedly")


# --- the rest of the API and the page -------------------------------------------------------------


def test_health_and_model_describe_the_loaded_model(client, classifier):
    assert client.get("/health").json() == {"status": "ok", "model": classifier.name}

    model = client.get("/model").json()
    assert model["name"] == classifier.name
    assert model["parameters"] == classifier.info["parameters"] > 0
    assert model["architecture"] == classifier.info.get("architecture")
    assert model["test_accuracy"] == classifier.info.get("test_accuracy")


def test_the_openapi_schema_describes_every_endpoint_and_error(client):
    schema = client.get("/openapi.json").json()

    predict = schema["paths"]["/predict"]["post"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(predict["requestBody"]["content"])
    for status in ("400", "413", "422"):
        reference = predict["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert reference.endswith("/ErrorMessage")
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Prediction")
    assert {"/health", "/model"} <= set(schema["paths"])
    assert "view" in schema["components"]["schemas"]["Prediction"]["properties"]
    # Swagger UI would load its scripts from a CDN, so it is switched off.
    assert client.get("/docs").status_code == 404


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="pad"' in page.text and 'id="file"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_the_page_loads_nothing_from_elsewhere():
    external = re.compile(r"""(?:src|href|url\(|@import|fetch\()\s*=?\s*["']?(?:https?:)?//""", re.IGNORECASE)
    for asset in STATIC_DIR.iterdir():
        assert not external.search(asset.read_text()), f"{asset.name} refers to another site"


# --- the command ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_refuses_a_port_in_use_in_one_sentence():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_digits("serve", "--port", str(busy.getsockname()[1]))

    assert result.returncode == 1
    assert re.fullmatch(r"digits: error: Port \d+ on 127\.0\.0\.1 is already in use; [^\n]+\.\n", result.stderr)


@pytest.mark.slow
def test_serve_warns_when_reachable_from_other_machines_and_names_a_missing_model(tmp_path):
    result = run_digits("serve", "--host", "0.0.0.0", "--port", "0", "--model", str(tmp_path / "missing.keras"))

    assert result.returncode == 1
    assert "warning: listening on 0.0.0.0" in result.stderr
    assert "Traceback" not in result.stderr and "missing.keras" in result.stderr


def test_only_this_machine_counts_as_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")


@pytest.mark.slow
def test_serve_prints_its_address_answers_and_stops_on_ctrl_c(digit_png):
    server = subprocess.Popen(
        [sys.executable, "-m", "digits", "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Printed once the model is loaded and the port is bound; the workers may still be starting, and this
        # first picture waits for them.
        first_line = server.stdout.readline()
        address = re.search(r"http://127\.0\.0\.1:\d+/", first_line)
        assert address, first_line
        answer = httpx.post(address.group() + "predict", content=digit_png(1), timeout=30).json()
        workers = child_processes(server.pid)  # The processes that prepare its pictures.
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()

    assert answer["digit"] == 1
    assert server.returncode == 0 and "Traceback" not in errors, errors
    assert len(workers) >= 2
    deadline = time.monotonic() + 10  # The workers finish their exit just after the server's.
    while any(psutil.pid_exists(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if psutil.pid_exists(pid)]  # none outlives the server


@pytest.mark.slow
def test_dead_preparation_workers_are_replaced_and_the_next_picture_is_read(classifier, digit_png):
    import os

    with TestClient(create_app(classifier)) as own_client:
        assert post_png(own_client, digit_png(7)).status_code == 200
        preparer = own_client.app.state.preparer
        for worker in list(preparer.workers):  # The test plays an OOM kill of every worker.
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.join(timeout=10)
        answer = post_png(own_client, digit_png(7))
        assert answer.status_code == 200 and answer.json()["digit"] == 7
    assert not preparer.workers  # The app's shutdown stopped its workers.


def test_pictures_sent_while_the_workers_are_still_starting_wait_for_them_and_are_read(classifier, digit_png):
    with TestClient(create_app(classifier)) as own_client:
        preparer = own_client.app.state.preparer
        preparer.start(wait=False)  # As `digits serve` does before it prints its address.
        assert len(preparer.workers) == 2 and not preparer.idle
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda digit: post_png(own_client, digit_png(digit)), [7, 1, 7, 1]))
        assert [answer.json()["digit"] for answer in answers] == [7, 1, 7, 1]
        deadline = time.monotonic() + 20  # The first worker ready may have read all four.
        while len(preparer.idle) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(preparer.idle) == 2  # Both joined once ready, and are free again.


@pytest.mark.slow
def test_workers_that_die_while_starting_answer_503_and_the_next_picture_is_read(classifier, digit_png, monkeypatch):
    import os

    # Workers that cannot start at all: none is restarted (issue 24 restarts a few that die while starting).
    monkeypatch.setattr("digits.serving.workers.MAX_FAILED_STARTS", 0)
    with TestClient(create_app(classifier)) as own_client:
        preparer = own_client.app.state.preparer
        preparer.start(wait=False)
        for worker in list(preparer.workers):
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.join(timeout=10)
        assert_one_sentence_error(post_png(own_client, digit_png(7)), 503, "failed to start")
        answer = post_png(own_client, digit_png(7))  # Fresh workers start for the next picture.
        assert answer.status_code == 200 and answer.json()["digit"] == 7
