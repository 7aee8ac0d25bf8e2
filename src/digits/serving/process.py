"""Running `digits serve`: bind the port, load the model once, and hand the app to uvicorn until Ctrl+C.

`digits.serving.app` builds the web application; this module owns the process around it: the listening socket
(with one-sentence errors for a busy or invalid address), TensorFlow's threads, and uvicorn.
"""

from __future__ import annotations

import errno
import gc
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import uvicorn

from digits.data.mnist import IMAGE_SIDE
from digits.errors import DigitsError
from digits.serving import limits
from digits.serving.app import create_app
from digits.serving.protocol import LimitedHttpToolsProtocol, LimitedListener, RateLimitedLog


def serve(model: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          allowed_hosts: Collection[str] = ()) -> None:
    """Load the model once, then answer on http://host:port/ until Ctrl+C or SIGTERM (which stop it within 10 s).

    `allowed_hosts`: names the server is reached under besides localhost, IP addresses and `host`, as behind
    a reverse proxy (docs/security.md): requests naming them (Host) and pages under them (Origin) are answered.
    """
    from digits.inference.classifier import load_classifier, runs_on_onnx

    host_names = limits.allowed_hosts_for(host, allowed_hosts)  # A name that is none is refused before anything.
    # Bind first, so a busy port is reported before the model takes seconds to load.
    listener = open_listener(host, port)
    app = None
    try:
        if not is_loopback(host):
            print(
                f"digits: warning: listening on {host} makes the page and the API reachable from other "
                "machines, with no authentication; use --host 127.0.0.1 to keep them local.",
                file=sys.stderr,
            )
        if not runs_on_onnx(model):  # ONNX Runtime's threads are set on its session; TensorFlow's globally.
            use_one_thread_per_inference()
        classifier = load_classifier(model, threads=1)
        # The first call builds the classifier's reader (a Keras model is traced into a graph, about 0.1 s): made
        # now, on a blank picture, so that the first visitor does not wait for it.
        classifier.classify(np.zeros((1, IMAGE_SIDE, IMAGE_SIDE), np.uint8))
        app = create_app(classifier, allowed_hosts=host_names)
        # The picture-preparing workers get ready (about half a second each) while uvicorn starts; a picture
        # that arrives before them waits for the first one that is. Started here, not first: on 2 cores, workers
        # importing beside this process slowed it more than they gained (docs/inference.md has the figures).
        app.state.preparer.start(wait=False)
        url_host = f"[{host}]" if ":" in host else host
        print(f"Serving model {classifier.name} ({classifier.runtime}) "
              f"at http://{url_host}:{listener.getsockname()[1]}/ "
              "(press Ctrl+C to stop).", flush=True)
        # Browsers keep idle connections for minutes; closing them after uvicorn's default 5 s races with
        # the page's next request on the same connection.
        # The app has no start-up or shut-down hooks; uvicorn's lifespan task only logs a spurious
        # CancelledError traceback when Ctrl+C stops it.
        # The protocol is uvicorn's httptools one with a limit on each request's headers (digits.serving.limits).
        # On SIGTERM or Ctrl+C: new work gets 503, what is being answered gets STOP_SECONDS, and then it stops.
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=75, lifespan="off",
                                http=LimitedHttpToolsProtocol, timeout_graceful_shutdown=limits.STOP_SECONDS)
        server = StoppingServer(config, app.state.begin_stopping)
        logging.getLogger("uvicorn.error").addFilter(RateLimitedLog())  # After uvicorn configured it.
        # What is loaded by now (the model, the libraries: 80,000 objects with ONNX Runtime, more with TensorFlow)
        # lives as long as the server: frozen, the garbage collector's full passes skip it. Each walked it all,
        # 70-300 ms of a stalled event loop on two busy cores, every few seconds under a flood of connections.
        gc.collect()
        gc.freeze()
        try:
            server.run(sockets=[listener])
        except KeyboardInterrupt:
            # uvicorn has already shut down cleanly and re-raises the signal it caught: Ctrl+C, or SIGTERM,
            # which `digits.cli` turns into the same KeyboardInterrupt.
            pass
        print("Stopped.")
    finally:
        listener.close()
        if app is not None:
            app.state.preparer.close()


class StoppingServer(uvicorn.Server):
    """uvicorn's server, which tells the application when it begins to stop (before waiting for its requests)."""

    def __init__(self, config: uvicorn.Config, begin_stopping: Callable[[], None]):
        super().__init__(config)
        self.begin_stopping = begin_stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.begin_stopping()
        await super().shutdown(sockets)


def use_one_thread_per_inference() -> None:
    """Run inference on one core; the event loop, preparing the next pictures meanwhile, uses the others.

    Splitting a few 28×28 pictures over several threads costs more CPU than it saves: on 2 cores one
    thread took about half the CPU time per call of TensorFlow's default pool. It must happen before
    TensorFlow starts.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this process (an embedding program); its settings stay.


def open_listener(host: str, port: int) -> LimitedListener:
    """A socket bound to host:port, or a DigitsError in one sentence when that is impossible."""
    if not 0 <= port <= 65535:
        raise DigitsError(f"Port {port} is not a valid port number; choose one between 1 and 65535.")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise DigitsError(
            f"Cannot listen on host {host!r} because the name does not resolve; use an address such as 127.0.0.1."
        ) from error
    # Naming the protocol (TCP) matters: only then does asyncio set TCP_NODELAY on each connection; without
    # it, a response's headers and body meet Nagle's algorithm and every keep-alive request waits 40 ms.
    # The listener caps the connections each client holds open, and all of them (limits.CLIENT_CONNECTIONS).
    listener = LimitedListener(family, kind, protocol)
    # Lets a restarted server reuse the port at once; a port another program listens on is still refused.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise DigitsError(
                f"Port {port} on {host} is already in use; stop the program using it or choose another `port`."
            ) from error
        raise DigitsError(
            f"Cannot listen on {host} port {port} ({error.strerror}); choose another `host` or `port`."
        ) from error
    # Listening now queues the connections of a client that reads the printed address at once; until
    # uvicorn starts serving they would be refused.
    listener.listen(2048)
    return listener


def is_loopback(host: str) -> bool:
    """True when every address `host` names is on this machine only."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)
