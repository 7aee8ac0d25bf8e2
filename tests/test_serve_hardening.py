"""Issue 24, items 1–8: what the second adversarial pass broke in `digits serve`, in process and for real."""

import asyncio
import contextlib
import io
import json
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
from PIL import Image, features

import hostile_files
from conftest import child_processes
from digits.inference.classifier import load_classifier
from digits.serving import limits, preparation_worker, workers
from digits.serving.app import create_app
from digits.serving.process import open_listener
from digits.serving.protocol import LimitedHttpToolsProtocol, RateLimitedLog


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def server(classifier):
    """A real server on a free 127.0.0.1 port, as `digits serve --allow-host digits.example.com` runs it: its port."""
    with running_server(create_app(classifier, allowed_hosts=limits.allowed_hosts_for(
            "127.0.0.1", ["digits.example.com"]))) as port:
        yield port


def post(port: int, body: bytes, content_type: str = "image/png", **headers: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/predict", content=body,
                      headers={"Content-Type": content_type, **headers}, timeout=30)


@contextlib.contextmanager
def running_server(app):
    """`app` served by uvicorn with the limited protocol, as `digits serve` does, in a thread of this process."""
    import uvicorn

    listener = open_listener("127.0.0.1", 0)
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="off",
                            http=LimitedHttpToolsProtocol)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield listener.getsockname()[1]
    finally:
        running.should_exit = True
        thread.join(timeout=10)
        app.state.preparer.close()
        listener.close()


def exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` on a new connection and read the answer until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Refused and closed before reading everything; the answer is still there.
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def post_head(length: int) -> bytes:
    return b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % (
        length)


def post_request(body: bytes) -> bytes:
    return post_head(len(body))[:-2] + b"Connection: close\r\n\r\n" + body


def head_and_detail(answer: bytes) -> tuple[int, dict[str, str], str]:
    """The status, headers (lower-case names) and JSON detail of a raw HTTP answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)["detail"]


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
def test_a_damaged_avif_dds_or_spider_file_gets_400_in_one_sentence(server, damaged):
    response = post(server, damaged(), "application/octet-stream")
    assert_sentence(response, 400, "the request body", "image")


def test_a_picture_in_a_mode_pillow_cannot_convert_is_an_image_error_not_a_crash():
    from digits.pictures.decode import ImageError
    from digits.pictures.prepare import prepare_image

    with pytest.raises(ImageError, match=r"^the drawing uses a colour mode \(La\) that cannot be read; .*\.$"):
        prepare_image(Image.new("La", (40, 40)), name="the drawing")


def test_the_servers_own_warnings_are_rate_limited_and_say_how_many_were_held_back():
    import logging

    records = [logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, "Invalid HTTP request received.",
                                 None, None) for _ in range(6)]
    log = RateLimitedLog(count=2, seconds=0.2)
    passed = [log.filter(record) for record in records[:5]]
    time.sleep(0.25)
    assert passed == [True, True, False, False, False] and log.filter(records[5])
    assert records[5].getMessage() == ("(3 more log lines in 0.2 s were not written.) "
                                       "Invalid HTTP request received.")


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
    assert view.is_single and view.views[0].max() == 255  # The drawn 7, found and prepared.
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
                except preparation_worker.PreparationFailed as error:
                    statuses.append(error.status)
            view = await preparer(digit_png(7), "a drawn 7")  # The worker survived every one of them.
        finally:
            preparer.close()
        return statuses, view

    statuses, view = asyncio.run(send_bugs(25))
    assert statuses == [500] * 25 and view.is_single
    log = capfd.readouterr().err
    # Each logged error names the picture and ends with its traceback's cause; the 15 beyond the limit are not written.
    assert log.count("digits serve: preparing picture number 12345 failed in a worker process:") == 10, log
    assert log.count("TypeError") == 10 and "counted, not logged" in log


def test_a_worker_that_dies_while_preparing_a_picture_is_named_in_the_servers_log(capfd, digit_png):
    async def kill_while_preparing():
        preparer = workers.PicturePreparer(processes=1)
        preparer.start()
        try:
            slow = asyncio.ensure_future(preparer(hostile_files.progressive_jpeg(4000, 10_000), "a slow JPEG"))
            await asyncio.sleep(0.5)
            preparer.workers[0].process.kill()  # As the kernel's out-of-memory killer would.
            with pytest.raises(preparation_worker.PreparationFailed) as failed:
                await slow
            return failed.value.status, await preparer(digit_png(7), "a drawn 7")
        finally:
            preparer.close()

    status, view = asyncio.run(kill_while_preparing())
    assert status == 503 and view.is_single  # The next picture is read by the worker that took its place.
    assert ("digits serve: a worker process ended (exit status -9) while preparing a slow JPEG; another takes its "
            "place.") in capfd.readouterr().err


def test_the_error_log_says_how_many_errors_it_left_out_once_a_new_window_starts(capsys):
    log = preparation_worker.ErrorLog(count=2, seconds=0.2)
    for number in range(5):
        log.write(f"error {number}")
    time.sleep(0.25)
    log.write("error 5")
    written = capsys.readouterr().err
    assert [line for line in written.splitlines() if line.startswith("digits serve: error")] == [
        "digits serve: error 0", "digits serve: error 1", "digits serve: error 5"]
    assert "digits serve: 3 more worker errors in 0.2 s were not logged." in written


# --- 7. uvicorn's own 400 for bytes that are not HTTP ---------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),  # a TLS hello
                                     b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n"],
                         ids=["tls-hello", "header-without-colon"])
def test_a_request_that_is_not_http_gets_400_in_the_apis_shape_with_the_security_headers(server, garbage):
    status, headers, detail = head_and_detail(exchange(server, garbage))
    assert status == 400 and headers["connection"] == "close"
    assert {name: headers.get(name) for name in limits.SECURITY_HEADERS} == limits.SECURITY_HEADERS
    assert detail == "The request is not valid HTTP/1.1; send a well-formed request."


# --- 8. behind a reverse proxy: --allow-host ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["digits.example.com", "127.0.0.1:8000"], ids=["host-passed-on", "host-rewritten"])
def test_the_page_behind_a_reverse_proxy_is_served_and_its_drawings_are_read(server, digit_png, host):
    # The proxy passes the browser's Host on (Caddy, nginx with `proxy_set_header Host $host`) or its own (nginx's
    # default): either way the page loads and a drawing posted from it, with the public Origin, is read.
    assert httpx.get(f"http://127.0.0.1:{server}/", headers={"Host": host}).status_code == 200
    answer = post(server, digit_png(7), Host=host, Origin="https://digits.example.com")
    assert answer.status_code == 200 and answer.json()["digit"] == 7


def test_behind_a_reverse_proxy_other_sites_and_names_are_still_refused(server, digit_png):
    cross_site = post(server, digit_png(7), Host="127.0.0.1:8000", Origin="https://attacker.example")
    assert_sentence(cross_site, 403, "other sites")
    other_name = httpx.get(f"http://127.0.0.1:{server}/health", headers={"Host": "attacker.example"})
    assert_sentence(other_name, 421, "--allow-host")


def test_allowed_hosts_are_lower_case_names_and_ip_addresses_need_none():
    assert limits.checked_host_names(["Digits.Example.COM", "10.0.0.5", "[::1]", "localhost"]) == {
        "digits.example.com", "localhost"}


@pytest.mark.parametrize("name, words", [("*", "wildcard"), ("https://digits.example.com/", "not a host name"),
                                         ("digits example", "not a host name")])
def test_serve_refuses_an_allowed_host_that_is_no_host_name_in_one_sentence(capsys, name, words):
    from digits.cli import main

    assert main(["serve", "--port", "0", "--allow-host", "digits.example.com", "--allow-host", name]) == 1
    error = capsys.readouterr().err
    assert error.startswith("digits: error: --allow-host ") and repr(name) in error and words in error
    assert error.count("\n") == 1 and "Traceback" not in error


# --- 1. the upload budget: what was sent, not what was declared; one client holds a share of it --------------


def attacker_connection(port: int) -> socket.socket:
    """A connection from another address of this machine (127.0.0.2): another client than the test's requests."""
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))


def first_answers(connections: list[socket.socket], count: int, seconds: float = 10) -> list[bytes]:
    """The first bytes that `count` of the connections receive, waiting at most `seconds` (fewer if they do not)."""
    answers: list[bytes] = []
    waiting = list(connections)
    deadline = time.monotonic() + seconds
    while len(answers) < count and waiting and time.monotonic() < deadline:
        readable, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
        for connection in readable:
            waiting.remove(connection)
            answers.append(connection.recv(65536))
    return answers


def test_bodies_declared_but_never_sent_hold_no_budget_so_a_drawing_is_still_read(server, digit_png):
    # The attack of issue 24: heads whose Content-Lengths add up to the whole budget, and no body.
    declared = [10 * 2**20] * 12 + [limits.UPLOAD_BUDGET_BYTES - 12 * 10 * 2**20]
    idle = [attacker_connection(server) for _ in declared]
    try:
        for connection, length in zip(idle, declared, strict=True):
            connection.sendall(post_head(length))
        # The server has read every head: three are within the attacker's 32 MB share, and ten were refused.
        assert [answer[:12] for answer in first_answers(idle, 10)] == [b"HTTP/1.1 429"] * 10
        status, _, body = exchange(server, post_request(digit_png(7))).partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200") and json.loads(body)["digit"] == 7
    finally:
        for connection in idle:
            connection.close()


def test_one_client_holds_at_most_its_share_of_the_budget_and_others_are_still_read(classifier, monkeypatch):
    monkeypatch.setattr(limits, "UPLOAD_BUDGET_BYTES", 2 * 2**20)
    monkeypatch.setattr(limits, "CLIENT_UPLOAD_BYTES", 2**20)
    stalled = []
    with running_server(create_app(classifier)) as port:
        try:
            # Eight uploads of 400 KB from one client, each stalling after 300 KB: 2.4 MB, more than the budget.
            for _ in range(8):
                connection = attacker_connection(port)
                connection.sendall(post_request(bytes(400_000))[: -100_000])
                stalled.append(connection)
                time.sleep(0.05)
            # Two fit the client's share of 1 MB; the six past it were answered at once, unread, and closed.
            assert [answer[:12] for answer in first_answers(stalled, 6)] == [b"HTTP/1.1 429"] * 6
            # Another client's 2 KB upload is still received and read, not refused (503): a form without its
            # file field, which the application answers from the form alone, without starting a worker.
            form = b'--b\r\nContent-Disposition: form-data; name="other"\r\n\r\n' + b"x" * 2000 + b"\r\n--b--\r\n"
            request = post_request(form).replace(b"image/png", b"multipart/form-data; boundary=b", 1)
            status, _, detail = head_and_detail(exchange(port, request))
            assert status == 400 and "no file field" in detail
        finally:
            for connection in stalled:
                connection.close()


# --- 2. a head that arrives in one read is held to the header limit too ---------------------------------------


def one_read_head(request_line: bytes, size: int, *extra: bytes) -> bytes:
    """A request head of about `size` bytes: many small headers, as in issue 24 (6,100 headers in 20–100 KB)."""
    headers = b"".join(b"X-%d: a\r\n" % number for number in range(size // 10))
    return request_line + b"Host: 127.0.0.1\r\n" + b"".join(extra) + headers + b"\r\n"


@pytest.mark.parametrize("size", [20_000, 100_000])
def test_a_head_over_the_limit_arriving_in_one_read_gets_431(server, size):
    head = one_read_head(b"GET /health HTTP/1.1\r\n", size)
    status, headers, detail = head_and_detail(exchange(server, head))
    assert status == 431 and headers["connection"] == "close" and "16,384 bytes" in detail


def test_a_chunked_upload_whose_head_is_over_the_limit_never_reaches_the_application(server):
    head = one_read_head(b"POST /predict HTTP/1.1\r\n", 60_000, b"Content-Type: image/png\r\n",
                         b"Transfer-Encoding: chunked\r\n")
    status, _, detail = head_and_detail(exchange(server, head))  # and no body: the attack's connections wait
    assert status == 431 and "16,384 bytes" in detail


def test_a_head_over_the_limit_pipelined_behind_a_small_request_is_refused_too(server):
    small = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answer = exchange(server, small + one_read_head(b"GET /health HTTP/1.1\r\n", 40_000))
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1 200") == 1  # The big one is not answered.


def test_a_head_just_under_the_limit_is_still_answered(server):
    head = one_read_head(b"GET /health HTTP/1.1\r\n", 15_000)
    assert len(head) < limits.MAX_HEADER_BYTES
    assert exchange(server, head[:-2] + b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200")


# --- 6. SIGTERM: stopped within 10 s, every request answered, no process left; and 8 for real -----------------


def read_answer(connection: socket.socket) -> bytes:
    answer = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.slow
def test_sigterm_with_slow_pictures_in_flight_stops_within_10_s_and_answers_every_request(digit_png):
    server = subprocess.Popen([sys.executable, "-m", "digits", "serve", "--port", "0",
                               "--allow-host", "digits.example.com"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    connections = []
    try:
        address = re.search(r"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
        assert address, server.stderr.read()
        port = int(address.group(1))
        # Served under the name a reverse proxy gives it (item 8), which is refused without --allow-host.
        assert exchange(port, b"GET /health HTTP/1.1\r\nHost: digits.example.com\r\nConnection: close\r\n\r\n"
                        ).startswith(b"HTTP/1.1 200")
        assert exchange(port, post_request(digit_png(7))).startswith(b"HTTP/1.1 200")  # Both workers are ready.
        for _ in range(30):  # Garbage: uvicorn logs a warning for each, at most 10 a minute (item 4's rule).
            assert exchange(port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        # Twelve pictures that each take longer than the 5 s limit: two are prepared, ten wait for a worker.
        slow = hostile_files.progressive_jpeg(4000, 10_000)
        for _ in range(12):
            connections.append(socket.create_connection(("127.0.0.1", port), timeout=20))
            connections[-1].sendall(post_request(slow))
        # And an upload still arriving: half its body is sent.
        connections.append(socket.create_connection(("127.0.0.1", port), timeout=20))
        connections[-1].sendall(post_head(100_000) + bytes(50_000))
        time.sleep(1.0)
        workers_before = child_processes(server.pid)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        answers = [read_answer(connection) for connection in connections]
        _, errors = server.communicate(timeout=30)
        stopped_after = time.monotonic() - started
    finally:
        for connection in connections:
            connection.close()
        if server.poll() is None:
            server.kill()
            server.communicate()
    statuses = [int(answer.split(b" ", 2)[1]) if answer else None for answer in answers]
    assert stopped_after < 10, (stopped_after, statuses)
    # The ten waiting and the upload were refused at once; the two being prepared were answered (past the limit).
    assert statuses.count(503) >= 11 and set(statuses) <= {503, 422}, statuses
    assert all(b"stopping" in answer for answer in answers if b" 503 " in answer[:20])
    assert server.returncode == 0 and "Traceback" not in errors, errors
    assert errors.count("Invalid HTTP request received.") == 10, errors
    deadline = time.monotonic() + 5
    while any(psutil.pid_exists(pid) for pid in workers_before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers_before and not [pid for pid in workers_before if psutil.pid_exists(pid)]


def test_a_head_whose_blank_line_is_split_across_reads_is_not_taken_for_a_long_head(server):
    # The head's end arrives with a 1 MB body: counting that read as head would refuse a legitimate upload.
    request = one_read_head(b"POST /predict HTTP/1.1\r\n", 8_000, b"Content-Type: image/png\r\n",
                            b"Content-Length: 1000000\r\n", b"Connection: close\r\n")
    with socket.create_connection(("127.0.0.1", server), timeout=10) as connection:
        connection.sendall(request[:-2])
        time.sleep(0.2)  # Read by the server on its own.
        connection.sendall(b"\r\n" + bytes(1_000_000))
        status, _, detail = head_and_detail(read_answer(connection))
    assert status == 400 and "not an image" in detail
