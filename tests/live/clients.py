"""Clients of the live servers over real sockets.

HTTP (mutations, tokens, snapshots, long-poll, SSE) is spoken on asyncio streams, one
connection per request; the WebSocket with the ``websockets`` library, protocol 1 by
hand, so that a test controls when a client reads and sees every frame and close code.

Every client keeps each op it receives, across reconnections, so a test can assert that
it ended with every op exactly once, in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import websockets
from websockets.asyncio.client import ClientConnection

from tests.live.servers import Daphne

TIMEOUT = 10.0

Credentials = tuple[str, str]


# HTTP


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def _send_request(
    server: Daphne,
    method: str,
    path: str,
    *,
    auth: Credentials | None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    """Open a connection, send one request, read the status line and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    data = b"" if body is None else json.dumps(body).encode()
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        "Connection: close",
        f"Content-Length: {len(data)}",
    ]
    if body is not None:
        lines.append("Content-Type: application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError(f"{server.name} closed the connection without answering")
    status = int(status_line.split()[1])
    found: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        found[name.strip().lower()] = value.strip()
    return reader, writer, status, found


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The response body as it arrives, chunked or not."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            chunk = await reader.readexactly(size)
            await reader.readexactly(2)
            yield chunk
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while chunk := await reader.read(65536):
            yield chunk


async def request(
    server: Daphne,
    method: str,
    path: str,
    *,
    auth: Credentials | None = None,
    body: Any = None,
    timeout: float = TIMEOUT,
) -> Response:
    async def run() -> Response:
        reader, writer, status, headers = await _send_request(
            server, method, path, auth=auth, body=body
        )
        try:
            data = b"".join([chunk async for chunk in _body(reader, headers)])
        finally:
            writer.close()
        return Response(status, headers, data)

    return await asyncio.wait_for(run(), timeout)


async def ws_token(server: Daphne, auth: Credentials) -> str:
    response = await request(server, "POST", "/sync/api/ws-token/", auth=auth)
    assert response.status == 200, response
    return str(response.json()["token"])


def stream_path(stream: str, what: str) -> str:
    return f"/sync/api/streams/{quote(stream, safe='')}/{what}/"


async def snapshot(server: Daphne, auth: Credentials, stream: str) -> dict[str, Any]:
    response = await request(server, "GET", stream_path(stream, "snapshot"), auth=auth)
    assert response.status == 200, response
    return dict(response.json())


async def long_poll(
    server: Daphne, auth: Credentials, stream: str, epoch: str, after: int, wait: float = 20
) -> dict[str, Any]:
    """``GET ops/?epoch=&after=&wait=``: returns when ops after ``after`` exist."""
    path = stream_path(stream, "ops") + f"?epoch={epoch}&after={after}&wait={wait:g}"
    response = await request(server, "GET", path, auth=auth, timeout=wait + TIMEOUT)
    assert response.status == 200, response
    return dict(response.json())


# mutations


def new_card(stream: str, board_pk: Any, title: str, body: str = "") -> dict[str, Any]:
    """A mutation creating a card on the board whose stream is ``stream``."""
    return {
        "id": str(uuid.uuid4()),
        "stream": stream,
        "model": "testapp.card",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"board": str(board_pk), "title": title, "body": body},
    }


async def mutate(
    server: Daphne, auth: Credentials, mutations: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """POST the mutations; every one must be applied. Their results, in order."""
    response = await request(
        server,
        "POST",
        "/sync/api/mutations/",
        auth=auth,
        body={"client_id": "live-writer", "mutations": mutations},
    )
    assert response.status == 200, response
    results: list[dict[str, Any]] = response.json()["results"]
    assert [r["status"] for r in results] == ["applied"] * len(mutations), results
    return results


# waiting


class Watched:
    """Something that changes as frames arrive, and can be waited on."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def touch(self) -> None:
        self.changed.set()

    async def until(
        self, predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = ""
    ) -> None:
        """Return once ``predicate()`` holds; fail after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            self.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what or predicate}: {self!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


class Writer(Watched):
    """Creates cards through the mutations endpoint, keeping every result."""

    def __init__(self, auth: Credentials, stream: str, board_pk: Any) -> None:
        super().__init__()
        self.auth = auth
        self.stream = stream
        self.board_pk = board_pk
        self.results: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"<Writer wrote={len(self.results)}>"

    async def write(self, server: Daphne, count: int, body: str = "") -> list[dict[str, Any]]:
        """``count`` cards through ``server``, one request each; their results."""
        results = []
        for _ in range(count):
            title = f"card {len(self.results) + 1}"
            mutation = new_card(self.stream, self.board_pk, title, body)
            [result] = await mutate(server, self.auth, [mutation])
            results.append(result)
            self.results.append(result)
            self.touch()
        return results

    async def write_batch(self, server: Daphne, count: int, body: str = "") -> list[dict[str, Any]]:
        """``count`` cards through ``server`` in one request; their results."""
        first = len(self.results) + 1
        mutations = [
            new_card(self.stream, self.board_pk, f"card {first + i}", body) for i in range(count)
        ]
        results = await mutate(server, self.auth, mutations)
        self.results.extend(results)
        self.touch()
        return results

    def expected(self) -> tuple[list[int], list[str]]:
        """The seqs and mutation ids of everything written, in seq order."""
        ordered = sorted(self.results, key=lambda result: result["seq"])
        return [r["seq"] for r in ordered], [r["id"] for r in ordered]

    @property
    def head(self) -> int:
        return max((result["seq"] for result in self.results), default=0)


class LongPollClient(Watched):
    """Long-polls one stream, moving to the next server when a request fails."""

    def __init__(self, auth: Credentials, stream: str, epoch: str, after: int) -> None:
        super().__init__()
        self.auth = auth
        self.stream = stream
        self.epoch = epoch
        self.ops: list[dict[str, Any]] = []
        self.last = after
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<LongPollClient seqs={seqs(self.ops)} failures={self.failures}>"

    def start(self, *servers: Daphne) -> None:
        self._task = asyncio.create_task(self._run(list(servers)))

    async def _run(self, servers: list[Daphne]) -> None:
        while True:
            try:
                page = await long_poll(servers[0], self.auth, self.stream, self.epoch, self.last)
            except (OSError, asyncio.IncompleteReadError) as exc:
                self.failures.append(f"{servers[0].name}: {exc!r}")
                servers.append(servers.pop(0))
                continue
            except AssertionError as exc:  # an answer that was not 200: recorded, and stop
                self.failures.append(f"{servers[0].name}: {exc}")
                self.touch()
                return
            self.ops.extend(page["ops"])
            self.last = max([self.last, *seqs(page["ops"])])
            self.touch()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# SSE


class SseClient(Watched):
    """An EventSource: reads one stream's events, resumes with ``Last-Event-ID``."""

    def __init__(self, auth: Credentials, stream: str) -> None:
        super().__init__()
        self.auth = auth
        self.stream = stream
        self.ops: list[dict[str, Any]] = []
        self.last_event_id: str | None = None
        self.problems: list[dict[str, str]] = []
        self.opened = False
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    def __repr__(self) -> str:
        return f"<SseClient seqs={seqs(self.ops)} problems={self.problems}>"

    async def open(self, server: Daphne) -> None:
        """Connect to ``server``; return once the stream is open (its first event)."""
        self.opened = False
        self.closed.clear()
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        reader, writer, status, found = await asyncio.wait_for(
            _send_request(
                server,
                "GET",
                stream_path(self.stream, "events"),
                auth=self.auth,
                headers=headers,
            ),
            TIMEOUT,
        )
        assert status == 200, (status, found)
        assert found["content-type"].startswith("text/event-stream"), found
        self._writer = writer
        self._task = asyncio.create_task(self._read(reader, found))
        await self.until(lambda: self.opened or self.closed.is_set(), what="stream-open")
        assert self.opened, "the event stream closed before it opened"

    async def _read(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
        buffer = ""
        try:
            async for chunk in _body(reader, headers):
                buffer += chunk.decode()
                while "\n\n" in buffer:
                    raw, buffer = buffer.split("\n\n", 1)
                    self._event(raw)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the server went away
        finally:
            self.closed.set()
            self.touch()

    def _event(self, raw: str) -> None:
        event: dict[str, str] = {}
        for line in raw.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = f"{event[name]}\n{value}" if name in event else value
        if not event:
            return
        self.opened = True
        kind = event.get("event", "message")
        if kind == "message":
            self.ops.append(json.loads(event["data"]))
            self.last_event_id = event.get("id", self.last_event_id)
        elif kind not in ("stream-open", "keep-alive"):
            self.problems.append(event)
        self.touch()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()


# WebSocket


class WsClient(Watched):
    """A protocol-1 WebSocket client that follows streams and keeps every op.

    ``connect()`` to another server after a disconnection resubscribes every stream from
    its last position, as a real client would.
    """

    def __init__(self, auth: Credentials, client_id: str, **options: Any) -> None:
        super().__init__()
        self.auth = auth
        self.client_id = client_id
        self.options = options
        self.ops: dict[str, list[dict[str, Any]]] = {}
        # Per stream, the presence members this client knows of, from presence_state and
        # the presence diffs after it.
        self.presence: dict[str, dict[str, Any]] = {}
        self.connection_id = ""
        self.positions: dict[str, tuple[str, int]] = {}
        self.subscribed: set[str] = set()
        self.problems: list[dict[str, Any]] = []
        self.acks: list[dict[str, Any]] = []
        self.pongs: list[dict[str, Any]] = []
        self.close_codes: list[int] = []
        self.closed = asyncio.Event()
        self.reading = asyncio.Event()
        self.reading.set()
        self.ws: ClientConnection | None = None
        self.sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        streams = {stream: seqs(ops) for stream, ops in self.ops.items()}
        return (
            f"<WsClient {self.client_id} close_codes={self.close_codes} seqs={streams} "
            f"problems={self.problems}>"
        )

    async def connect(self, server: Daphne, sock: socket.socket | None = None) -> None:
        """Connect (over ``sock`` if given), say hello, and resume every stream followed
        so far."""
        self.sock = sock
        token = await ws_token(server, self.auth)
        extra: dict[str, Any] = {} if sock is None else {"sock": sock}
        self.ws = await websockets.connect(
            f"ws://127.0.0.1:{server.port}/sync/ws/?token={token}",
            origin=server.origin,
            proxy=None,
            open_timeout=TIMEOUT,
            **{"compression": None, **self.options},
            **extra,
        )
        self.closed.clear()
        await self.ws.send(
            json.dumps({"type": "hello", "client_id": self.client_id, "protocol": 1})
        )
        welcome = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        assert welcome["type"] == "welcome", welcome
        self.connection_id = welcome["connection_id"]
        self._task = asyncio.create_task(self._read(self.ws))
        for stream in list(self.subscribed):
            await self.subscribe(stream)

    async def subscribe(self, stream: str) -> None:
        """Follow ``stream`` (from the last position, if there is one) until ``subscribed``."""
        assert self.ws is not None
        self.subscribed.discard(stream)
        frame: dict[str, Any] = {"type": "subscribe", "stream": stream}
        if stream in self.positions:
            epoch, seq = self.positions[stream]
            frame["after"] = {"epoch": epoch, "seq": seq}
        self.ops.setdefault(stream, [])
        await self.ws.send(json.dumps(frame))
        await self.until(
            lambda: stream in self.subscribed or bool(self.problems) or self.closed.is_set(),
            what=f"subscribed to {stream}",
        )
        assert stream in self.subscribed, f"not subscribed to {stream}: {self!r}"

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(frame))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            while True:
                await self.reading.wait()
                self._frame(json.loads(await ws.recv()))
        except websockets.ConnectionClosed as exc:
            self.close_codes.append(exc.rcvd.code if exc.rcvd is not None else 1006)
        finally:
            self.closed.set()
            self.touch()

    def _frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "snapshot":
            self.positions[frame["stream"]] = (frame["epoch"], frame["seq"])
        elif kind == "ops":
            for op in frame["ops"]:
                self.ops[frame["stream"]].append(op)
                self.positions[frame["stream"]] = (op["epoch"], op["seq"])
        elif kind == "subscribed":
            self.subscribed.add(frame["stream"])
        elif kind == "ack":
            self.acks.append(frame)
        elif kind == "presence_state":
            self.presence[frame["stream"]] = dict(frame["members"])
        elif kind == "presence":
            members = self.presence.setdefault(frame["stream"], {})
            members.update(frame["joins"])
            for member in frame["leaves"]:
                members.pop(member, None)
        elif kind == "pong":
            self.pongs.append(frame)
        else:
            self.problems.append(frame)
        self.touch()

    def last(self, stream: str) -> int:
        return self.positions.get(stream, ("", 0))[1]

    async def close(self) -> None:
        """Close the connection (a stalled one is read again, so that it can close)."""
        self.reading.set()
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def stalled_socket(server: Daphne) -> socket.socket:
    """A connected socket that lets little pile up on either side of the wire: a small
    receive buffer, and a small MSS, which keeps the server's send buffer (autotuned from
    the MSS) near 1 MB instead of the 4 MB loopback allows."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    return sock


def seqs(ops: list[dict[str, Any]]) -> list[int]:
    return [op["seq"] for op in ops]


def mutation_ids(ops: list[dict[str, Any]]) -> list[str]:
    return [op["mutation"] for op in ops]
