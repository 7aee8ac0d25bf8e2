"""`digits serve` with its event loop's long steps written to stderr: `python benchmarks/loop_steps.py serve …`.

A step is what the loop runs between two looks for new events (the callbacks of one turn): while it runs, no
request is read or answered. Each step over STEP_MS is written as one line, `loop-step CPU_MS WALL_MS END`: the
CPU time the loop's thread spent in it, the time it took on the clock (which adds waiting for a core on a busy
machine, and for the interpreter lock held by the server's other threads), and when it ended (time.monotonic, the
same clock in every process). `benchmarks/abuse.py --loop-steps` starts the server this way and reports, per attack,
the longest step: the part of a /health answer's wait that the server itself causes, measurable on a machine that
other work keeps busy.
"""

from __future__ import annotations

import runpy
import selectors
import sys
import threading
import time

STEP_MS = 10.0


def record_loop_steps() -> None:
    """Time what the main thread does between two calls of the epoll selector (asyncio's selector on Linux)."""
    select = selectors.EpollSelector.select
    step_started: list[float] = []  # [thread CPU time, clock] when the last select returned

    def timed_select(self, timeout=None):
        if threading.current_thread() is threading.main_thread() and step_started:
            cpu_ms = (time.thread_time() - step_started[0]) * 1000
            wall_ms = (time.perf_counter() - step_started[1]) * 1000
            if wall_ms > STEP_MS:
                print(f"loop-step {cpu_ms:.1f} {wall_ms:.1f} {time.monotonic():.3f}", file=sys.stderr, flush=True)
        events = select(self, timeout)
        step_started[:] = [time.thread_time(), time.perf_counter()]
        return events

    selectors.EpollSelector.select = timed_select  # type: ignore[method-assign]


if __name__ == "__main__":
    record_loop_steps()
    sys.argv = ["digits", *sys.argv[1:]]
    runpy.run_module("digits", run_name="__main__", alter_sys=True)
