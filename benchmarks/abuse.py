"""The attacks of issue 15 against a real `digits serve` on loopback, and what each costs the server.

It starts `digits serve` itself (the shipped model) on a free 127.0.0.1 port and runs each attack for a
bounded time (--seconds, 8 s by default) with a few attacking connections, from a process of its own. Meanwhile
this process asks GET /health every 100 ms and posts one legitimate drawn digit, and it samples the memory of
the server and of its worker processes every 50 ms. It prints one row per attack: the peak memory (the server
process, and with its workers), /health latency (median and worst) during the attack, and the status and time
of the legitimate request. The server is stopped at the end. Nothing leaves this machine: every connection goes
to 127.0.0.1.

The attackers have their own process, as they would have their own machine: 1,000 attacking connections on an
event loop in the process that times /health held its interpreter lock for hundreds of milliseconds, and the
client's wait was counted as the server's.

    .venv/bin/python benchmarks/abuse.py                  # all attacks, about 2 minutes
    .venv/bin/python benchmarks/abuse.py --only headers   # one of them
    .venv/bin/python benchmarks/abuse.py --stop           # SIGTERM with 30 slow pictures in flight (issue 24)
    .venv/bin/python benchmarks/abuse.py --loop-steps     # and the longest step of the server's event loop

Targets (issues 15 and 24): /health answers within 100 ms under every attack, the server process stays under
600 MB (its workers have limits of their own), the legitimate request is answered (200) within the preparation
time limit, and memory stays within the bounds in docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import hostile_files  # The same hostile pictures the tests send.

HEALTH_TARGET_MS = 100.0
SERVER_MEMORY_TARGET_MB = 600.0  # The server process alone; each worker is held to its own limit.
HOST = "127.0.0.1"
LEGITIMATE_HOST = "127.0.0.3"  # Where the legitimate requests and /health come from (all of 127/8 is this machine).


# --- measuring the server ------------------------------------------------------------------------------


def resident_bytes(pid: int) -> int:
    """The resident memory of a process, 0 once it has ended."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def children_of(parent: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.NoSuchProcess:
        return []


class MemorySampler(threading.Thread):
    """The peak resident memory of a process (`server_peak`), and of it and its children (`peak`), every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.server_peak, self.running = pid, 0, 0, True
        self.children: list[int] = []

    def run(self) -> None:
        last_scan = 0.0
        while self.running:
            if time.monotonic() - last_scan > 1.0:  # Workers are replaced when killed: look for new ones.
                self.children, last_scan = children_of(self.pid), time.monotonic()
            server = resident_bytes(self.pid)
            total = server + sum(resident_bytes(child) for child in self.children)
            self.peak, self.server_peak = max(self.peak, total), max(self.server_peak, server)
            time.sleep(0.05)

    def reset(self) -> None:
        self.peak = self.server_peak = 0


# --- a minimal HTTP client on asyncio streams, so attacks and checks share one event loop -----------------


async def request(port: int, method: str, path: str, body: bytes = b"", content_type: str = "image/png",
                  timeout: float = 30.0) -> tuple[int, float]:
    """Send one request on a new connection; its status (0: no answer) and how long it took."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(HOST, port)
            head = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            writer.write(head + body)
            await writer.drain()
            status_line = await reader.readline()
            await reader.read()
            writer.close()
        status = int(status_line.split()[1]) if status_line else 0
    except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError):
        status = 0
    return status, time.perf_counter() - started


def timed_request(port: int, method: str, path: str, body: bytes = b"", timeout: float = 30.0) -> tuple[int, float]:
    """One request on a new connection, from a plain thread: its status (0: no answer) and its seconds."""
    started = time.perf_counter()
    # From another address than the attackers' 127.0.0.1: the server gives each client its own share of uploads.
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(LEGITIMATE_HOST, 0))
    try:
        connection.request(method, path, body=body or None, headers={"Content-Type": "image/png"} if body else {})
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        status = 0
    finally:
        connection.close()
    return status, time.perf_counter() - started


def watch_health(port: int, until: float, latencies: list[float]) -> None:
    """GET /health every 100 ms, in its own thread, so the attackers' event loop does not delay it."""
    while time.monotonic() < until:
        status, seconds = timed_request(port, "GET", "/health", timeout=10)
        latencies.append(seconds * 1000 if status == 200 else float("inf"))
        time.sleep(0.1)


# --- the attacks ------------------------------------------------------------------------------------------


async def post_repeatedly(port: int, picture: bytes, until: float, content_type: str) -> None:
    while time.monotonic() < until:
        await request(port, "POST", "/predict", picture, content_type, timeout=max(1.0, until - time.monotonic()))


async def huge_headers(port: int, until: float) -> None:
    """Send 100 MB of small headers on one connection, as fast as the server reads them."""
    try:
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n".encode())
        filler = b"X-Filler: aaaaaaaaaaaaaaaa\r\n" * 4096
        sent = 0
        while sent < 100 * 2**20 and time.monotonic() < until and not writer.is_closing():
            writer.write(filler)
            sent += len(filler)
            await asyncio.wait_for(writer.drain(), max(0.1, until - time.monotonic()))
        writer.close()
    except (OSError, TimeoutError):
        pass  # The server closed the connection: what it should do.


async def stalled_body(port: int, until: float) -> None:
    """Announce 9.9 MB, send it all but the last byte, then stall until the attack ends."""
    size = 9_900_000
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        chunk = bytes(2**20)
        for start in range(0, size - 1, len(chunk)):
            writer.write(chunk[: min(len(chunk), size - 1 - start)])
            await asyncio.wait_for(writer.drain(), max(0.1, until - time.monotonic()))
        await asyncio.wait_for(reader.read(), max(0.1, until - time.monotonic()))
        writer.close()
    except (OSError, TimeoutError):
        pass


async def slow_headers(port: int, until: float) -> None:
    """Slow loris: one header byte per second."""
    try:
        _, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /health HTTP/1.1\r\n")
        while time.monotonic() < until and not writer.is_closing():
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(1.0)
        writer.close()
    except (OSError, TimeoutError):
        pass


def picture_attack(make, content_type: str, connections: int = 2):
    def attack(port: int, until: float) -> list:
        picture = make()
        return [post_repeatedly(port, picture, until, content_type) for _ in range(connections)]
    return attack


ATTACKS = {
    "none": ("no attack (the reference)", lambda port, until: []),
    "ico": ("an ICO holding a 13000×13000 PNG, 2 connections", picture_attack(
        lambda: hostile_files.ico_holding_png(13_000), "image/x-icon")),
    "chunks": ("a PNG of 790,000 tiny chunks (9.5 MB), 2 connections", picture_attack(
        lambda: hostile_files.png_with_many_chunks(790_000), "image/png")),
    "strips": ("a TIFF of 1,000,000 strips (9 MB), 2 connections", picture_attack(
        lambda: hostile_files.tiff_with_many_strips(1_000_000), "image/tiff")),
    "scans": ("a progressive JPEG of 20,000 scans, 2 connections", picture_attack(
        lambda: hostile_files.progressive_jpeg(4000, 20_000), "image/jpeg")),
    "nan": ("a float TIFF holding NaN, 2 connections", picture_attack(hostile_files.float_tiff_with_nan, "image/tiff")),
    "headers": ("100 MB of small headers, 4 connections",
                lambda port, until: [huge_headers(port, until) for _ in range(4)]),
    "stalled": ("9.9 MB bodies that stall, 100 connections",
                lambda port, until: [stalled_body(port, until) for _ in range(100)]),
    "slowloris": ("headers at 1 byte/s, 200 connections",
                  lambda port, until: [slow_headers(port, until) for _ in range(200)]),
}


async def attack_for(port: int, name: str, seconds: float) -> None:
    """Run one attack for `seconds` (in the attackers' process): build its hostile file, say so, then attack."""
    coroutines = ATTACKS[name][1](port, time.monotonic() + seconds)  # Builds the hostile file first.
    print("attacking", flush=True)
    await asyncio.gather(*coroutines, return_exceptions=True)


def run_attack(port: int, name: str, seconds: float, sampler: MemorySampler, legit: bytes,
               loop_steps: list[tuple[float, float, float]] | None = None) -> dict:
    """One attack from a process of its own, while this one times /health and sends a legitimate drawing."""
    attackers = subprocess.Popen([sys.executable, __file__, "--attack", name, "--port", str(port),
                                  "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        attackers.stdout.readline()  # "attacking": its hostile file is built.
        sampler.reset()
        started = time.monotonic()
        until = started + seconds
        health: list[float] = []
        watcher = threading.Thread(target=watch_health, args=(port, until, health))
        watcher.start()
        time.sleep(1.0)  # The attack is under way; now a person sends a drawing.
        legit_status, legit_seconds = timed_request(port, "POST", "/predict", legit, seconds + 10)
        watcher.join()
        with contextlib.suppress(subprocess.TimeoutExpired):
            attackers.wait(timeout=5)  # Its connections end with the attack; a few may still wait for an answer.
    finally:
        attackers.kill()
        attackers.wait()
    time.sleep(0.5)
    return {"name": name, "description": ATTACKS[name][0], "peak_mb": sampler.peak / 2**20,
            "server_peak_mb": sampler.server_peak / 2**20,
            "health_p50": statistics.median(health) if health else float("inf"),
            "health_max": max(health) if health else float("inf"),
            "legit": f"{legit_status} in {legit_seconds:.2f} s",
            "loop_step": longest_step(loop_steps, started, until) if loop_steps is not None else None}


def start_server(loop_steps: list[tuple[float, float, float]] | None = None) -> tuple[subprocess.Popen, int]:
    """`digits serve` on a free port; with `loop_steps`, through benchmarks/loop_steps.py, whose (end, CPU ms,
    clock ms) of each long event-loop step a thread appends to that list."""
    command = ["-m", "digits"] if loop_steps is None else [str(Path(__file__).with_name("loop_steps.py"))]
    server = subprocess.Popen([sys.executable, *command, "serve", "--host", HOST, "--port", "0"],
                              stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.DEVNULL if loop_steps is None else subprocess.PIPE)
    address = re.search(r"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
    if not address:
        server.kill()
        raise SystemExit("digits serve did not start")
    if loop_steps is not None:
        def read_steps() -> None:
            for line in server.stderr:
                if line.startswith("loop-step "):
                    cpu_ms, wall_ms, end = map(float, line.split()[1:])
                    loop_steps.append((end, cpu_ms, wall_ms))
        threading.Thread(target=read_steps, daemon=True).start()
    return server, int(address.group(1))


def longest_step(loop_steps: list[tuple[float, float, float]], start: float, end: float) -> str:
    """The longest loop steps that ended between `start` and `end`: in CPU time, and on the clock."""
    steps = [(cpu_ms, wall_ms) for ended, cpu_ms, wall_ms in loop_steps if start <= ended <= end]
    if not steps:
        return "none over 10 ms"
    return f"{max(cpu for cpu, _ in steps):.0f} ms CPU, {max(wall for _, wall in steps):.0f} ms clock"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each attack lasts (default: 8)")
    parser.add_argument("--only", choices=sorted(ATTACKS), action="append", help="run only these attacks")
    parser.add_argument("--loop-steps", action="store_true",
                        help="also report each attack's longest event-loop step (benchmarks/loop_steps.py)")
    parser.add_argument("--attack", choices=sorted(ATTACKS), help=argparse.SUPPRESS)  # In the attackers' process.
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        asyncio.run(attack_for(args.port, args.attack, args.seconds))
        return

    from conftest import draw_digit_png  # The tests' drawn digit: what the page sends.
    from digits.serving import limits, preparation_worker, workers

    legit = draw_digit_png(7)
    loop_steps: list[tuple[float, float, float]] | None = [] if args.loop_steps else None
    server, port = start_server(loop_steps)
    sampler = MemorySampler(server.pid)
    sampler.start()
    rows = []
    try:
        time.sleep(1.0)
        idle_mb = sampler.peak / 2**20
        for name in args.only or list(ATTACKS):
            rows.append(run_attack(port, name, args.seconds, sampler, legit, loop_steps))
            print(f"  {name} done", file=sys.stderr, flush=True)
    finally:
        sampler.running = False
        server.terminate()
        server.wait(timeout=30)

    print(f"digits serve on {HOST}:{port}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"each attack {args.seconds:g} s; idle memory {idle_mb:.0f} MB (server + workers)")
    print(f"limits: preparation {workers.PREPARATION_SECONDS:g} s per picture, worker memory +"
          f"{preparation_worker.WORKER_MEMORY_BYTES / 2**20:.0f} MB, headers {limits.MAX_HEADER_BYTES:,} bytes in "
          f"{limits.HEADER_SECONDS:g} s, body {limits.BODY_SECONDS:g} s, "
          f"uploads {limits.UPLOAD_BUDGET_BYTES / 2**20:.0f} MB "
          "together")
    print()
    steps_column = " longest loop step (CPU, clock) |" if args.loop_steps else ""
    print(f"| attack | peak memory: server (goal < {SERVER_MEMORY_TARGET_MB:.0f} MB) | with workers | /health p50 | "
          f"/health max (goal < {HEALTH_TARGET_MS:.0f} ms) | legitimate request |{steps_column}")
    print("|---|---|---|---|---|---|" + ("---|" if args.loop_steps else ""))
    for row in rows:
        print(f"| {row['description']} | {row['server_peak_mb']:.0f} MB | {row['peak_mb']:.0f} MB | "
              f"{row['health_p50']:.1f} ms | {row['health_max']:.1f} ms | {row['legit']} |"
              + (f" {row['loop_step']} |" if args.loop_steps else ""))
    worst = max((row["health_max"] for row in rows), default=0.0)
    largest = max((row["server_peak_mb"] for row in rows), default=0.0)
    legit_ok = all(row["legit"].startswith("200") for row in rows)
    print(f"\ntarget: /health within {HEALTH_TARGET_MS:.0f} ms under every attack: "
          f"{'met' if worst < HEALTH_TARGET_MS else 'NOT met'} (worst {worst:.1f} ms); "
          f"server under {SERVER_MEMORY_TARGET_MB:.0f} MB under every attack: "
          f"{'met' if largest < SERVER_MEMORY_TARGET_MB else 'NOT met'} (largest {largest:.0f} MB); "
          f"legitimate requests answered: {'all' if legit_ok else 'NOT all'}")


# --- issue 24: the second adversarial pass ---------------------------------------------------------------------


async def declared_but_not_sent(port: int, until: float, length: int) -> None:
    """A head that declares `length` bytes of body and sends none of it, sent again every 30 s (the body deadline)."""
    while time.monotonic() < until:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                         f"Content-Length: {length}\r\n\r\n".encode())
            await writer.drain()
            await asyncio.wait_for(reader.read(), min(30.0, max(0.1, until - time.monotonic())))
        except (OSError, TimeoutError):
            pass
        finally:
            if writer is not None:
                writer.close()


def declared_lengths(port: int, until: float) -> list:
    """13 connections whose Content-Lengths add up to the 128 MB upload budget: 12 of 10 MB and one of 8 MB."""
    lengths = [10 * 2**20] * 12 + [8 * 2**20]
    return [declared_but_not_sent(port, until, length) for length in lengths]


ONE_READ_HEAD = (f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
                 "Transfer-Encoding: chunked\r\n").encode() + b"".join(
    b"X-%d: a\r\n" % number for number in range(6100)) + b"\r\n"  # 67 KB of 6,100 headers, in one write


async def one_read_heads(port: int, until: float, source: str | None = None) -> None:
    """A 67 KB head in one write, on a chunked upload whose body never comes; again a second after it is answered.
    `source`: the address it comes from (default: 127.0.0.1)."""
    while time.monotonic() < until:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0) if source else None)
            writer.write(ONE_READ_HEAD)
            await writer.drain()
            await asyncio.wait_for(reader.read(), max(0.1, until - time.monotonic()))
        except (OSError, TimeoutError):
            pass
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(1.0)


ATTACKS.update({
    "declared": ("heads declaring 128 MB of bodies never sent, 13 connections", declared_lengths),
    "oneread": ("67 KB heads in one read on chunked uploads, 1,000 connections",
                lambda port, until: [one_read_heads(port, until) for _ in range(1000)]),
    # The same from 100 addresses (10 connections each), as many clients would: under each client's cap.
    "spread": ("67 KB heads in one read, 1,000 connections from 100 addresses", lambda port, until: [
        one_read_heads(port, until, f"127.0.1.{number % 100 + 1}") for number in range(1000)]),
})


def read_until_closed(connection) -> bytes:
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except OSError:
        pass
    return answer


def measure_stop(pictures: int = 30) -> None:
    """SIGTERM while `pictures` slow hostile pictures are in flight: how long the server takes to stop, what each
    request is answered, and whether any process is left."""
    import collections
    import signal
    import socket

    slow = hostile_files.progressive_jpeg(4000, 20_000)
    request_bytes = (f"POST /predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/jpeg\r\n"
                     f"Content-Length: {len(slow)}\r\nConnection: close\r\n\r\n").encode() + slow
    server, port = start_server()
    time.sleep(2.0)  # The workers are ready.
    connections = []
    for _ in range(pictures):
        connections.append(socket.create_connection((HOST, port), timeout=60))
        connections[-1].sendall(request_bytes)
    time.sleep(1.0)
    workers = children_of(server.pid)
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    answers = [read_until_closed(connection) for connection in connections]
    server.wait(timeout=300)
    stopped = time.monotonic() - started
    deadline = time.monotonic() + 5  # The workers (and multiprocessing's resource tracker) end just after it.
    while any(psutil.pid_exists(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if psutil.pid_exists(pid)]
    statuses = collections.Counter(answer.split(b" ", 2)[1].decode() if answer else "none" for answer in answers)
    print(f"SIGTERM with {pictures} progressive JPEGs of 20,000 scans in flight ({os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}): stopped in {stopped:.1f} s; answers {dict(sorted(statuses.items()))}; "
          f"processes left {len(left)}")


if __name__ == "__main__":
    if "--stop" in sys.argv[1:]:  # python benchmarks/abuse.py --stop: only the SIGTERM measurement
        measure_stop()
    else:
        main()
