"""Load test for `digits serve`: many clients post drawn digits on loopback; latency and throughput.

It starts `digits serve` itself (the shipped model unless --model), on a free 127.0.0.1 port, then runs
--clients concurrent clients for --seconds. Each client behaves like a person drawing on the page: it
posts a 140×140 RGBA PNG of a digit (what the page sends), waits for the answer, and posts again
--interval seconds after it last sent (the page's live-prediction rate, 150 ms); --interval 0 posts back
to back to find the ceiling. The server is stopped at the end. The clients run on the same machine and
share its CPU, so they use aiohttp (`pip install -e .[bench]`): about 0.3 ms of CPU per request, where
httpx took about 2 ms.

    .venv/bin/python benchmarks/serve_load.py                     # 50 clients, 30 s, one post per 150 ms each
    .venv/bin/python benchmarks/serve_load.py --interval 0        # as fast as the server answers

Target: 0 errors and p99 latency under 50 ms, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import aiohttp
import numpy as np
import psutil
from PIL import Image

TARGET_P99_MS = 50.0
# Distinct pictures to post, so no answer can be cached anywhere.
PAYLOAD_COUNT = 200
PNG_HEADERS = {"Content-Type": "image/png"}


# The page sends its drawing square at this size (SEND_SIDE in src/digits/serving/static/app.js).
CANVAS_SIDE = 140


def canvas_pngs(count: int) -> list[bytes]:
    """MNIST test digits as the page sends a drawing: dark ink on a white square, an opaque RGBA PNG."""
    from digits.data.mnist import load_mnist

    mnist = load_mnist()
    pngs = []
    for image in mnist.test_images[:count]:
        canvas = Image.fromarray(255 - image).resize((CANVAS_SIDE, CANVAS_SIDE), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        # A browser canvas exports RGBA, which costs the server more to read than greyscale.
        canvas.convert("RGBA").save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


def start_server(model: str | None) -> tuple[subprocess.Popen, str, io.TextIOBase]:
    command = [sys.executable, "-m", "digits", "serve", "--host", "127.0.0.1", "--port", "0"]
    if model:
        command += ["--model", model]
    # The server's log (TensorFlow's start-up chatter included) is shown only if something goes wrong.
    log = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    first_line = server.stdout.readline()
    address = re.search(r"http://127\.0\.0\.1:\d+", first_line)
    if not address:
        server.kill()
        log.seek(0)
        sys.exit(f"serve_load: the server did not start: {first_line!r}\n{log.read()}")
    return server, address.group(), log


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time so far of a process and of its live children (the server's picture-preparing
    workers)."""
    server = psutil.Process(pid)
    own = server.cpu_times()
    children = 0.0
    for child in server.children():
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # The process ended meanwhile.
        children += times.user + times.system
    return own.user + own.system, children


async def one_client(session: aiohttp.ClientSession, url: str, pngs: list[bytes], number: int, clients: int,
                     interval: float, deadline: float, latencies: list[float], errors: list[str]) -> None:
    # Clients start spread over one interval, as people do, not all in the same millisecond.
    await asyncio.sleep(interval * number / clients)
    index = number * 7
    while (sent := time.perf_counter()) < deadline:
        try:
            async with session.post(url, data=pngs[index % len(pngs)], headers=PNG_HEADERS) as response:
                body = await response.read()
                if response.status != 200:
                    errors.append(f"status {response.status}: {body[:100]!r}")
        except (aiohttp.ClientError, TimeoutError) as error:
            errors.append(f"{type(error).__name__}: {error}")
        latencies.append(time.perf_counter() - sent)
        index += 1
        if interval:
            await asyncio.sleep(max(0.0, sent + interval - time.perf_counter()))


async def load(url: str, pngs: list[bytes], clients: int, seconds: float, interval: float):
    latencies: list[float] = []
    errors: list[str] = []
    # One keep-alive connection per client, as each browser tab keeps its own.
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def warm_up(png: bytes) -> None:
            async with session.post(url, data=png, headers=PNG_HEADERS) as response:
                await response.read()

        # Warm up: the first calls trace the model and open the connections.
        await asyncio.gather(*(warm_up(pngs[i]) for i in range(min(clients, len(pngs)))))
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(
            one_client(session, url, pngs, number, clients, interval, deadline, latencies, errors)
            for number in range(clients)
        ))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default: 50)")
    parser.add_argument("--seconds", type=float, default=30, help="how long to load the server (default: 30)")
    parser.add_argument("--interval", type=float, default=0.15,
                        help="seconds between one client's posts, as the page paces them; 0 = back to back "
                        "(default: 0.15)")
    parser.add_argument("--model", help="a run folder or .keras file (default: the shipped model)")
    args = parser.parse_args()

    pngs = canvas_pngs(PAYLOAD_COUNT)
    server, base_url, log = start_server(args.model)
    try:
        server_cpu_before, client_cpu_before = cpu_seconds(server.pid), time.process_time()
        latencies, errors, elapsed = asyncio.run(
            load(base_url + "/predict", pngs, args.clients, args.seconds, args.interval)
        )
        server_cpu_after = cpu_seconds(server.pid)
        server_cpu, workers_cpu = (after - before
                                   for after, before in zip(server_cpu_after, server_cpu_before, strict=True))
        client_cpu = time.process_time() - client_cpu_before
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()

    milliseconds = np.array(latencies) * 1000
    p50, p95, p99 = np.percentile(milliseconds, [50, 95, 99])
    pacing = f"one post per {args.interval * 1000:.0f} ms each" if args.interval else "back to back"
    print(f"digits serve on {base_url}: {args.clients} clients ({pacing}) for {elapsed:.1f} s, {os.cpu_count()} CPUs")
    print(f"requests     {len(latencies)}")
    print(f"errors       {len(errors)}" + (f"  (first: {errors[0]})" if errors else ""))
    print(f"throughput   {len(latencies) / elapsed:.0f} requests/s")
    print(f"latency      p50 {p50:.1f} ms   p95 {p95:.1f} ms   p99 {p99:.1f} ms   max {milliseconds.max():.1f} ms")
    per_request = 1000 / len(latencies)
    print(f"CPU          server {(server_cpu + workers_cpu) * per_request:.2f} ms "
          f"({server_cpu * per_request:.2f} ms in its "
          f"event loop and inference, {workers_cpu * per_request:.2f} ms preparing pictures in worker processes), "
          f"this client {client_cpu * per_request:.2f} ms per request; load average {os.getloadavg()[0]:.1f}")
    if errors:
        log.seek(0)
        print("server log, last lines:\n" + "".join(log.readlines()[-15:]))
    met = not errors and p99 < TARGET_P99_MS
    print(f"target       0 errors, p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
