"""A benchmark client process: many WebSocket connections on one event loop, driven by
JSON lines on stdin, answering with one JSON line on stdout per command.

``python -m benchmarks.clients KIND URL ORIGIN STREAM COUNT`` where KIND is ``syncapp``
(protocol 1: hello, subscribe, resume with ``after``), ``plain`` (the plain Channels
consumer), ``bare`` (a consumer that only accepts) or ``floor`` (the bare ``websockets``
server).

Commands (``{"cmd": ...}``):

- ``connect``: open every connection not open (syncapp ones resume from their last
  position) and wait until each is subscribed; answers ``{"at": <time all subscribed>}``.
- ``arm`` with ``first`` and ``count``: forget what was received; the next ``collect``
  expects the ops titled ``b<first>`` .. ``b<first + count - 1>``.
- ``collect`` with ``timeout``: wait until every connection has every expected op (or the
  timeout); answers the receipt times per op index, the number missing and the gaps.
- ``close``: close every connection, keeping its position.
- ``quit``.

Frames are not parsed as JSON on the hot path: a regular expression takes each op's seq
and title, so that a client process costs as little as possible per delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

SEQ = re.compile(rb'"seq":\s*(\d+)')
TITLE = re.compile(rb'"title":\s*"b(\d+)"')
OPS_PREFIXES = (b'{"type":"ops"', b'{"type": "ops"')
CONNECT_TIMEOUT = 60.0
PING_EVERY = 20.0


class Conn:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.ws: ClientConnection | None = None
        self.epoch = ""
        self.last = -1  # -1: no position yet (subscribe without ``after``)
        self.gaps = 0
        self.got: dict[int, float] = {}
        self.subscribed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.subscribed.clear()
        pool = self.pool
        self.ws = await connect(
            pool.url,
            origin=pool.origin,  # type: ignore[arg-type]
            compression=None,
            max_size=None,
            open_timeout=CONNECT_TIMEOUT,
            ping_interval=None,
            proxy=None,
        )
        if pool.kind == "syncapp":
            await self.ws.send(json.dumps({"type": "hello", "client_id": "b", "protocol": 1}))
            frame: dict[str, Any] = {"type": "subscribe", "stream": pool.stream}
            if self.last >= 0:
                frame["after"] = {"epoch": self.epoch, "seq": self.last}
            await self.ws.send(json.dumps(frame))
        self.task = asyncio.create_task(self.read(self.ws))
        await asyncio.wait_for(self.subscribed.wait(), CONNECT_TIMEOUT)

    async def read(self, ws: ClientConnection) -> None:
        pool = self.pool
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                data = await ws.recv(decode=False)
                if data.startswith(OPS_PREFIXES):
                    now = time.time()
                    for match in SEQ.finditer(data):
                        seq = int(match.group(1))
                        if self.last >= 0 and seq != self.last + 1:
                            self.gaps += 1
                        self.last = seq
                    for match in TITLE.finditer(data):
                        self.got[int(match.group(1))] = now
                    if len(self.got) >= pool.count:
                        pool.progress.set()
                    continue
                frame = json.loads(data)
                kind = frame.get("type")
                if kind == "snapshot":
                    self.epoch, self.last = frame["epoch"], frame["seq"]
                elif kind == "subscribed":
                    if "epoch" in frame:
                        self.epoch = frame["epoch"]
                        if self.last < 0:
                            self.last = frame["head"]
                    self.subscribed.set()
                elif kind in ("welcome", "presence_state", "presence", "pong"):
                    pass
                else:
                    pool.problems.append(frame)

    async def ping(self) -> None:
        if self.ws is not None and self.pool.kind == "syncapp":
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.ws.send('{"type":"ping","ts":0}')

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.ws = None


class Pool:
    def __init__(self, kind: str, url: str, origin: str, stream: str, count: int) -> None:
        self.kind = kind
        self.url = url
        self.origin = origin
        self.stream = stream
        self.conns = [Conn(self) for _ in range(count)]
        self.first = 0
        self.count = 0
        self.progress = asyncio.Event()
        self.problems: list[Any] = []

    async def connect(self, parallel: int) -> dict[str, Any]:
        limit = asyncio.Semaphore(parallel)

        async def one(conn: Conn) -> None:
            async with limit:
                await conn.open()

        waiting = [c for c in self.conns if c.ws is None]
        if self.kind == "syncapp" and waiting and all(c.last < 0 for c in waiting):
            # One snapshot is enough: the others subscribe from its position, as a
            # client that reconnects does (a snapshot each would measure the snapshot).
            await waiting[0].open()
            for conn in waiting[1:]:
                conn.epoch, conn.last = waiting[0].epoch, waiting[0].last
            waiting = waiting[1:]
        await asyncio.gather(*(one(c) for c in waiting))
        return {"at": time.time()}

    def arm(self, first: int, count: int) -> dict[str, Any]:
        self.first, self.count = first, count
        for conn in self.conns:
            conn.got = {}
        self.progress.clear()
        return {}

    def complete(self) -> bool:
        return all(len(c.got) >= self.count for c in self.conns)

    async def collect(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.complete() and time.monotonic() < deadline:
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 0.2)
        wanted = range(self.first, self.first + self.count)
        times: dict[int, list[float]] = {i: [] for i in wanted}
        missing = 0
        for conn in self.conns:
            for i in wanted:
                if i in conn.got:
                    times[i].append(conn.got[i])
                else:
                    missing += 1
        return {
            "times": {str(i): t for i, t in times.items()},
            "missing": missing,
            "gaps": sum(c.gaps for c in self.conns),
            "problems": self.problems[:5],
        }

    async def close(self) -> dict[str, Any]:
        await asyncio.gather(*(c.close() for c in self.conns))
        return {}

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(PING_EVERY)
            await asyncio.gather(*(c.ping() for c in self.conns))


async def main() -> None:
    kind, url, origin, stream, count = sys.argv[1:6]
    pool = Pool(kind, url, origin, stream, int(count))
    pinger = asyncio.create_task(pool.keepalive())
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        cmd = command["cmd"]
        try:
            if cmd == "connect":
                answer = await pool.connect(command.get("parallel", 1_000_000))
            elif cmd == "arm":
                answer = pool.arm(command["first"], command["count"])
            elif cmd == "collect":
                answer = await pool.collect(command["timeout"])
            elif cmd == "close":
                answer = await pool.close()
            elif cmd == "quit":
                break
            else:
                answer = {"error": f"unknown command {cmd}"}
        except Exception as exc:  # reported to the parent, which fails the workload
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    pinger.cancel()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
