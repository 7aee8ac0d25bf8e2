"""Issue 24's /health goal: the connections one client, and all clients, may hold open are capped as each is
accepted, so a flood of them cannot stall everyone else's requests (digits.serving.protocol.LimitedListener)."""

import contextlib
import json
import socket

import pytest

from digits.inference.classifier import load_classifier
from digits.serving import limits
from digits.serving.app import create_app
from digits.serving.protocol import LimitedListener
from test_serve_hardening import exchange, head_and_detail, read_answer, running_server

HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def server():
    """A real server on a free 127.0.0.1 port, as `digits serve` runs it (its listener is `open_listener`'s)."""
    with running_server(create_app(load_classifier())) as port:
        yield port


def connection_from(address: str, port: int) -> socket.socket:
    """A connection from `address` (any of 127/8 is this machine): each address is another client."""
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))


def test_a_client_past_its_open_connections_is_refused_as_it_connects_while_others_are_served(server):
    # A flood from one address: the connections it may hold, sending nothing (the server waits for their heads).
    held = [connection_from("127.0.0.4", server) for _ in range(limits.CLIENT_CONNECTIONS)]
    try:
        # One more from that address is answered at once, before it sends a byte, and closed.
        with connection_from("127.0.0.4", server) as refused:
            status, headers, detail = head_and_detail(read_answer(refused))
        assert status == 429 and headers["connection"] == "close" and headers["retry-after"] == "5"
        assert f"already holds {limits.CLIENT_CONNECTIONS} open connections" in detail
        assert headers["x-frame-options"] == "DENY"  # The security headers, as on every answer.
        # Another client is served meanwhile.
        assert exchange(server, HEALTH).startswith(b"HTTP/1.1 200")
        # A connection of the flood that is answered and closed gives its place back to its client.
        held[0].sendall(HEALTH)
        assert read_answer(held.pop(0)).startswith(b"HTTP/1.1 200")
        with connection_from("127.0.0.4", server) as again:
            again.sendall(HEALTH)
            answer = read_answer(again)
        assert answer.startswith(b"HTTP/1.1 200") and json.loads(answer.partition(b"\r\n\r\n")[2])["status"] == "ok"
    finally:
        for connection in held:
            connection.close()


def test_past_the_servers_open_connections_every_client_is_refused_until_one_closes():
    listener = LimitedListener(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, max_connections=2)
    with contextlib.ExitStack() as stack:
        stack.callback(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        clients = [stack.enter_context(connection_from(f"127.0.0.{number}", port)) for number in (5, 6, 7)]
        first, _ = listener.accept()
        second, _ = listener.accept()
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # The third client was answered and closed; nothing is left to accept.
        status, _, detail = head_and_detail(read_answer(clients[2]))
        assert status == 503 and "as many open connections as it accepts" in detail
        first.close()
        fourth = stack.enter_context(connection_from("127.0.0.8", port))
        listener.setblocking(True)
        accepted, address = listener.accept()  # Served: the first one's place was given back.
        stack.callback(accepted.close)
        stack.callback(second.close)
        assert address[0] == "127.0.0.8" and listener.open_connections == 2
        fourth.sendall(b"hello")
        assert accepted.recv(5) == b"hello"
