"""Issue 15: what a hostile or careless client can make `digits serve` do, in process (the app) and for real."""

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
import warnings

import httpx
import psutil
import pytest
from PIL import Image

import hostile_files
from conftest import child_processes
from digits.inference.classifier import Classifier, load_classifier
from digits.serving import limits, preparation_worker, workers
from digits.serving.app import create_app
from digits.serving.protocol import LimitedHttpToolsProtocol

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier, allowed_hosts={"digits.example"}),
                    base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


def post(client, body: bytes, content_type: str = "image/png", **headers):
    return client.post("/predict", content=body, headers={"Content-Type": content_type, **headers})


def assert_sentence(response, status: int, *words: str):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail[0].isupper() and detail.endswith("."), detail
    for word in words:
        assert word.lower() in detail.lower(), detail


# --- 1. no picture is opened on the event loop ----------------------------------------------------------


def test_the_server_process_never_opens_a_picture(client, digit_png, monkeypatch):
    opened = []
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(args) or pytest.fail("opened"))
    assert post(client, digit_png(7)).json()["digit"] == 7  # The workers, other processes, still read it.
    assert opened == []


def test_an_icon_holding_a_huge_png_is_refused_with_413_and_costs_the_server_nothing(client):
    response = post(client, hostile_files.ico_holding_png(7000), "image/x-icon")
    assert_sentence(response, 413, "40,000,000 pixels")


def test_the_pixel_limit_message_states_the_exact_size(client):
    # 40,000,001 pixels: one more than the limit, which a rounded "40 megapixels" misstated.
    png = hostile_files.png_chunk(b"IHDR", (40_000_001).to_bytes(4, "big") + (1).to_bytes(4, "big")
                                  + bytes([8, 0, 0, 0, 0]))
    response = post(client, b"\x89PNG\r\n\x1a\n" + png + hostile_files.png_chunk(b"IDAT", b""))
    assert_sentence(response, 413, "40,000,001×1 = 40,000,001 pixels", "40,000,000")


# --- 2. the preparation time limit --------------------------------------------------------------------


def test_a_picture_over_the_time_limit_is_abandoned_its_worker_replaced_and_the_next_one_read(classifier, digit_png):
    with TestClient(create_app(classifier)) as own_client:
        preparer = own_client.app.state.preparer
        preparer.start()
        preparer.time_limit = 0.3
        before = {worker.process.pid for worker in preparer.workers}
        started = time.monotonic()
        response = post(own_client, hostile_files.progressive_jpeg(4000, 3000), "image/jpeg")  # about 3 s of CPU
        assert_sentence(response, 422, "longer than the 0.3 s")
        assert time.monotonic() - started < 2.5
        killed = before - {worker.process.pid for worker in preparer.workers}
        assert len(killed) == 1
        # Its work stopped with it: killed at once, and collected by a thread of the server, not on its event loop.
        (pid,) = killed
        deadline = time.monotonic() + 5
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not psutil.pid_exists(pid)
        preparer.time_limit = workers.PREPARATION_SECONDS
        assert post(own_client, digit_png(7)).json()["digit"] == 7


def test_a_worker_out_of_memory_answers_413_and_keeps_serving(classifier, digit_png, monkeypatch):
    monkeypatch.setattr(preparation_worker, "WORKER_MEMORY_BYTES", 40 * 2**20)
    with TestClient(create_app(classifier)) as own_client:
        assert_sentence(post(own_client, hostile_files.blank_png(6000, 6000)), 413, "memory")
        assert post(own_client, digit_png(1)).json()["digit"] == 1


# --- 3, 4. bodies: a deadline and one memory budget -----------------------------------------------------


FORM_START = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'


@pytest.mark.parametrize("content_type, start", [(b"image/png", b""), (b"multipart/form-data; boundary=x", FORM_START)],
                         ids=["raw", "form"])
def test_a_body_sent_too_slowly_is_cut_off_with_408(classifier, monkeypatch, content_type, start):
    monkeypatch.setattr(limits, "BODY_SECONDS", 0.3)
    app = create_app(classifier)
    sent = []

    async def stalling_client():
        yield {"type": "http.request", "body": start + b"\0" * 1000, "more_body": True}
        await asyncio.sleep(60)  # and then nothing: the client stalls with its body half sent

    async def call_app():
        messages = stalling_client()
        scope = {"type": "http", "method": "POST", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", content_type), (b"content-length", b"9000")],
                 "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1),
                 "root_path": "", "app": app}

        async def send(message):
            sent.append(message)

        await asyncio.wait_for(app(scope, messages.__anext__, send), 10)

    started = time.monotonic()
    asyncio.run(call_app())
    assert time.monotonic() - started < 5
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert b"longer than 0.3 s" in sent[1]["body"]


def test_uploads_beyond_the_shared_memory_budget_are_refused_with_503(classifier, digit_png, monkeypatch):
    monkeypatch.setattr(limits, "UPLOAD_BUDGET_BYTES", 1000)
    with TestClient(create_app(classifier)) as own_client:
        response = post(own_client, digit_png(7))
        assert_sentence(response, 503, "too many uploads")
        assert response.headers["retry-after"] == "5"
        assert post(own_client, b"x" * 500).status_code == 400  # Within the budget: read, and not an image.


# --- multipart forms: parsed once, as they arrive, within the same limits ---------------------------------


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "digits-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name or None for a plain field, content) parts, and its
    content type."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def in_pieces(body: bytes, size: int):
    """The body as a generator of pieces: the client sends it chunked, without a Content-Length."""
    return (body[start:start + size] for start in range(0, len(body), size))


def test_a_form_sent_in_pieces_is_read_and_answered_as_the_raw_picture_is(client, digit_png):
    body, content_type = multipart(("note", None, b"hello"), ("file", "seven.png", digit_png(7)))
    answer = client.post("/predict", content=in_pieces(body, 100), headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text
    assert answer.json() == post(client, digit_png(7)).json()


@pytest.mark.parametrize("declared", [True, False], ids=["declared-length", "chunked"])
def test_a_form_over_the_size_limit_is_refused_with_413(classifier, digit_png, declared):
    body, content_type = multipart(("file", "seven.png", digit_png(7) + b"\0" * 20_000))
    with TestClient(create_app(classifier, max_upload_bytes=10_000)) as small_client:
        response = small_client.post("/predict", content=body if declared else in_pieces(body, 1000),
                                     headers={"Content-Type": content_type})
    assert_sentence(response, 413, "larger than 10,000 bytes")
    assert response.headers["connection"] == "close"


DRAWING = "image/x-portable-graymap"


@pytest.mark.parametrize("declared", [True, False], ids=["declared-length", "chunked"])
def test_the_page_s_drawing_keeps_the_upload_limit_and_is_read_in_pieces(classifier, declared):
    drawing = b"P5\n100 100\n255\n" + bytes(range(100)) * 100  # 10,015 bytes: grey stripes, no digit.
    with TestClient(create_app(classifier, max_upload_bytes=10_000)) as small_client:
        too_large = small_client.post("/predict", content=drawing if declared else in_pieces(drawing, 1000),
                                      headers={"Content-Type": DRAWING})
        empty = small_client.post("/predict", content=b"", headers={"Content-Type": DRAWING})
    assert_sentence(too_large, 413, "larger than 10,000 bytes")
    assert too_large.headers["connection"] == "close"
    assert_sentence(empty, 400, "upload is empty")

    small = b"P5\n90 90\n255\n" + bytes([255]) * 8100  # Blank paper, within the limit, sent in pieces.
    with TestClient(create_app(classifier, max_upload_bytes=10_000)) as small_client:
        blank = small_client.post("/predict", content=in_pieces(small, 1000), headers={"Content-Type": DRAWING})
    assert_sentence(blank, 422, "no digit found in the drawing")


@pytest.mark.parametrize("parts, words", [
    ([("file", f"{number}.png", b"x") for number in range(5)], "too many files"),
    ([(f"note{number}", None, b"x") for number in range(17)], "too many fields"),
    ([("note", None, b"x" * (2**20 + 1))], "part exceeded maximum size"),
], ids=["5 files", "17 fields", "a 1 MB field"])
def test_a_form_with_too_many_or_too_large_parts_is_refused_with_400(client, parts, words):
    body, content_type = multipart(*parts)
    response = client.post("/predict", content=body, headers={"Content-Type": content_type})
    assert_sentence(response, 400, "multipart form cannot be read", words)


# --- 5. NaN pictures ------------------------------------------------------------------------------------


def test_a_float_tiff_holding_nan_is_refused_in_one_sentence(client):
    assert_sentence(post(client, hostile_files.float_tiff_with_nan(), "image/tiff"), 400, "not numbers")


# --- 7. headers, hosts, origins and simple bodies -------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/health", "/model", "/openapi.json", "/missing"])
def test_every_response_carries_the_security_headers(client, path):
    headers = client.get(path).headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_errors_carry_the_security_headers_too(client):
    assert post(client, b"").headers["x-content-type-options"] == "nosniff"
    assert post(client, b"x", "text/plain").headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "digits.example", "10.1.2.3"])
def test_local_names_addresses_and_the_configured_host_are_answered(client, host):
    assert client.get("/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "localhost.attacker.example"])
def test_other_host_names_are_refused_which_stops_dns_rebinding(client, host):
    assert_sentence(client.get("/health", headers={"Host": host}), 421, "does not answer to the host name")


def test_a_post_from_a_page_of_another_site_is_refused(client, digit_png):
    assert_sentence(post(client, digit_png(7), Origin="http://attacker.example"), 403, "other sites")
    assert post(client, digit_png(7), Origin="http://127.0.0.1:8000").json()["digit"] == 7


def test_bodies_a_cross_site_form_can_send_are_refused(client, digit_png):
    assert_sentence(post(client, digit_png(7), "text/plain"), 415, "text/plain")
    form = "application/x-www-form-urlencoded"
    assert_sentence(post(client, digit_png(7), form, **{"Sec-Fetch-Site": "cross-site"}), 415, form)
    # curl --data-binary sends that type with no browser's headers: it still works.
    assert post(client, digit_png(7), form).json()["digit"] == 7


def test_the_model_description_shows_no_local_folders(tmp_path):
    described = Classifier(name="mine", model=None, info={"source": str(tmp_path / "secret" / "model.keras")})
    with TestClient(create_app(described)) as own_client:  # Only described, never asked to read a picture.
        source = own_client.get("/model").json()["source"]
    assert "model.keras" in source and str(tmp_path) not in source and "secret" not in source


# --- the real server: header limit, aborted uploads, SIGTERM --------------------------------------------


def start_server(*arguments: str) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "digits", "serve", "--port", "0", *arguments],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    address = re.search(r"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
    assert address, server.stderr.read()
    return server, address.group(1)


def raw_request(port: str, request: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # The server refused and closed before reading everything; its answer is still there.
        if not read:
            return b""
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


@pytest.mark.slow
def test_the_real_server_limits_headers_checks_hosts_stays_quiet_and_stops_cleanly_on_sigterm(digit_png):
    server, port = start_server()
    try:
        huge_headers = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Filler: aaaaaaaaaa\r\n" * 20_000
        answer = raw_request(port, huge_headers)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"16,384 bytes" in answer

        assert b"421" in raw_request(port, b"GET /health HTTP/1.1\r\nHost: attacker.example\r\n"
                                           b"Connection: close\r\n\r\n").split(b"\r\n")[0]
        # An upload abandoned halfway: the client closes the connection.
        raw_request(port, b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 100000\r\n\r\n" + b"\0" * 1000, read=False)
        base = f"http://127.0.0.1:{port}/"
        assert httpx.post(base + "predict", content=digit_png(1), timeout=30).json()["digit"] == 1
        for size in (100_000, 5_000_000):  # Bodies far larger than the header limit are read whole, twice in a row.
            with httpx.Client(timeout=30) as keep_alive:
                for _ in range(2):
                    refused = keep_alive.post(base + "predict", content=bytes(size),
                                              headers={"Content-Type": "image/png"})
                    assert refused.status_code == 400 and "not an image" in refused.json()["detail"]
        # A client that leaves while its (slow) picture is prepared: its worker is killed and replaced.
        before = set(child_processes(server.pid))
        slow = hostile_files.progressive_jpeg(4000, 10_000)
        with socket.create_connection(("127.0.0.1", int(port))) as leaving:
            leaving.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(slow) + slow)
            time.sleep(1.0)
        deadline = time.monotonic() + 3
        while before <= set(child_processes(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not before <= set(child_processes(server.pid))  # One of the workers was stopped well before 5 s.
        children = child_processes(server.pid)
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0 and "Traceback" not in errors, errors
    assert len(children) >= 2
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if psutil.pid_exists(pid)]  # No worker, no resource tracker left.


# --- the header limit, chunk by chunk ---------------------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """What uvicorn's protocol writes, and whether it closed the connection: the socket's side, recorded."""

    def __init__(self):
        super().__init__()
        self.written, self.closed = b"", False

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def write_eof(self):
        pass

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


async def body_length_app(scope, receive, send):
    """A plain ASGI app: answers 200 with the length of the body it read."""
    length, more = 0, True
    while more:
        message = await receive()
        length, more = length + len(message.get("body", b"")), message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(length).encode()})


def feed(*chunks: bytes) -> RecordingTransport:
    import uvicorn
    from uvicorn.server import ServerState

    async def run():
        config = uvicorn.Config(body_length_app, http=LimitedHttpToolsProtocol, lifespan="off")
        config.load()
        protocol = LimitedHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        for chunk in chunks:
            if not transport.closed:
                protocol.data_received(chunk)
            await asyncio.sleep(0.01)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


def post_head(length: int) -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % length


def test_a_whole_request_in_one_chunk_never_counts_its_body_as_headers():
    transport = feed(post_head(100_000) + bytes(100_000) + post_head(50_000) + bytes(50_000))
    assert transport.written.count(b"HTTP/1.1 200") == 2 and b"100000" in transport.written


def test_a_body_in_many_chunks_never_counts_as_headers():
    transport = feed(post_head(300_000) + bytes(1000), *[bytes(65_536)] * 4, bytes(300_000 - 1000 - 4 * 65_536))
    assert transport.written.startswith(b"HTTP/1.1 200") and b"\r\n300000\r\n" in transport.written


def test_headers_over_the_limit_are_refused_whether_in_one_chunk_or_many():
    filler = b"X-Filler: " + b"a" * 90 + b"\r\n"
    one = feed(b"GET / HTTP/1.1\r\n" + filler * 200)
    many = feed(b"GET / HTTP/1.1\r\n", *[filler * 20] * 10)
    for transport in (one, many):
        assert transport.written.startswith(b"HTTP/1.1 431") and transport.closed



def test_a_declared_body_that_cannot_fit_the_budget_is_refused_before_a_byte_is_read():
    budget = limits.UploadBudget(limit=10_000)
    budget.take(9_000)  # other uploads in flight hold most of it
    reached_the_app, sent = [], []

    async def app(scope, receive, send):
        reached_the_app.append(scope["path"])

    async def receive():
        raise AssertionError("the body must not be read")

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/png"), (b"content-length", b"5000")]}
    asyncio.run(limits.RequestGuard(app, budget=budget)(scope, receive, send))
    assert not reached_the_app and sent[0]["status"] == 503
    assert (b"connection", b"close") in sent[0]["headers"] and (b"retry-after", b"5") in sent[0]["headers"]
    assert b"too many uploads" in sent[1]["body"] and budget.used == 9_000  # nothing was kept
    # One that fits is handled, and holds nothing once answered.
    asyncio.run(limits.RequestGuard(app, budget=budget)({**scope, "headers": scope["headers"][:2] + [
        (b"content-length", b"1000")]}, receive, send))
    assert reached_the_app == ["/predict"] and budget.used == 9_000
