"""Garbage collection in the servers under test: settled before each measured phase,
and logged on request.

A server that has just accepted 1,000 clients holds their objects in CPython's young
generations; as they age into the oldest one, the interpreter runs a full collection
of the whole heap (110 to 190 ms at 250,000 to 300,000 objects on the benchmark
machine), during which nothing is sent. Left alone, that collection lands in whichever
phase comes next, and one op of the paced phase is late for every client. Like JMH,
which collects between iterations, the harness has every server run a full collection
before each phase (``SIGUSR1``), the floor's included, so that each phase measures the
steady state and not the debt of the one before. ``BENCH_GC_SETTLE=0`` turns it off.

``BENCH_GC_LOG=1`` prints each full collection the server ran and how long it took
(kept in its log with ``BENCH_KEEP=1``).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from typing import Any

SETTLE_SIGNAL = signal.SIGUSR1


def enabled() -> bool:
    return os.environ.get("BENCH_GC_SETTLE", "1") != "0"


def install() -> None:
    """In a server process: collect on ``SIGUSR1``; log full collections if asked.
    Only the main thread can set a signal handler; elsewhere (a test importing the ASGI
    module) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(SETTLE_SIGNAL, _collect)
    if os.environ.get("BENCH_GC_LOG"):
        gc.callbacks.append(_log)


def _collect(signum: int, frame: Any) -> None:
    started = time.perf_counter()
    gc.collect()
    took = (time.perf_counter() - started) * 1000
    if os.environ.get("BENCH_GC_LOG"):
        print(f"gc: settled in {took:.1f} ms, {len(gc.get_objects())} objects", file=sys.stderr)


_started = 0.0


def _log(phase: str, info: dict[str, int]) -> None:
    global _started
    if info["generation"] != 2:
        return
    if phase == "start":
        _started = time.perf_counter()
        return
    took = (time.perf_counter() - _started) * 1000
    print(f"gc: full collection {took:.1f} ms at {time.time():.3f}", file=sys.stderr)


def settle(pids: list[int]) -> None:
    """Have the servers ``pids`` run a full collection now (no-op when disabled)."""
    if not enabled():
        return
    for pid in pids:
        os.kill(pid, SETTLE_SIGNAL)
