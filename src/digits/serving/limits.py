"""What a request to `digits serve` may cost, and who may send one: the server's limits in one place.

Three layers, so that no client can make the server hold more than a bounded amount of memory or keep others waiting:

- `digits.serving.protocol.LimitedListener`, the listening socket: a cap on the connections one client, and all
  clients together, hold open, applied as each is accepted, before anything is built for it;
- `digits.serving.protocol.LimitedHttpToolsProtocol`, uvicorn's fast HTTP parser with a cap on the request line
  and headers and a deadline for receiving them (httptools has neither, so a client could send headers without end);
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
import re
import time
from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

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

# Open connections one client (an IPv4 address, or an IPv6 /64 network, as for CLIENT_UPLOAD_BYTES) may hold. A
# browser opens at most 6 to one server; 64 leaves room for a few people behind one NAT address. Beyond it a new
# connection is answered 429 and closed as it is accepted, before a transport and a parser are built for it: 1,000
# connections arriving at once from one client used to cost the event loop a few hundred milliseconds.
CLIENT_CONNECTIONS = 64
# Open connections of all clients together; beyond it a new one is answered 503 and closed in the same way. Each costs
# up to 16 KB of headers and 64 KB of body before the app reads it (about 160 MB for all of them). Fewer when the
# process may not open that many files: CONNECTION_FILE_RESERVE of them stay for the model, the workers and the log.
MAX_CONNECTIONS = 2048
CONNECTION_FILE_RESERVE = 128

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


EMPTY_UPLOAD_SENTENCE = "The upload is empty; send the bytes of an image file (PNG, JPEG, ...)."


def upload_too_large(limit: int) -> HTTPException:
    """The 413 for a body over `limit` bytes (the endpoint's limit, `digits.serving.app.MAX_UPLOAD_BYTES`), which
    closes the connection: the rest of the body is not read."""
    return HTTPException(413, f"The upload is larger than {limit:,} bytes; send a smaller image (a photo scaled down "
                         "is enough).", headers={"connection": "close"})


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
    return client_key((scope.get("client") or ("",))[0] or "")


def client_key(address: str) -> str:
    """The client an address belongs to: itself for IPv4 (an IPv4-mapped IPv6 address is its IPv4 one), its /64
    network for IPv6; anything else (a Unix socket's path) as it is."""
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


def allowed_hosts_for(host: str, extra_hosts: Collection[str] = ()) -> set[str]:
    """Host names a server listening on `host` answers to, besides localhost and IP addresses, and `extra_hosts`
    (the names a reverse proxy serves it under)."""
    import socket

    names = {host.lower()} | checked_host_names(extra_hosts)
    if host in ("0.0.0.0", "::", ""):  # Every interface: the machine's own names reach it too.
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names
