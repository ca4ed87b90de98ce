"""Workload 2: applied mutations per second, each with its op and idempotency record.

One daphne process (``benchmarks.mut_settings``, in-memory channel layer) per database,
driven from this process over loopback:

- ``ws batched``: one WebSocket connection, ``mutate`` frames of 100 mutations, 2 frames
  in flight;
- ``ws single``: 4 WebSocket connections, frames of one mutation, 8 in flight on each;
- ``rest batched``: 2 keep-alive HTTP connections, ``POST /sync/api/mutations/`` with 100
  mutations, one request at a time on each;
- ``rest single``: 8 keep-alive HTTP connections, one mutation per POST.

Every mutation creates a ``testapp.Board`` (a ~200-byte op). The peer is
django-eventstream's ``send_event()`` with ``DjangoModelStorage``, called in a loop in a
process of its own on the same database (that is how it is used: in-process, from a
view or a task), writing as many events of the same size.

After each run the op log and the idempotency records are counted in the database:
``lost`` is how far either count is from the number of mutations sent.

On PostgreSQL the server goes through Django's connection pool, as docs/deployment.md
advises under ASGI; ``--no-pg-pool`` measures Django's default instead (a connection per
frame or request) without replacing the recorded results.

``python -m benchmarks.mutations [--small] [--db sqlite|postgresql] [--path ws-batched ...]
[--no-pg-pool]``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import websockets

from tests.live.servers import ROOT as ROOT
from tests.live.servers import Daphne, free_port

NAME = "mutations"
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = "benchmarks.mut_settings"
STREAM = "public:boards"
PEER_CHANNEL = "bench-send-event"
BATCH = 100
# Extra environment of the server: PostgreSQL through Django's connection pool, as
# docs/deployment.md advises under ASGI (``--no-pg-pool`` leaves it out).
SERVER_ENV: dict[str, str] = {"BENCH_PG_POOL": "1"}
PG_USER = os.environ.get("SYNCAPP_TEST_PG_USER", "postgres")
PG_HOST = os.environ.get("SYNCAPP_TEST_PG_HOST", "127.0.0.1")
PG_PORT = os.environ.get("SYNCAPP_TEST_PG_PORT", "5432")
PG_PASSWORD = os.environ.get("SYNCAPP_TEST_PG_PASSWORD", "")


# Servers and databases


class BenchDaphne(Daphne):
    """tests.asgi served with :mod:`benchmarks.mut_settings`."""

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "PYTHONUNBUFFERED": "1",
        }


class Database:
    """A throwaway database (SQLite file or PostgreSQL database), migrated, dropped at
    the end; ``env`` points :mod:`benchmarks.mut_settings` at it."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = workdir / "bench.sqlite3"
            self.env = {"BENCH_DB": "sqlite", "BENCH_SQLITE_PATH": str(self.path)}
        else:
            self.name = f"syncapp_bench_mut_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            self.env = {"BENCH_DB": "postgresql", "BENCH_PG_NAME": self.name}

    def create(self) -> None:
        if self.kind == "postgresql":
            _pg_admin(f'CREATE DATABASE "{self.name}"')
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env={**os.environ, **self.env, "DJANGO_SETTINGS_MODULE": SETTINGS},
            check=True,
        )

    def drop(self) -> None:
        if self.kind == "postgresql":
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)

    def count(self, sql: str, *params: Any) -> int:
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as conn:
                return int(conn.execute(sql.replace("%s", "?"), params).fetchone()[0])
        import psycopg

        with psycopg.connect(_pg_dsn(self.name)) as conn:
            row = conn.execute(sql, params).fetchone()
            assert row is not None
            return int(row[0])


def _pg_dsn(dbname: str) -> str:
    dsn = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={dbname} connect_timeout=3"
    return dsn + (f" password={PG_PASSWORD}" if PG_PASSWORD else "")


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_pg_dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql)


def pg_reachable() -> bool:
    try:
        _pg_admin("SELECT 1")
    except Exception:
        return False
    return True


def start_server(name: str, workdir: Path, env: dict[str, str]) -> BenchDaphne:
    server = BenchDaphne(name, free_port(), workdir / f"daphne-{name}.log", env)
    server.start()
    return server


# Payloads


def board_mutation(tag: str, index: int) -> dict[str, Any]:
    """A create of a public board: its op is about 200 bytes."""
    return {
        "id": str(uuid.uuid4()),
        "stream": STREAM,
        "model": "testapp.board",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"name": f"benchmark board {tag} #{index:06d} " + "x" * 40, "public": True},
    }


def peer_event(index: int) -> dict[str, Any]:
    """What a hand-written sync layer would send for the same create: the same op."""
    return {
        "stream": STREAM,
        "seq": index,
        "model": "testapp.board",
        "pk": str(uuid.uuid4()),
        "kind": "create",
        "version": 1,
        "fields": {"name": f"benchmark board peer #{index:06d} " + "x" * 40, "public": True},
    }


# HTTP/1.1 on asyncio streams, keep-alive


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to a loopback server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> HttpConnection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def send_head(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str]]:
        """Send a request; read the status line and the headers of its response."""
        assert self.reader is not None
        assert self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if body or method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        found: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            found[name.strip().lower()] = value.strip()
        return status, found

    async def chunks(self, headers: dict[str, str]) -> Any:
        """The response body as it arrives (chunked, sized or to the end)."""
        assert self.reader is not None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    return
                data = await self.reader.readexactly(size)
                await self.reader.readexactly(2)
                yield data
        elif "content-length" in headers:
            yield await self.reader.readexactly(int(headers["content-length"]))
        else:
            while data := await self.reader.read(65536):
                yield data

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        status, found = await self.send_head(method, path, data, headers)
        content = b"".join([chunk async for chunk in self.chunks(found)])
        return status, json.loads(content) if content else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# Drivers: each opens its connections, then sends ``mutations``; the results it got back
# and the seconds from its first mutation sent to its last result, without opening the
# connections (the peer's clock, too, starts once it is set up).

Timed = tuple[list[Any], float]


async def _ws_connect(port: int, client_id: str) -> Any:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/sync/ws/",
        origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
        max_size=None,
    )
    await ws.send(json.dumps({"type": "hello", "client_id": client_id, "protocol": 1}))
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws


async def _ws_pipeline(ws: Any, frames: Sequence[list[dict[str, Any]]], window: int) -> list[Any]:
    """Send ``frames`` (lists of mutations) with at most ``window`` unacknowledged."""
    results: list[Any] = []
    sent = 0
    acked = 0
    while acked < len(frames):
        while sent < len(frames) and sent - acked < window:
            await ws.send(json.dumps({"type": "mutate", "mutations": frames[sent]}))
            sent += 1
        frame = json.loads(await ws.recv())
        if frame["type"] != "ack":
            raise RuntimeError(f"unexpected frame: {frame}")
        results.extend(frame["results"])
        acked += 1
    return results


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def _chunk(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _ws(
    port: int,
    prefix: str,
    mutations: list[dict[str, Any]],
    connections: int,
    size: int,
    window: int,
) -> Timed:
    sockets = await asyncio.gather(
        *(_ws_connect(port, f"{prefix}-{index}") for index in range(connections))
    )
    try:
        started = time.perf_counter()
        parts = await asyncio.gather(
            *(
                _ws_pipeline(ws, _chunk(share, size), window)
                for ws, share in zip(sockets, _split(mutations, connections), strict=True)
            )
        )
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    return [result for part in parts for result in part], seconds


async def ws_batched(port: int, prefix: str, mutations: list[dict[str, Any]]) -> Timed:
    return await _ws(port, prefix, mutations, connections=1, size=BATCH, window=2)


async def ws_single(port: int, prefix: str, mutations: list[dict[str, Any]]) -> Timed:
    return await _ws(port, prefix, mutations, connections=4, size=1, window=8)


async def _rest(
    port: int, prefix: str, mutations: list[dict[str, Any]], connections: int, size: int
) -> Timed:
    async def one(index: int, conn: HttpConnection, share: list[dict[str, Any]]) -> list[Any]:
        results: list[Any] = []
        for batch in _chunk(share, size):
            body = {"client_id": f"{prefix}-{index}", "mutations": batch}
            status, answer = await conn.request("POST", "/sync/api/mutations/", body)
            if status != 200:
                raise RuntimeError(f"POST /sync/api/mutations/: {status} {answer}")
            results.extend(answer["results"])
        return results

    conns = await asyncio.gather(*(HttpConnection(port).open() for _ in range(connections)))
    try:
        started = time.perf_counter()
        shares = _split(mutations, connections)
        parts = await asyncio.gather(
            *(
                one(i, conn, share)
                for i, (conn, share) in enumerate(zip(conns, shares, strict=True))
            )
        )
        seconds = time.perf_counter() - started
    finally:
        for conn in conns:
            conn.close()
    return [result for part in parts for result in part], seconds


async def rest_batched(port: int, prefix: str, mutations: list[dict[str, Any]]) -> Timed:
    return await _rest(port, prefix, mutations, connections=2, size=BATCH)


async def rest_single(port: int, prefix: str, mutations: list[dict[str, Any]]) -> Timed:
    return await _rest(port, prefix, mutations, connections=8, size=1)


Driver = Callable[[int, str, list[dict[str, Any]]], Coroutine[Any, Any, Timed]]
PATHS: list[tuple[str, Driver]] = [
    ("ws batched (100/frame)", ws_batched),
    ("ws single (32 in flight)", ws_single),
    ("rest batched (100/POST)", rest_batched),
    ("rest single (8 conns)", rest_single),
]
#: The batched paths send this many times ``count`` (50 frames or POSTs of 100 in the
#: full run), so that filling and draining the pipeline is a small part of the time.
BATCHED_SCALE = 5


def measure_path(
    db: Database, port: int, label: str, driver: Driver, count: int, run: int
) -> dict[str, Any]:
    prefix = f"b{run}{uuid.uuid4().hex[:6]}"
    if driver in (ws_batched, rest_batched):
        count *= BATCHED_SCALE
    mutations = [board_mutation(prefix, i) for i in range(count)]
    results, seconds = asyncio.run(driver(port, prefix, mutations))
    applied = sum(1 for result in results if result.get("status") == "applied")
    ops = db.count("SELECT count(*) FROM syncapp_op WHERE client_id LIKE %s", prefix + "-%")
    records = db.count(
        "SELECT count(*) FROM syncapp_idempotencyrecord WHERE owner LIKE %s AND status = %s",
        f"client:{prefix}-%",
        "done",
    )
    return {
        "path": label,
        "mutations": count,
        "seconds": seconds,
        "rate": applied / seconds,
        "applied": applied,
        "lost": abs(count - ops) + abs(count - records) + (count - applied),
        "ops": ops,
        "records": records,
    }


def measure_peer(db: Database, count: int, run: int) -> dict[str, Any]:
    """``send_event()`` ``count`` times in a process of its own; see :func:`_peer_main`."""
    channel = f"{PEER_CHANNEL}-{run}"
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.mutations", "--peer", str(count), "--channel", channel],
        cwd=ROOT,
        env={
            **os.environ,
            **db.env,
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "BENCH_EVENTSTREAM_STORAGE": "model",
        },
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    stored = db.count(
        "SELECT count(*) FROM django_eventstream_event WHERE channel = %s AND eid > 0", channel
    )
    return {
        "path": "peer: send_event (DjangoModelStorage)",
        "mutations": count,
        "seconds": seconds,
        "rate": count / seconds,
        "applied": count,
        "lost": abs(count - stored),
        "ops": stored,
        "records": None,
    }


def _peer_main(count: int, channel: str) -> None:
    """In the peer process: warm up, then time ``count`` calls of ``send_event``."""
    import django

    django.setup()
    from django_eventstream import send_event

    for index in range(20):
        send_event(channel + "-warmup", "message", peer_event(index))
    events = [peer_event(index) for index in range(count)]
    started = time.perf_counter()
    for data in events:
        send_event(channel, "message", data)
    print(json.dumps({"seconds": time.perf_counter() - started}))


# The workload


def median_of(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample with the median rate, with the lost of every sample summed."""
    ordered = sorted(samples, key=lambda sample: sample["rate"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["lost"] = sum(sample["lost"] for sample in samples)
    chosen["rates"] = [round(sample["rate"], 1) for sample in samples]
    return chosen


def run_database(
    kind: str, count: int, repeats: int, workdir: Path, paths: Sequence[tuple[str, Driver]] = PATHS
) -> list[dict[str, Any]]:
    db = Database(kind, workdir)
    db.create()
    server: BenchDaphne | None = None
    try:
        server = start_server(f"mut-{kind}", workdir, {**db.env, **SERVER_ENV})
        # Warm-up: the first requests import views and open the connection.
        asyncio.run(ws_batched(server.port, "warmup", [board_mutation("w", i) for i in range(100)]))
        asyncio.run(rest_single(server.port, "warmup", [board_mutation("w", i) for i in range(16)]))
        samples: dict[str, list[dict[str, Any]]] = {}
        peer = []
        # The peer runs in every round, right after syncapp's paths (the server idle
        # meanwhile): the host's speed drifts over minutes, and the ratio compares rates
        # measured close together.
        for run in range(repeats):
            for label, driver in paths:
                sample = measure_path(db, server.port, label, driver, count, run)
                samples.setdefault(label, []).append(sample)
            peer.append(measure_peer(db, count, run))
    finally:
        if server is not None:
            server.stop()
        db.drop()
    rows = [median_of(samples[label]) for label, _ in paths]
    rows.append(median_of(peer))
    base = rows[-1]["rate"]
    for row in rows:
        row["db"] = kind
        row["ratio"] = row["rate"] / base
    return rows


COLUMNS = ["db", "path", "mutations", "seconds", "applied/s", "x send_event", "lost"]


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return (
                f"{value:,.3f}"
                if value < 10
                else f"{value:,.1f}"
                if value < 100
                else f"{value:,.0f}"
            )
        return f"{value:,}" if isinstance(value, int) else str(value)

    cells = [[cell(value) for value in row] for row in rows]
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                value.ljust(width) if index < 2 else value.rjust(width)
                for index, (value, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def write_result(result: dict[str, Any], small: bool) -> Path:
    """``results/<name>.json``, or ``<name>-small.json`` for the small mode."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{result['name']}{'-small' if small else ''}.json"
    target.write_text(json.dumps(result, indent=2) + "\n")
    return target


def each_database(
    measure: Callable[[str, int, int, Path], list[dict[str, Any]]],
    count: int,
    repeats: int,
    prefix: str,
    only: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """``measure(kind, count, repeats, workdir)`` on SQLite, then on PostgreSQL when it
    answers (or on ``only`` of the two); the measurements, and a note when PostgreSQL was
    left out."""
    kinds = ["sqlite"] if only in (None, "sqlite") else []
    notes: list[str] = []
    if only == "sqlite":
        pass
    elif pg_reachable():
        kinds.append("postgresql")
    else:
        notes.append(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable: SQLite only.")
    measured: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for kind in kinds:
            measured.extend(measure(kind, count, repeats, Path(tmp)))
    return measured, notes


def path_name(driver: Driver) -> str:
    """The name ``--path`` knows a driver by: ``ws-batched``, ``rest-single``, ..."""
    return driver.__name__.replace("_", "-")


def run(
    small: bool, db: str | None = None, paths: Sequence[str] | None = None, record: bool = True
) -> dict[str, Any]:
    count = 200 if small else 1000
    repeats = 1 if small else 3
    chosen = [(label, d) for label, d in PATHS if not paths or path_name(d) in paths]
    measured, notes = each_database(
        functools.partial(run_database, paths=chosen), count, repeats, "syncapp-bench-mut-", db
    )
    rows = [
        [m["db"], m["path"], m["mutations"], round(m["seconds"], 3), round(m["rate"], 1),
         round(m["ratio"], 2), m["lost"]]
        for m in measured
    ]  # fmt: skip
    notes += [
        f"{count * BATCHED_SCALE:,} mutations per batched path, {count:,} per single path "
        f"and for the peer, each a create of a testapp.Board (~200-byte op); "
        f"{'one run' if repeats == 1 else f'median of {repeats} runs'}; timed from the "
        "first mutation sent to the last result, the connections already open.",
        "One daphne process, in-memory channel layer, rate limit lifted; the client runs "
        "in another process on the same 2 cores. PostgreSQL "
        + (
            "through Django's connection pool, as docs/deployment.md advises under ASGI."
            if SERVER_ENV.get("BENCH_PG_POOL") == "1"
            else "without a pool (Django's default: a connection per frame or request)."
        ),
        "Each applied mutation commits its row, its op and its idempotency record; lost "
        "counts ops and 'done' idempotency records short of (or past) the mutations sent, "
        "plus results that were not 'applied'.",
        "Peer: django-eventstream send_event() with DjangoModelStorage, called in a loop in "
        "a process of its own on the same database, as many events of the same size, "
        "after syncapp's paths in each run (the server idle meanwhile).",
    ]
    goals = []
    for m in measured:
        if m["db"] == "postgresql" and m["path"].startswith("ws batched"):
            goals.append(
                f"Goal >= 3,000 applied/s on PostgreSQL, batched WebSocket: {m['rate']:,.0f}/s "
                f"({'met' if m['rate'] >= 3000 else 'NOT met'}); >= 10x send_event: "
                f"{m['ratio']:.1f}x ({'met' if m['ratio'] >= 10 else 'NOT met'})."
            )
    notes += goals
    result = {
        "name": NAME,
        "columns": COLUMNS,
        "rows": rows,
        "notes": notes,
        "lost": sum(m["lost"] for m in measured),
        "samples": measured,
    }
    print(format_table(COLUMNS, rows))
    for note in notes:
        print(f"- {note}")
    if record and db is None and not paths:
        write_result(result, small)  # a partial run does not replace the recorded one
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutations")
    parser.add_argument("--small", action="store_true", help="a few hundred mutations")
    parser.add_argument(
        "--db", choices=["sqlite", "postgresql"], help="one database only (default: both)"
    )
    parser.add_argument(
        "--path",
        action="append",
        choices=[path_name(d) for _, d in PATHS],
        help="only these paths (repeatable; default: all); the peer always runs",
    )
    parser.add_argument(
        "--no-pg-pool",
        action="store_true",
        help="serve PostgreSQL without Django's connection pool (Django's default); "
        "the recorded results are with it, as docs/deployment.md advises",
    )
    parser.add_argument("--peer", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--channel", default=PEER_CHANNEL, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer is not None:
        _peer_main(args.peer, args.channel)
        return 0
    if args.no_pg_pool:
        SERVER_ENV.pop("BENCH_PG_POOL", None)
    result = run(args.small, args.db, args.path, record=not args.no_pg_pool)
    return 1 if result["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
