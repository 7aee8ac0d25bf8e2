"""Issue 24, items 1–8: what the second adversarial pass broke in `digits serve`, in process and for real."""

import asyncio
import io
import struct
import time
import warnings

import pytest
from PIL import Image, features

from digits.inference.classifier import load_classifier
from digits.serving import workers
from digits.serving.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier), base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def assert_sentence(response, status: int, *words: str):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail[0].isupper() and detail.endswith(".") and "\n" not in detail, detail
    for word in words:
        assert word.lower() in detail.lower(), detail


# --- 3. damaged pictures of the rarer formats: 400, not 500 ---------------------------------------------


def saved(image_format: str, mode: str, **options) -> bytes:
    canvas = Image.new("L", (40, 40), 255)
    canvas.paste(0, (18, 6, 22, 34))
    buffer = io.BytesIO()
    canvas.convert(mode).save(buffer, image_format, **options)
    return buffer.getvalue()


def avif_without_its_primary_item() -> bytes:
    if not features.check("avif"):
        pytest.skip("this Pillow reads no AVIF")
    picture = saved("AVIF", "RGB")
    return picture.replace(b"pitm", b"\0itm", 1)  # libavif: "Missing or empty image item" (a RuntimeError)


def dds_of_an_unknown_compression() -> bytes:
    picture = saved("DDS", "RGBA", pixel_format="DXT1")
    return picture.replace(b"DXT1", b"XYZ1", 1)  # Pillow: "Unimplemented pixel format" (a NotImplementedError)


def spider_image_inside_a_stack_of_none() -> bytes:
    picture = bytearray(saved("SPIDER", "F"))
    # Header word 27 (the image's number in a stack) set on a file that is no stack: Pillow's reader then uses
    # an attribute it never set (an AttributeError).
    big_endian = struct.unpack(">f", picture[16:20])[0] == 1.0  # word 5, IFORM, is 1 in a 2D image
    picture[26 * 4 : 27 * 4] = struct.pack(">f" if big_endian else "<f", 1.0)
    return bytes(picture)


@pytest.mark.parametrize("damaged", [avif_without_its_primary_item, dds_of_an_unknown_compression,
                                     spider_image_inside_a_stack_of_none], ids=["avif", "dds", "spider"])
def test_a_damaged_avif_dds_or_spider_file_gets_400_in_one_sentence(client, damaged):
    response = client.post("/predict", content=damaged(), headers={"Content-Type": "application/octet-stream"})
    assert_sentence(response, 400, "the request body", "image")


# --- 5. a worker killed while it starts is replaced ---------------------------------------------------------


def test_a_worker_killed_while_starting_is_replaced_so_the_server_keeps_all_its_workers(digit_png):
    async def kill_one_while_starting():
        preparer = workers.PicturePreparer(processes=2)
        preparer.start(wait=False)
        killed = preparer.workers[0].process
        killed.kill()  # Long before it has imported SciPy and Pillow and said "ready".
        try:
            view = await preparer(digit_png(7), "a drawn 7")  # Served meanwhile by the other worker.
            deadline = time.monotonic() + 20
            while len(preparer.idle) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return view, killed, [worker.process for worker in preparer.idle]
        finally:
            preparer.close()

    view, killed, idle = asyncio.run(kill_one_while_starting())
    assert view.shape == (28, 28) and view.max() == 255
    assert len(idle) == 2 and killed not in idle  # Two workers again, one of them new.


# --- 4. a worker's errors go to the server's log, rate limited -------------------------------------------------


def test_worker_errors_are_written_to_the_servers_stderr_at_most_ten_a_minute(capfd, digit_png):
    # A number in place of a picture's bytes is what no client can send: it stands for a bug in preparing (a
    # TypeError deep in the worker), the one kind of failure that is neither the picture's nor the client's.
    async def send_bugs(count: int):
        preparer = workers.PicturePreparer(processes=1)
        preparer.start()
        statuses = []
        try:
            for _ in range(count):
                try:
                    await preparer(12345, "picture number 12345")
                except workers.PreparationFailed as error:
                    statuses.append(error.status)
            view = await preparer(digit_png(7), "a drawn 7")  # The worker survived every one of them.
        finally:
            preparer.close()
        return statuses, view

    statuses, view = asyncio.run(send_bugs(25))
    assert statuses == [500] * 25 and view.shape == (28, 28)
    log = capfd.readouterr().err
    # Each logged error names the picture and ends with its traceback's cause; the 15 beyond the limit are not written.
    assert log.count("digits serve: preparing picture number 12345 failed in a worker process:") == 10, log
    assert log.count("TypeError") == 10 and "counted, not logged" in log


def test_the_error_log_says_how_many_errors_it_left_out_once_a_new_window_starts(capsys):
    log = workers.ErrorLog(count=2, seconds=0.2)
    for number in range(5):
        log.write(f"error {number}")
    time.sleep(0.25)
    log.write("error 5")
    written = capsys.readouterr().err
    assert [line for line in written.splitlines() if line.startswith("digits serve: error")] == [
        "digits serve: error 0", "digits serve: error 1", "digits serve: error 5"]
    assert "digits serve: 3 more worker errors in 0.2 s were not logged." in written
