"""What a request to `digits serve` may cost, and who may send one: the server's limits in one place.

Two layers, so that no request can make the server hold more than a bounded amount of memory:

- `LimitedHttpToolsProtocol`, uvicorn's fast HTTP parser with a cap on the request line and headers and a
  deadline for receiving them (httptools has neither, so a client could send headers without end);
- `RequestGuard`, an ASGI middleware: a deadline for receiving the body, one budget of memory shared by
  all uploads being received, the Host and Origin checks that stop DNS rebinding and cross-site posts, and
  the security headers on every response.

The body's own size limit (10 MB) stays with the endpoint (`digits.serving.app`), and the preparation time limit
with the workers (`digits.serving.workers`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import time
from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digits.errors import DigitsError
from digits.serving.workers import STOPPING_SENTENCE  # The workers' sentence: the same answer from both.

# The request line and headers of a browser's request are under 2 KB; 16 KB is h11's default limit too.
MAX_HEADER_BYTES = 16 * 1024
# A client has this long to send the request line and headers (a slow-loris client holds a connection).
HEADER_SECONDS = 10.0
# A client has this long to send a body; 10 MB in 30 s needs 2.8 Mbit/s.
BODY_SECONDS = 30.0
# All uploads being received at once may hold this much memory together; beyond it the server answers 503.
UPLOAD_BUDGET_BYTES = 128 * 2**20
# The uploads of one client (one IPv4 address, or one IPv6 /64 network) may hold this much of it, three uploads of
# the largest size; beyond it that client gets 429. So one client cannot keep every other upload waiting.
CLIENT_UPLOAD_BYTES = 32 * 2**20

# On SIGTERM or Ctrl+C, requests being answered get this long to finish before the server exits anyway (Docker
# kills after 10 s). Longer than a picture's preparation limit (5 s), so a picture being prepared is answered;
# pictures waiting for a worker, and uploads still arriving, get 503 at once.
STOP_SECONDS = 7

# The page loads nothing from elsewhere and may not be framed by another site; the browser enforces it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
# Host names that are always this machine. An IP address is accepted too: DNS rebinding needs a name.
LOCAL_HOST_NAMES = ("localhost", "localhost.")
# A host name as DNS spells it: labels of letters, digits and hyphens, joined by dots.
HOST_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?")
# Bodies a page on another site can post without asking (a "simple" cross-origin request).
SIMPLE_FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with MAX_HEADER_BYTES and HEADER_SECONDS for each request's head."""

    head_bytes = 0
    reading_head = True
    head_deadline: asyncio.TimerHandle | None = None
    refused = False
    heads_read = 0
    parsed_head_bytes = 0  # The request line's URL and the headers of the request being parsed, as parsed.
    close_when_answered = False
    head_tail = b""  # The last bytes of the head read so far: the blank line ending it may start there.

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.start_head_clock()  # A client that connects and sends nothing is closed too.

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # Read and dropped until the connection closes; see refuse_head.
        was_reading_head, heads_before = self.reading_head, self.heads_read
        if was_reading_head and self.head_deadline is None:
            self.start_head_clock()
        if was_reading_head and self.head_over_limit(data):
            # Refused before the parser reads it: parsing 60 KB of headers costs 6,000 Python calls.
            self.refuse_head(431, f"is over {MAX_HEADER_BYTES:,} bytes")
            self.refused = True
            return
        super().data_received(data)
        # Only a chunk that holds nothing but (part of) one head counts: a body's bytes never count as a head,
        # even when a whole request, head and body, arrives in one chunk.
        if was_reading_head and self.heads_read == heads_before and not self.transport.is_closing():
            self.head_bytes += len(data)
            self.head_tail = data[-3:]
            if self.head_bytes > MAX_HEADER_BYTES:
                self.refuse_head(431, f"is over {MAX_HEADER_BYTES:,} bytes")

    # A head that arrives whole in one read is never counted by data_received (a chunk holding a head's end is
    # not), so the parser's pieces of each head are counted too: what is over the limit is not kept, and the
    # request is refused when its head ends, before the application sees it.

    def on_message_begin(self) -> None:
        self.parsed_head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self.head_fits(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_fits(len(name) + len(value) + 4):  # "name: value\r\n"
            super().on_header(name, value)

    def head_fits(self, size: int) -> bool:
        self.parsed_head_bytes += size
        return self.parsed_head_bytes <= MAX_HEADER_BYTES

    def on_headers_complete(self) -> None:
        self.heads_read += 1
        if self.parsed_head_bytes > MAX_HEADER_BYTES:
            self.refuse_head(431, f"is over {MAX_HEADER_BYTES:,} bytes")
            self.refused = True  # The rest of what arrives is dropped; see refuse_head.
            return
        self.end_head()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.close_when_answered:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.refused:
            return
        super().on_message_complete()
        self.reading_head, self.head_bytes, self.head_tail = True, 0, b""  # The next request starts afresh.

    def head_over_limit(self, data: bytes) -> bool:
        """Whether the head being read, with `data` (the head's next bytes, maybe a body after them), is over
        MAX_HEADER_BYTES: the head ends at the first blank line, which may begin in the previous chunk."""
        joined = self.head_tail + data
        end = joined.find(b"\r\n\r\n")
        size = self.head_bytes + (len(data) if end < 0 else end + 4 - len(self.head_tail))
        return size > MAX_HEADER_BYTES

    def connection_lost(self, exc: Exception | None) -> None:
        self.end_head()
        super().connection_lost(exc)

    def start_head_clock(self) -> None:
        self.head_deadline = self.loop.call_later(HEADER_SECONDS, self.refuse_head, 408, "took too long")

    def end_head(self) -> None:
        self.reading_head = False
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def refuse_head(self, status: int, why: str) -> None:
        """Answer in one sentence and close, without passing the request to the app."""
        self.end_head()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request arrives while the previous one is being answered: that answer comes first.
            if status == 408:
                self.reading_head = True
                self.start_head_clock()
            else:
                self.refused = self.close_when_answered = True  # The rest is dropped; closed once answered.
            return
        self.answer_and_close(status, f"The request line and headers {why}; send a shorter request.")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP: in the API's shape, with the security headers."""
        self.end_head()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # A pipelined request is garbage while the previous one is answered.
            return
        self.answer_and_close(400, "The request is not valid HTTP/1.1; send a well-formed request.")

    def answer_and_close(self, status: int, detail: str) -> None:
        """Answer in one sentence, with the security headers, and close, without passing the request to the app."""
        reason = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        body = json.dumps({"detail": detail}).encode()
        head = [b"HTTP/1.1 %d %s" % (status, reason), b"content-type: application/json",
                b"content-length: %d" % len(body), b"connection: close"]
        head += [name.encode() + b": " + value.encode() for name, value in SECURITY_HEADERS.items()]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        # Closing with unread data would reset the connection and lose the answer on the way: the rest of the
        # request is read and dropped for a second, after the answer and the end of it are sent.
        self.refused = True
        self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)


BUSY_SENTENCE = "The server is receiving too many uploads at once; send the picture again in a moment."
# Closing the connection spares reading the rest of a body nobody will use.
BUSY_HEADERS = {"retry-after": "5", "connection": "close"}


class StopNotice:
    """Told when the server begins to stop (`begin`): new requests, and uploads still arriving, get 503 at once."""

    def __init__(self):
        self.stopping = False
        self.body_deadlines: set[asyncio.Timeout] = set()  # Of the uploads waiting for their next bytes now.

    def begin(self) -> None:
        self.stopping = True
        now = asyncio.get_running_loop().time()
        for deadline in self.body_deadlines:
            deadline.reschedule(now)  # Each waiting upload wakes up and hears it is refused.


CLIENT_BUSY_SENTENCE = ("Your uploads being received already hold all the memory this server gives one client; "
                        "wait for their answers, then send the picture again.")


class UploadBudget:
    """Bytes held by the uploads being received now, in all and per client; `take` refuses what would go over.

    The whole budget counts only bytes that have arrived: a client that declares a large body and sends none of
    it holds none of it (a declared length used to reserve its whole size there, so a few idle connections locked
    everyone out). A client's share counts what its uploads declared, or received if more: a client's many
    connections are refused from their headers once its share is pledged, before a byte of their bodies is read,
    and only that client waits.
    """

    def __init__(self, limit: int | None = None, client_limit: int | None = None):
        self.limit = UPLOAD_BUDGET_BYTES if limit is None else limit
        self.client_limit = CLIENT_UPLOAD_BYTES if client_limit is None else client_limit
        self.used = 0
        self.used_by: dict[str, int] = {}  # Only clients holding something, so it is as long as the uploads.

    def refusal(self, size: int, client: str = "", client_size: int | None = None) -> HTTPException | None:
        """The answer when `size` more bytes would go over the budget, or `client_size` (default: `size`) more over
        the client's share; None when they fit."""
        if self.used_by.get(client, 0) + (size if client_size is None else client_size) > self.client_limit:
            return HTTPException(429, CLIENT_BUSY_SENTENCE, headers=BUSY_HEADERS)
        if self.used + size > self.limit:
            return HTTPException(503, BUSY_SENTENCE, headers=BUSY_HEADERS)
        return None

    def take(self, size: int, client: str = "", client_size: int | None = None) -> None:
        refusal = self.refusal(size, client, client_size)
        if refusal is not None:
            raise refusal
        self.used += size
        self.used_by[client] = self.used_by.get(client, 0) + (size if client_size is None else client_size)

    def give_back(self, size: int, client: str = "", client_size: int | None = None) -> None:
        self.used -= size
        left = self.used_by.get(client, 0) - (size if client_size is None else client_size)
        if left > 0:
            self.used_by[client] = left
        else:
            self.used_by.pop(client, None)


def client_of(scope) -> str:
    """Who sent a request, for the per-client share: its IPv4 address, or its IPv6 /64 network (one host may hold
    a whole /64). Behind a reverse proxy every request comes from the proxy, which then holds one client's share."""
    address = (scope.get("client") or ("",))[0] or ""
    try:
        parsed = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


class RequestGuard:
    """ASGI middleware: body deadline and memory budget, Host and Origin checks, security headers.

    `allowed_hosts` are the names this server answers to besides localhost and IP addresses; None turns the
    Host check off (an application embedded behind another server that checks it).
    """

    def __init__(self, app, allowed_hosts: Collection[str] | None = None, budget: UploadBudget | None = None,
                 body_seconds: float | None = None, stop_notice: StopNotice | None = None):
        self.app = app
        self.stop_notice = stop_notice or StopNotice()
        self.allowed_hosts = None if allowed_hosts is None else {name.lower() for name in allowed_hosts}
        self.budget = budget or UploadBudget()
        self.body_seconds = BODY_SECONDS if body_seconds is None else body_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.stop_notice.stopping:
            await refuse(send, 503, STOPPING_SENTENCE, BUSY_HEADERS)  # New work, on a connection still open.
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        refusal = self.refusal(scope["method"], headers)
        if refusal is not None:
            await refuse(send, *refusal)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                kept = [(name, value) for name, value in message.get("headers", [])
                        if name.decode("latin-1").lower() not in SECURITY_HEADERS]
                message = {**message, "headers": kept + encoded_security_headers()}
            await send(message)

        # A body that declares a length the budget cannot hold now, or that its client's share cannot, is refused
        # before a byte of it is read, instead of after many connections have each sent a part.
        client = client_of(scope)
        declared = declared_length(headers)
        if declared > self.budget.client_limit:
            declared = 0  # Bigger than any upload may be: the application refuses it (413) from the header alone.
        early = self.budget.refusal(declared, client)
        if early is not None:
            await refuse(send, early.status_code, early.detail, BUSY_HEADERS)
            return
        self.budget.take(0, client, client_size=declared)  # Pledged from the client's share, not the whole budget.
        held, body_complete = 0, False
        deadline = time.monotonic() + self.body_seconds

        async def limited_receive():
            nonlocal held, body_complete
            if body_complete:
                return await receive()  # Only the disconnect is left to come; no deadline for it.
            stopped = HTTPException(503, STOPPING_SENTENCE, headers=BUSY_HEADERS)
            if self.stop_notice.stopping:
                raise stopped
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())) as body_deadline:
                    self.stop_notice.body_deadlines.add(body_deadline)
                    try:
                        message = await receive()
                    finally:
                        self.stop_notice.body_deadlines.discard(body_deadline)
            except TimeoutError:
                if self.stop_notice.stopping:
                    raise stopped from None
                raise HTTPException(
                    408, f"The upload took longer than {self.body_seconds:g} s; send it again on a faster "
                    "connection or send a smaller picture.", headers={"connection": "close"},
                ) from None
            body_complete = message["type"] != "http.request" or not message.get("more_body", False)
            size = len(message.get("body", b""))
            self.budget.take(size, client, client_size=max(0, held + size - max(held, declared)))
            held += size
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except ClientDisconnect:
            pass  # The client left during its upload; nobody is there to answer, and it is no error of ours.
        finally:
            self.budget.give_back(held, client, client_size=max(held, declared))

    def refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """The status and sentence for a request refused from its headers alone, or None."""
        host = headers.get("host", "")
        if self.allowed_hosts is not None and not self.host_allowed(host):
            return 421, (f"This server does not answer to the host name {host_name(host)!r}; open it as "
                         "http://127.0.0.1 or http://localhost, or start it with --allow-host naming that host.")
        if method not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get("origin")
            if origin is not None and not self.origin_allowed(origin, host):
                return 403, "Requests from pages of other sites are refused; use the page this server serves."
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            from_browser = origin is not None or "sec-fetch-site" in headers
            if content_type == "text/plain" or (content_type in SIMPLE_FORM_TYPES and from_browser):
                return 415, (f"A {content_type} body is refused; send the image as multipart field 'file' or "
                             "as a raw body of type image/* or application/octet-stream.")
        return None

    def origin_allowed(self, origin: str, host: str) -> bool:
        """A page of this server: its Origin is the Host it asked, or a name this server was told it is served
        under (a reverse proxy may pass the request on with its own Host, such as 127.0.0.1:8000)."""
        authority = origin.lower().split("://", 1)[-1]
        return authority == host.lower() or host_name(authority) in (self.allowed_hosts or ())

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if name in LOCAL_HOST_NAMES or name in (self.allowed_hosts or ()):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def host_name(host: str) -> str:
    """The name in a Host header, without its port and brackets: "[::1]:8000" → "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def encoded_security_headers() -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


def declared_length(headers: dict[str, str]) -> int:
    """The body length a request's Content-Length declares (0 when it declares none or an unreadable one)."""
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() and len(value) < 19 else 0


async def refuse(send, status: int, detail: str, extra_headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers + encoded_security_headers()})
    await send({"type": "http.response.body", "body": body})


async def unless_client_leaves(receive, work):
    """Await `work`, cancelling it when the client disconnects first (its answer would go nowhere).

    `receive` is the request's ASGI receive, whose body has been read: its next message is the disconnect.
    """
    work = asyncio.ensure_future(work)
    leaving = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({work, leaving}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()  # This request was cancelled (the server is stopping): the work goes with it.
        raise
    finally:
        leaving.cancel()
    if work.done():
        return work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)  # Its worker is stopped before we go on.
    raise ClientDisconnect()


async def wait_for_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def checked_host_names(names: Collection[str]) -> set[str]:
    """The names a server is served under (`allowed_hosts`), lower-case; a DigitsError for one that is not a name."""
    checked = set()
    for name in names:
        lowered = name.strip().lower()
        try:
            ipaddress.ip_address(lowered.removeprefix("[").removesuffix("]"))
            continue  # An IP address is always answered (DNS rebinding needs a name).
        except ValueError:
            pass
        if "*" in lowered:
            raise DigitsError(f"`allowed_hosts` cannot hold the wildcard {name!r}; name each host the server is "
                              "reached under (answering to any name would let a page on any site read it).")
        if not (HOST_NAME.fullmatch(lowered) and len(lowered) <= 253):
            raise DigitsError(f"`allowed_hosts` holds {name!r}, which is not a host name; give a name such as "
                              "digits.example.com, without a scheme, port or path.")
        checked.add(lowered)
    return checked


class RateLimitedLog(logging.Filter):
    """A filter that lets at most `count` records through per `seconds`, and then says how many it held back.

    uvicorn logs a warning for every request that is not HTTP: a client sending garbage in a loop would
    otherwise fill the server's log as fast as it sends.
    """

    def __init__(self, count: int = 10, seconds: float = 60.0):
        super().__init__()
        self.count, self.seconds = count, seconds
        self.window_start, self.written, self.left_out = -float("inf"), 0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.window_start >= self.seconds:
            if self.left_out:
                record.msg = f"({self.left_out:,} more log lines in {self.seconds:g} s were not written.) {record.msg}"
            self.window_start, self.written, self.left_out = now, 0, 0
        if self.written >= self.count:
            self.left_out += 1
            return False
        self.written += 1
        return True


def allowed_hosts_for(host: str, extra_hosts: Collection[str] = ()) -> set[str]:
    """Host names a server listening on `host` answers to, besides localhost and IP addresses, and `extra_hosts`
    (the names a reverse proxy serves it under)."""
    import socket

    names = {host.lower()} | checked_host_names(extra_hosts)
    if host in ("0.0.0.0", "::", ""):  # Every interface: the machine's own names reach it too.
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names
