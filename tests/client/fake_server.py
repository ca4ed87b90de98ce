"""A small protocol-v1 server for the client's tests, with scripted misbehaviour.

Two :class:`FakeServer` instances on one :class:`FakeLog` behave like two server
processes on one database: a client can fail over from one to the other and resume.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Frame = dict[str, Any]


@dataclass
class FakeStream:
    name: str
    epoch: str = "epoch-1"
    ops: list[Frame] = field(default_factory=list)
    objects: dict[tuple[str, Any], Frame] = field(default_factory=dict)
    trimmed_before: int = 0
    """Ops with a seq up to this one are gone: resuming from before it gets ``reset``."""

    @property
    def head(self) -> int:
        return self.ops[-1]["seq"] if self.ops else self.trimmed_before


class FakeLog:
    """The shared state of every server: streams, ops, stored mutation results."""

    def __init__(self) -> None:
        self.streams: dict[str, FakeStream] = {}
        self.results: dict[str, Frame] = {}
        self.applied: list[str] = []
        """Mutation ids in the order they made an op (a retry that replays adds nothing)."""
        self.servers: list[FakeServer] = []

    def stream(self, name: str) -> FakeStream:
        return self.streams.setdefault(name, FakeStream(name))

    async def commit(
        self,
        stream: str,
        model: str,
        pk: Any,
        op: str = "update",
        fields: Frame | None = None,
        *,
        mutation: str | None = None,
        deliver: bool = True,
    ) -> Frame:
        """Write one op; push it to subscribers unless ``deliver`` is false (a lost doorbell)."""
        log = self.stream(stream)
        key = (model, pk)
        fields = dict(fields or {})
        current = log.objects.get(key)
        version = (current["version"] if current else 0) + 1
        if op == "delete":
            log.objects.pop(key, None)
        else:
            merged = {**(current["fields"] if current and op == "update" else {}), **fields}
            log.objects[key] = {"model": model, "pk": pk, "version": version, "fields": merged}
        entry = {
            "stream": stream,
            "epoch": log.epoch,
            "seq": log.head + 1,
            "model": model,
            "pk": pk,
            "op": op,
            "fields": fields,
            "version": version,
            "mutation": mutation,
            "ts": "2026-11-24T15:04:05.123456Z",
        }
        log.ops.append(entry)
        if deliver:
            for server in self.servers:
                await server.push(stream, [entry])
        return entry

    def reset(self, stream: str, epoch: str) -> None:
        """A new epoch: the history is gone, the objects stay."""
        log = self.stream(stream)
        log.epoch, log.ops, log.trimmed_before = epoch, [], 0


@dataclass
class Conn:
    ws: ServerConnection
    number: int
    token: str | None
    origin: str | None
    headers: dict[str, str]
    subscriptions: set[str] = field(default_factory=set)


class FakeServer:
    """One process. The attributes below script how it misbehaves."""

    def __init__(
        self, log: FakeLog | None = None, *, heartbeat_ms: int = 10_000, max_frame_bytes=2**19
    ) -> None:
        self.log = log or FakeLog()
        self.log.servers.append(self)
        self.heartbeat_ms = heartbeat_ms
        self.max_frame_bytes = max_frame_bytes
        self.received: list[tuple[int, Frame]] = []
        self.conns: list[Conn] = []
        self._numbers = itertools.count(1)
        self._changed = asyncio.Condition()
        self._server: Server | None = None
        self.url = ""

        self.answer_pings = True
        self.handshake_status: int | None = None
        """Refuse handshakes with this HTTP status."""
        self.accept_token: Callable[[str | None], bool] | None = None
        """Tokens it refuses get an accepted connection closed with 4401."""
        self.close_on_hello: int | None = None
        self.welcome: Frame | None = {"protocol": 1}
        """Overrides of the ``welcome`` frame; ``None`` never answers ``hello``."""
        self.deny: set[str] = set()
        self.refuse_subscribe: list[Frame] = []
        """``error`` frames (without ``type`` and ``ref``) to answer the next subscribes."""
        self.hard_frame_limit: int | None = None
        """Frames longer than this close the connection with 1009 (whatever ``welcome`` said)."""
        self.oversized: list[str] = []
        self.drop_before_ack = 0
        """Mutate frames to apply and then lose the connection instead of acking."""
        self.refuse_mutate: list[Frame] = []
        """``error`` frames (without ``type`` and ``ref``) to answer the next mutate frames."""
        self.in_progress = 0
        """Mutate frames whose mutations answer ``in_progress`` without being applied."""
        self.busy: set[str] = set()
        """Mutation ids that answer ``in_progress`` once."""

    async def __aenter__(self) -> FakeServer:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            ping_interval=None,
            process_request=self._process_request,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/sync/ws/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.kill()

    async def kill(self) -> None:
        """Stop like a killed process: connections drop without a close frame."""
        if self._server is not None:
            for conn in self.live:
                conn.ws.transport.abort()
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def live(self) -> list[Conn]:
        return [c for c in self.conns if c.ws.close_code is None]

    def frames(self, kind: str, conn: int | None = None) -> list[Frame]:
        return [
            f for n, f in self.received if f.get("type") == kind and (conn is None or n == conn)
        ]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5) -> Any:
        """Wait until ``predicate()`` is truthy; it is checked whenever anything arrives."""
        async with asyncio.timeout(timeout), self._changed:
            result = predicate()
            while not result:
                await self._changed.wait()
                result = predicate()
            return result

    async def wait_frame(self, kind: str, conn: int | None = None, count: int = 1) -> Frame:
        """The ``count``-th frame of ``kind`` (on connection ``conn``), once it has arrived."""
        frames = await self.wait_for(lambda: len(self.frames(kind, conn)) >= count or None)
        assert frames
        return self.frames(kind, conn)[count - 1]

    async def drop(self, code: int | None = None) -> None:
        """Close every connection with ``code``, or lose it (no close frame) when None."""
        for conn in self.live:
            if code is None:
                conn.ws.transport.abort()
            else:
                await conn.ws.close(code, "scripted")

    async def push(self, stream: str, ops: list[Frame]) -> None:
        for conn in self.live:
            if stream in conn.subscriptions:
                await self._send(conn, {"type": "ops", "stream": stream, "ops": ops})

    async def send(self, frame: Frame) -> None:
        for conn in self.live:
            await self._send(conn, frame)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        if self.handshake_status is not None:
            return ws.respond(HTTPStatus(self.handshake_status), "refused\n")
        return None

    async def _send(self, conn: Conn, frame: Frame) -> None:
        await conn.ws.send(json.dumps(frame))

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        query = parse_qs(urlsplit(request.path).query)
        conn = Conn(
            ws,
            next(self._numbers),
            token=query.get("token", [None])[0],
            origin=request.headers.get("Origin"),
            headers=dict(request.headers.raw_items()),
        )
        self.conns.append(conn)
        await self._notify()
        if self.accept_token is not None and not self.accept_token(conn.token):
            await ws.close(4401, "token rejected")
            return
        try:
            async for raw in ws:
                if self.hard_frame_limit is not None and len(raw) > self.hard_frame_limit:
                    self.oversized.append(str(raw))
                    await ws.close(1009, "too big")
                    break
                frame = json.loads(raw)
                self.received.append((conn.number, frame))
                await self._answer(conn, frame)
                await self._notify()
        except ConnectionClosed:
            pass
        finally:
            await self._notify()

    async def _answer(self, conn: Conn, frame: Frame) -> None:
        kind, ref = frame["type"], frame.get("ref")
        if kind == "hello":
            if self.close_on_hello is not None:
                await self._send(conn, {"type": "error", "code": "protocol_unsupported"})
                await conn.ws.close(self.close_on_hello, "bye")
                return
            if self.welcome is None:
                return
            await self._send(
                conn,
                {
                    "type": "welcome",
                    "heartbeat_ms": self.heartbeat_ms,
                    "max_frame_bytes": self.max_frame_bytes,
                    **self.welcome,
                },
            )
        elif kind == "ping":
            if self.answer_pings:
                await self._send(conn, {"type": "pong", "ts": frame["ts"]})
        elif kind == "subscribe":
            await self._subscribe(conn, frame["stream"], frame.get("after"), ref)
        elif kind == "unsubscribe":
            conn.subscriptions.discard(frame["stream"])
            await self._send(conn, {"type": "unsubscribed", "stream": frame["stream"], "ref": ref})
        elif kind == "mutate":
            await self._mutate(conn, frame["mutations"], ref)

    async def _subscribe(self, conn: Conn, name: str, after: Frame | None, ref: Any) -> None:
        if self.refuse_subscribe:
            error = self.refuse_subscribe.pop(0)
            await self._send(conn, {"type": "error", "message": "", **error, "ref": ref})
            return
        if name in self.deny:
            await self._send(
                conn,
                {
                    "type": "error",
                    "code": "permission_denied",
                    "message": "no",
                    "stream": name,
                    "ref": ref,
                },
            )
            return
        log = self.log.stream(name)
        if after is not None:
            reason = None
            if after["epoch"] != log.epoch:
                reason = "epoch_changed"
            elif after["seq"] > log.head:
                reason = "ahead_of_head"
            elif after["seq"] < log.trimmed_before:
                reason = "trimmed"
            if reason is not None:
                conn.subscriptions.discard(name)
                await self._send(
                    conn,
                    {"type": "reset", "stream": name, "epoch": log.epoch, "reason": reason},
                )
                return
        conn.subscriptions.add(name)
        if after is None:
            await self._send(
                conn,
                {
                    "type": "snapshot",
                    "stream": name,
                    "epoch": log.epoch,
                    "seq": log.head,
                    "objects": list(log.objects.values()),
                },
            )
        else:
            missed = [op for op in log.ops if op["seq"] > after["seq"]]
            if missed:
                await self._send(conn, {"type": "ops", "stream": name, "ops": missed})
        await self._send(
            conn,
            {
                "type": "subscribed",
                "stream": name,
                "epoch": log.epoch,
                "head": log.head,
                "ref": ref,
            },
        )

    async def _mutate(self, conn: Conn, mutations: list[Frame], ref: Any) -> None:
        if self.refuse_mutate:
            error = self.refuse_mutate.pop(0)
            await self._send(conn, {"type": "error", "message": "", **error, "ref": ref})
            return
        if self.in_progress:
            self.in_progress -= 1
            results = [_in_progress(m["id"]) for m in mutations]
        else:
            results = [await self._apply(m) for m in mutations]
        if self.drop_before_ack:
            self.drop_before_ack -= 1
            conn.ws.transport.abort()
            return
        await self._send(conn, {"type": "ack", "results": results, "ref": ref})

    async def _apply(self, mutation: Frame) -> Frame:
        if mutation["id"] in self.busy:
            self.busy.discard(mutation["id"])
            return _in_progress(mutation["id"])
        stored = self.log.results.get(mutation["id"])
        if stored is not None:
            return stored
        op = await self.log.commit(
            mutation["stream"],
            mutation["model"],
            mutation["pk"],
            mutation["op"],
            mutation["fields"],
            mutation=mutation["id"],
        )
        self.log.applied.append(mutation["id"])
        obj = self.log.stream(mutation["stream"]).objects.get((mutation["model"], mutation["pk"]))
        obj = json.loads(json.dumps(obj))  # as of this op, not as of later ones
        result = {
            "id": mutation["id"],
            "status": "applied",
            "seq": op["seq"],
            "version": op["version"],
            "object": obj,
            "error": None,
        }
        self.log.results[mutation["id"]] = result
        return result


def _in_progress(mutation_id: str) -> Frame:
    return {
        "id": mutation_id,
        "status": "rejected",
        "seq": None,
        "version": None,
        "object": None,
        "error": {"code": "in_progress", "message": "still running", "retry": True},
    }


def new_id() -> str:
    return str(uuid.uuid4())
