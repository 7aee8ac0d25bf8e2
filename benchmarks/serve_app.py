"""The event loop's share of a drawing, in this process: batches waiting for pictures being prepared; the drawing route.

Two apps of `digits serve` (the shipped ONNX model) are driven through ASGI, without HTTP, by --clients concurrent
clients posting the page drawings of `benchmarks/serve_load.py` back to back, in turns, --rounds times; each prints
this process's CPU a drawing (the event loop, and inference: ONNX Runtime runs on the event loop), the workers', and
the inference calls a request. No sockets and no other clients, so the figures are steadier than serve_load.py's.

--compare gather: real worker processes; one app's batches wait up to `digits.serving.batching.GATHER_SECONDS` for
the views of pictures being prepared, the other's are classified at once (as before).
--compare route: the drawing answered by `digits.serving.drawing_route.DrawingRoute`, or by FastAPI's /predict (as
before); preparation and inference are replaced by their answers computed beforehand, so only the app's own work
counts.

    .venv/bin/python benchmarks/serve_app.py                      # --compare gather, 8 clients, 3 rounds of 400
    .venv/bin/python benchmarks/serve_app.py --compare route
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))  # The load test's drawings.


async def post(app, body: bytes) -> None:
    """One POST /predict of a drawing through the app, as uvicorn would call it; the answer must be 200."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {},
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"image/x-portable-graymap"),
                         (b"content-length", str(len(body)).encode())]}
    body_sent, never = False, asyncio.Event()
    answers = []

    async def receive():
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # The client stays until it is answered.
        return {"type": "http.disconnect"}

    async def send(message):
        answers.append(message)

    await app(scope, receive, send)
    if answers[0]["status"] != 200:
        raise RuntimeError(f"the app answered {answers[0]['status']}: {answers[1].get('body', b'')[:200]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--drawings", type=int, default=400, help="drawings a round (default: 400)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, in turns (default: 3)")
    parser.add_argument("--compare", choices=["gather", "route"], default="gather",
                        help="gather: batches that wait for pictures being prepared, or not (default); route: the "
                        "drawing route, or FastAPI's /predict")
    args = parser.parse_args()

    from digits.inference.classifier import load_classifier
    from digits.pictures.drawing import drawing_image, drawing_size
    from digits.pictures.segment import find_digits
    from digits.serving import app as app_module
    from digits.serving.batching import GATHER_SECONDS, BatchClassifier
    from digits.serving.drawing_route import DrawingRoute
    from digits.serving.workers import PicturePreparer
    from serve_load import PAYLOAD_COUNT, encode, page_drawings

    classifier = load_classifier(None, threads=1)
    calls = 0
    classify = classifier.classify
    bodies = [encode(drawing, "pgm") for drawing in page_drawings(PAYLOAD_COUNT)]
    answers: dict[bytes, object] = {}
    if args.compare == "route":
        # Each drawing's layout and each batch's predictions, computed once: only the app's own work is left.
        layouts = {body: find_digits(drawing_image(body, drawing_size(body))) for body in bodies}

        async def prepared(self, data, name, drawing=None):
            return layouts[data]

        PicturePreparer.__call__ = prepared  # type: ignore[method-assign]

    def counted_classify(views):
        nonlocal calls
        calls += 1
        if args.compare == "gather":
            return classify(views)
        key = views.tobytes()
        if key not in answers:
            answers[key] = classify(views)
        return answers[key]

    classifier.classify = counted_classify  # type: ignore[method-assign]
    apps = {}
    if args.compare == "gather":
        for mode, seconds in ((f"waits up to {GATHER_SECONDS * 1000:g} ms", GATHER_SECONDS), ("at once", 0.0)):
            class Batches(BatchClassifier):
                def __init__(self, *positional, seconds=seconds, **named):
                    super().__init__(*positional, gather_seconds=seconds, **named)

            app_module.BatchClassifier = Batches  # type: ignore[misc]
            apps[f"batch {mode}"] = app_module.create_app(classifier, allowed_hosts=set())
            apps[f"batch {mode}"].state.preparer.start(wait=True)
    else:
        apps["DrawingRoute"] = app_module.create_app(classifier, allowed_hosts=set())
        without_route = apps["FastAPI's /predict"] = app_module.create_app(classifier, allowed_hosts=set())
        # Without the route (its middleware stack is built at the first request), /predict reads the drawing.
        without_route.user_middleware = [middleware for middleware in without_route.user_middleware
                                         if middleware.cls is not DrawingRoute]

    def workers_cpu(app) -> float:
        total = 0.0
        for worker in app.state.preparer.workers:
            times = psutil.Process(worker.process.pid).cpu_times()
            total += times.user + times.system
        return total

    async def load(app, count: int) -> None:
        left = list(range(count))

        async def client():
            while left:
                await post(app, bodies[left.pop() % len(bodies)])

        await asyncio.gather(*(client() for _ in range(args.clients)))

    async def measure() -> None:
        nonlocal calls
        for app in apps.values():
            await load(app, 100)  # Warm up.
        print(f"{args.clients} clients, {args.drawings} page drawings a round, {os.cpu_count()} CPUs")
        for round_number in range(1, args.rounds + 1):
            for mode, app in apps.items():
                calls, own, workers = 0, time.process_time(), workers_cpu(app)
                await load(app, args.drawings)
                own_ms = (time.process_time() - own) * 1000 / args.drawings
                workers_ms = (workers_cpu(app) - workers) * 1000 / args.drawings
                print(f"round {round_number}, {mode:24} event loop and inference {own_ms:.3f} ms a drawing, "
                      f"workers {workers_ms:.3f} ms, {calls / args.drawings:.2f} inference calls a request; "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
        for app in apps.values():
            if app.state.preparer.started:
                app.state.preparer.close()

    asyncio.run(measure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
