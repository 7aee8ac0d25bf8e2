"""The connections of `digits serve` below the application: its listening socket, uvicorn's httptools protocol
with the limits httptools lacks, and a rate limit on uvicorn's own log.

`LimitedListener` caps the connections each client, and all clients together, hold open, as each is accepted.
`LimitedHttpToolsProtocol` holds each request's line and headers to `limits.MAX_HEADER_BYTES` and
`limits.HEADER_SECONDS` before the application sees the request, and answers bytes that are not HTTP in the API's
shape. `digits.serving.process` hands both to uvicorn. The limits themselves are in `digits.serving.limits`.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import resource
import socket
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digits.serving.limits import (
    BUSY_HEADERS,
    CLIENT_CONNECTIONS,
    CONNECTION_FILE_RESERVE,
    HEADER_SECONDS,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    SECURITY_HEADERS,
    client_key,
)

CLIENT_CONNECTIONS_SENTENCE = (f"Your address already holds {CLIENT_CONNECTIONS} open connections to this server; "
                               "close some, or wait for their answers, and connect again.")
SERVER_CONNECTIONS_SENTENCE = ("The server holds as many open connections as it accepts; connect again in a "
                               "moment.")
# A refused connection is accepted, answered and closed within one call to `accept`, at most this many in a row:
# then the event loop gets its turn (the rest of a flood waits in the kernel's queue for the next one).
REFUSALS_PER_ACCEPT = 64
# What a refused client has already sent is read (and dropped) once before closing: closing a socket with unread
# bytes resets the connection, and the client would lose the answer.
DROPPED_BYTES = bytearray(64 * 1024)


class LimitedListener(socket.socket):
    """The listening socket of `digits serve`, which refuses a connection as it is accepted when its client already
    holds `client_connections` open ones (429) or the server `max_connections` (503).

    The refusal is one answer written and the socket closed, within `accept` itself: asyncio never builds a
    transport for it, nor uvicorn a protocol and a parser, which is what made a flood of connections stall
    everyone else's requests. The connections it hands out (`CountedConnection`) give their place back when closed.
    `max_connections` defaults to MAX_CONNECTIONS, or fewer when the process may open fewer files.
    """

    def __init__(self, family: int, kind: int, protocol: int, client_connections: int = CLIENT_CONNECTIONS,
                 max_connections: int | None = None):
        super().__init__(family, kind, protocol)
        self.client_connections = client_connections
        self.max_connections = connections_the_process_can_hold() if max_connections is None else max_connections
        self.open_connections = 0
        self.open_by_client: dict[str, int] = {}  # Only clients holding a connection, so it is as long as they are.

    def accept(self) -> tuple[socket.socket, object]:
        for _ in range(REFUSALS_PER_ACCEPT):
            descriptor, address = self._accept()  # type: ignore[attr-defined]
            connection = CountedConnection(self.family, self.type, self.proto, fileno=descriptor)
            client = client_key(address[0] if isinstance(address, tuple) else "")
            if self.open_by_client.get(client, 0) >= self.client_connections:
                refuse_connection(connection, 429, CLIENT_CONNECTIONS_SENTENCE)
            elif self.open_connections >= self.max_connections:
                refuse_connection(connection, 503, SERVER_CONNECTIONS_SENTENCE)
            else:
                self.open_connections += 1
                self.open_by_client[client] = self.open_by_client.get(client, 0) + 1
                connection.listener, connection.client = self, client
                if socket.getdefaulttimeout() is None and self.gettimeout():
                    connection.setblocking(True)  # As socket.accept does.
                return connection, address
        raise BlockingIOError(errno.EAGAIN, "refused connections; the rest are accepted at the next turn")

    def give_place_back(self, client: str) -> None:
        self.open_connections -= 1
        left = self.open_by_client.get(client, 0) - 1
        if left > 0:
            self.open_by_client[client] = left
        else:
            self.open_by_client.pop(client, None)


class CountedConnection(socket.socket):
    """An accepted connection that gives its place back to its `LimitedListener` once, when it is closed."""

    listener: LimitedListener | None = None
    client = ""

    def give_place_back(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.give_place_back(self.client)

    def close(self) -> None:
        self.give_place_back()
        super().close()

    def detach(self) -> int:
        self.give_place_back()
        return super().detach()

    def __del__(self) -> None:
        self.give_place_back()  # A connection dropped without close() (an error while asyncio set it up).
        super().__del__()  # type: ignore[misc]


def connections_the_process_can_hold() -> int:
    """MAX_CONNECTIONS, or fewer when the process may not open that many files: running out of them makes asyncio
    stop accepting connections for a second (everyone's, /health's too)."""
    files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, files - CONNECTION_FILE_RESERVE))


def refuse_connection(connection: socket.socket, status: int, detail: str) -> None:
    """Answer a connection just accepted in one sentence, and close it, without reading its request."""
    connection.setblocking(False)
    try:
        connection.send(http_answer(status, detail, retry_later=True))
        connection.recv_into(DROPPED_BYTES)
    except OSError:
        pass  # Nothing has arrived yet, or the client has gone: closing is all that is left.
    connection.close()


@functools.cache  # A few sentences, each sent to every connection a flood opens.
def http_answer(status: int, detail: str, retry_later: bool = False) -> bytes:
    """A whole HTTP/1.1 answer in the API's shape, `{"detail": detail}`, that closes the connection, with the security
    headers, and `Retry-After: 5` when `retry_later`."""
    extra_headers = BUSY_HEADERS if retry_later else {"connection": "close"}
    reason = {400: b"Bad Request", 408: b"Request Timeout", 429: b"Too Many Requests",
              431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}[status]
    body = json.dumps({"detail": detail}).encode()
    head = [b"HTTP/1.1 %d %s" % (status, reason), b"content-type: application/json",
            b"content-length: %d" % len(body)]
    head += [name.encode() + b": " + value.encode() for name, value in {**extra_headers, **SECURITY_HEADERS}.items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


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
        room = MAX_HEADER_BYTES - self.head_bytes
        if len(data) <= room:
            return False  # Under the limit wherever the head ends.
        if (self.head_tail + data[:min(3, room)]).find(b"\r\n\r\n") >= 0:
            return False  # The blank line began in the previous chunk and ends within the limit.
        # Only the bytes that fit are searched, in place: a 67 KB head costs no more than a 16 KB one.
        return data.find(b"\r\n\r\n", 0, room) < 0

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
        self.transport.write(http_answer(status, detail))
        # Closing with unread data would reset the connection and lose the answer on the way: the rest of the
        # request is read and dropped for a second, after the answer and the end of it are sent.
        self.refused = True
        self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)


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
