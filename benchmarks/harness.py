"""What the workloads share: the servers under test, their database, client processes,
a writer, CPU and memory readings, tables, JSON results and plots.

Servers reuse ``tests/live/servers.py``'s :class:`Process` (a subprocess on a loopback
port with its output in a file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tests.live.servers import ROOT, Process, free_port

RESULTS = ROOT / "benchmarks" / "results"
PUBLISHED = ROOT / "docs" / "benchmarks"
BOARD_ID = "00000000-0000-4000-8000-00000000b0a4"
STREAM = f"board:{BOARD_ID}"
PY = sys.executable


# servers


class DjangoServer(Process):
    """``benchmarks.asgi`` on daphne or uvicorn, with ``benchmarks.settings``."""

    def __init__(self, name: str, server: str, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(name, free_port(), workdir / f"{name}.log")
        self.server = server
        self.label = server
        self.env = env

    def command(self) -> list[str]:
        app = "benchmarks.asgi:application"
        port = str(self.port)
        if self.server == "daphne":
            # Twisted listens with a backlog of 50 unless told: a storm of reconnections
            # then waits on SYN retries. uvicorn's default is 2048; give daphne the same.
            endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog=2048"
            return [PY, "-m", "daphne", "-v", "0", "-e", endpoint, app]
        if self.server == "uvicorn":
            # websockets' legacy protocol (the harness's choice from the start);
            # BENCH_UVICORN_WS=auto takes uvicorn's default (websockets' sans-I/O protocol
            # in the pinned uvicorn).
            return [
                PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", port,
                "--lifespan", "off", "--log-level", "warning", "--no-access-log",
                "--ws", os.environ.get("BENCH_UVICORN_WS", "websockets"),
            ]  # fmt: skip
        raise ValueError(self.server)

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
            "PYTHONUNBUFFERED": "1",
        }

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class FloorServer(Process):
    """``benchmarks/floor.py``: the bare ``websockets`` broadcast server."""

    label = "floor"

    def __init__(self, name: str, workdir: Path) -> None:
        super().__init__(name, free_port(), workdir / f"{name}.log")

    def command(self) -> list[str]:
        return [PY, "-m", "benchmarks.floor", str(self.port)]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    """Start ``process``; stop it (and show its output's tail if it failed) at the end."""
    process.start()
    try:
        yield process
    except BaseException:
        print(f"--- {process.label} {process.name} output:\n{process.tail(40)}", file=sys.stderr)
        raise
    finally:
        process.stop()


# the database


class Database:
    """A migrated database with the benchmark board, copied fresh for each server.

    SQLite (default): migrated once into a template file, copied per server. PostgreSQL
    (``BENCH_DB=postgresql``): a throwaway database per server, made from a migrated
    template database and dropped at the end.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kind = os.environ.get("BENCH_DB", "sqlite")
        self.template = ""
        self.made: list[str] = []
        self.prefix = f"syncapp_bench_{os.getpid()}"

    def _env(self, name: str) -> dict[str, str]:
        if self.kind == "postgresql":
            return {"BENCH_DB": "postgresql", "BENCH_PG_NAME": name}
        return {"BENCH_DB": "sqlite", "BENCH_SQLITE_PATH": name}

    def _pg(self) -> Any:
        import psycopg

        return psycopg.connect(
            host=os.environ.get("SYNCAPP_TEST_PG_HOST", "127.0.0.1"),
            port=os.environ.get("SYNCAPP_TEST_PG_PORT", "5432"),
            user=os.environ.get("SYNCAPP_TEST_PG_USER", "postgres"),
            password=os.environ.get("SYNCAPP_TEST_PG_PASSWORD", ""),
            dbname="postgres",
            autocommit=True,
        )

    def prepare(self) -> None:
        if self.kind == "postgresql":
            self.template = f"{self.prefix}_template"
            with self._pg() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.template}"')
                conn.execute(f'CREATE DATABASE "{self.template}"')
            self.made.append(self.template)
        else:
            self.template = str(self.workdir / "template.sqlite3")
        env = {
            **os.environ,
            **self._env(self.template),
            "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        }
        subprocess.run([PY, "-m", "benchmarks.setup_db"], cwd=ROOT, env=env, check=True)

    def fresh(self, name: str) -> dict[str, str]:
        """The environment of a server with a database of its own, copied from the template."""
        if self.kind == "postgresql":
            db = f"{self.prefix}_{name}".replace("-", "_")
            with self._pg() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
                conn.execute(f'CREATE DATABASE "{db}" TEMPLATE "{self.template}"')
            self.made.append(db)
            return self._env(db)
        path = self.workdir / f"{name}.sqlite3"
        shutil.copyfile(self.template, path)
        return self._env(str(path))

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        with self._pg() as conn:
            for db in reversed(self.made):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@contextlib.contextmanager
def workspace(name: str) -> Iterator[tuple[Path, Database]]:
    """A temporary directory and a prepared database, both gone at the end (the
    directory, with the servers' logs, is kept with ``BENCH_KEEP=1``)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"syncapp-bench-{name}-"))
    db = Database(workdir)
    try:
        db.prepare()
        yield workdir, db
    finally:
        db.drop()
        if os.environ.get("BENCH_KEEP"):
            print(f"  {name}: servers' logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# readings


@dataclass
class Usage:
    """CPU seconds (user + system) and RSS of a server process."""

    pid: int
    process: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.process = psutil.Process(self.pid)

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


# client processes


class ClientGroup:
    """``processes`` client processes (``benchmarks/clients.py``) holding ``count``
    connections between them."""

    def __init__(self, kind: str, url: str, origin: str, count: int, processes: int) -> None:
        self.kind, self.url, self.origin = kind, url, origin
        shares = [
            count // processes + (1 if i < count % processes else 0) for i in range(processes)
        ]
        self.shares = [s for s in shares if s]
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        for share in self.shares:
            args = [self.kind, self.url, self.origin, STREAM, str(share)]
            proc = await asyncio.create_subprocess_exec(
                PY, "-m", "benchmarks.clients", *args,
                cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024,
            )  # fmt: skip
            self.procs.append(proc)

    async def _ask(self, proc: asyncio.subprocess.Process, command: dict[str, Any]) -> Any:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write((json.dumps(command) + "\n").encode())
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process exited during {command['cmd']}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client process: {command['cmd']}: {answer['error']}")
        return answer

    async def ask(self, command: dict[str, Any]) -> list[Any]:
        return list(await asyncio.gather(*(self._ask(p, command) for p in self.procs)))

    async def connect(self, parallel: int = 1_000_000) -> float:
        """Open every connection; the time the last one was subscribed."""
        answers = await self.ask({"cmd": "connect", "parallel": parallel})
        return max(float(a["at"]) for a in answers)

    async def arm(self, first: int, count: int) -> None:
        await self.ask({"cmd": "arm", "first": first, "count": count})

    async def collect(self, timeout: float) -> Received:
        received = Received()
        for answer in await self.ask({"cmd": "collect", "timeout": timeout}):
            for index, times in answer["times"].items():
                received.times.setdefault(int(index), []).extend(times)
            received.missing += answer["missing"]
            received.gaps += answer["gaps"]
            received.problems.extend(answer["problems"])
        return received

    async def close(self) -> None:
        await self.ask({"cmd": "close"})

    async def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd": "quit"}\n')
                await proc.stdin.drain()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@dataclass
class Received:
    times: dict[int, list[float]] = field(default_factory=dict)
    missing: int = 0
    gaps: int = 0
    problems: list[Any] = field(default_factory=list)

    def last(self) -> float:
        return max((max(t) for t in self.times.values() if t), default=math.nan)

    def latencies(self, sent: dict[int, float]) -> list[float]:
        return [t - sent[i] for i, times in self.times.items() if i in sent for t in times]

    def per_op(
        self, sent: dict[int, float], acked: dict[int, float] | None = None
    ) -> list[dict[str, float]]:
        """Each op's latency to its first, median and last client, and to the writer's ack
        when ``acked`` has it, in ms: where the time of an op goes (a late op is late for
        everyone, a slow fan-out only for the last)."""
        ops = []
        for i in sorted(sent):
            times = sorted(t - sent[i] for t in self.times.get(i, ()))
            if times:
                op = {
                    "first": times[0] * 1000,
                    "median": times[len(times) // 2] * 1000,
                    "last": times[-1] * 1000,
                }
                if acked and i in acked:
                    op["ack"] = (acked[i] - sent[i]) * 1000
                ops.append(op)
        return ops


# writers


def op_fields(index: int) -> dict[str, Any]:
    return {"board": BOARD_ID, "title": f"b{index}", "body": ""}


class SyncWriter:
    """Creates cards with ``mutate`` frames on one syncapp WebSocket connection, one
    mutation per frame (one transaction, one op, one ``group_send`` each)."""

    def __init__(self, server: DjangoServer) -> None:
        self.server = server
        self.ws: ClientConnection | None = None
        self.acks: list[dict[str, Any]] = []
        self.ack_times: list[float] = []  # when each of ``acks`` arrived
        self.acked = asyncio.Event()
        self.last_ack_at = math.nan
        self.task: asyncio.Task[None] | None = None
        self.pinger: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await connect(
            f"ws://127.0.0.1:{self.server.port}/sync/ws/",
            origin=self.server.origin,  # type: ignore[arg-type]
            compression=None,
            max_size=None,
            ping_interval=None,
            proxy=None,
        )
        await self.ws.send(json.dumps({"type": "hello", "client_id": "writer", "protocol": 1}))
        welcome = json.loads(await self.ws.recv())
        assert welcome["type"] == "welcome", welcome
        self.task = asyncio.create_task(self._read(self.ws))
        self.pinger = asyncio.create_task(self._ping(self.ws))

    async def _ping(self, ws: ClientConnection) -> None:
        """Heartbeats, so that a long wait for slow peers does not time the writer out."""
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(20)
                await ws.send('{"type":"ping","ts":0}')

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                frame = json.loads(text)
                if frame["type"] == "ack":
                    self.acks.extend(frame["results"])
                    self.last_ack_at = time.time()
                    self.ack_times.extend([self.last_ack_at] * len(frame["results"]))
                    self.acked.set()

    async def write(self, index: int) -> None:
        assert self.ws is not None
        mutation = {
            "id": str(uuid.uuid4()),
            "stream": STREAM,
            "model": "testapp.card",
            "pk": str(uuid.uuid4()),
            "op": "create",
            "fields": op_fields(index),
        }
        await self.ws.send(json.dumps({"type": "mutate", "mutations": [mutation]}))

    async def wait_acks(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acks) < count:
            self.acked.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{len(self.acks)} of {count} mutations acknowledged")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.acked.wait(), remaining)
        bad = [a for a in self.acks if a["status"] != "applied"]
        if bad:
            raise RuntimeError(f"mutations not applied: {bad[:3]}")

    async def close(self) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class FloorWriter:
    """Sends ``ops`` frames shaped like syncapp's (one op each) to the floor server."""

    def __init__(self, server: FloorServer) -> None:
        self.server = server
        self.ws: ClientConnection | None = None
        self.epoch = uuid.uuid4().hex[:16]
        self.seq = 0
        self.last_ack_at = math.nan

    async def open(self) -> None:
        self.ws = await connect(
            f"ws://127.0.0.1:{self.server.port}/write", compression=None, proxy=None
        )

    async def write(self, index: int) -> None:
        assert self.ws is not None
        self.seq += 1
        op = {
            "stream": STREAM,
            "epoch": self.epoch,
            "seq": self.seq,
            "model": "testapp.card",
            "pk": str(uuid.uuid4()),
            "op": "create",
            "fields": {
                **op_fields(index),
                "done": False,
                "likes": 0,
                "rank": 0,
                "updated_at": "2026-01-01T00:00:00.000000Z",
            },
            "version": 1,
            "mutation": str(uuid.uuid4()),
            "ts": "2026-01-01T00:00:00.000000Z",
        }
        text = json.dumps({"type": "ops", "stream": STREAM, "ops": [op]}, separators=(",", ":"))
        await self.ws.send(text)

    async def wait_acks(self, count: int, timeout: float = 120.0) -> None:
        return

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


# output


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if value is None:
        return "-"
    return str(value)


def table(columns: list[str], rows: Iterable[list[Any]]) -> str:
    """A Markdown table."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join(lines)


def write_json(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def plot(
    name: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    logy: bool = False,
) -> Path:
    """A line plot of ``series`` (label -> points) as ``benchmarks/results/<name>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for label, points in series.items():
        points = [(x, y) for x, y in points if not math.isnan(y)]
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def publish(paths: Iterable[Path]) -> list[Path]:
    """Copy plots into ``docs/benchmarks/`` (committed with the docs)."""
    PUBLISHED.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in paths:
        target = PUBLISHED / path.name
        shutil.copyfile(path, target)
        copied.append(target)
    return copied


def now() -> float:
    return time.time()
