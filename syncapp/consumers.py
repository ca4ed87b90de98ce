"""The WebSocket transport: protocol version 1 (docs/protocol.md) over Channels.

A thin layer: frames are decoded and validated once, then handed to the core (the
mutation path, the history reader, the permission hook). Live ops come from the
process's hub, already encoded, and go out through one bounded outbox per connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import threading
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from syncapp import encoding, limits, mutations, permissions, presence
from syncapp.conf import conf
from syncapp.exceptions import PayloadTooLarge, SyncError
from syncapp.hub import Batch, Frames, Hub, get_hub
from syncapp.middleware import AUTH_ERROR, SERVER_SEND
from syncapp.protocol import (
    PROTOCOL_VERSION,
    ClientFrame,
    HelloFrame,
    MutateFrame,
    PingFrame,
    PresenceFrame,
    Ref,
    SubscribeFrame,
    UnsubscribeFrame,
)
from syncapp.ratelimit import TokenBucket
from syncapp.subscriptions import Subscription

logger = logging.getLogger("syncapp.consumers")

_decoder = msgspec.json.Decoder(ClientFrame)

# Close codes (docs/protocol.md).
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_PROTOCOL = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TIMEOUT = 4408
CLOSE_SLOW = 4503
# Refused past a connection cap, where the server cannot answer the handshake with an
# HTTP status (daphne): 1013 "try again later" for the process's cap, 4429 for the user's.
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_MANY_CONNECTIONS = 4429
# Seconds a client refused by a connection cap is told to wait (Retry-After).
CAP_RETRY_AFTER = 5
# The ASGI extension that lets a consumer answer a handshake with an HTTP response.
DENIAL_EXTENSION = "websocket.http.response"
# Seconds a close frame may take to get past what a slow client has not read yet.
CLOSE_GRACE = 5.0
# Mutate frames a connection may have waiting to be applied before it stops reading.
MUTATE_QUEUE = 8


class FrameError(SyncError):
    """A frame that cannot be accepted; answered with an ``error`` frame."""


def decode(text: str) -> ClientFrame:
    """One client frame, validated; :class:`FrameError` with a code otherwise."""
    try:
        frame: ClientFrame = _decoder.decode(text)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "`$.type`" in message or "missing required field `type`" in message:
            raise FrameError(message, code="unknown_type") from exc
        raise FrameError(message, code="invalid") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise FrameError(f"Malformed JSON: {exc}", code="parse_error") from exc
    except RecursionError as exc:
        raise FrameError("The JSON is nested too deeply.", code="too_deep") from exc
    return frame


class ServerSocket:
    """What the ASGI server holds for this connection but could not write yet.

    Uvicorn applies backpressure to ``send()`` itself. Daphne does not: it hands every
    message to Twisted, which buffers without limit, so a client that stops reading
    would grow the server's memory for ever. Daphne's ASGI ``send`` is
    ``partial(server.handle_reply, protocol)`` (kept in the scope by the outermost
    middleware, before session middleware wraps it), so its protocol and transport are
    reachable: reading the transport's buffer is the only way to see such a client.
    """

    def __init__(self, send: Any) -> None:
        self.protocol: Any = (getattr(send, "args", None) or (None,))[0]
        self.transport: Any = getattr(self.protocol, "transport", None)
        self.direct = _writable_directly(self.protocol, self.transport)

    def write_text(self, text: str, wire: dict[str, bytes]) -> bool:
        """Write ``text`` as one WebSocket text frame onto daphne's TCP socket; False
        when it has to go through the server's ``send`` instead.

        Through daphne a frame costs autobahn's ``sendMessage`` (checks, counters, a
        header built per socket) and Twisted's buffered write (the socket registered
        with the event loop, written in the next turn, unregistered). A frame that many
        connections share is framed once (``wire``, kept for one flush) and written at
        once when nothing is waiting before it; what the socket does not take, and
        any frame behind unsent data, goes through Twisted's buffer, in order."""
        protocol, transport = self.protocol, self.transport
        if (
            not self.direct
            or protocol.state != protocol.STATE_OPEN
            or protocol.send_state != protocol.SEND_STATE_GROUND
            or protocol.send_queue
            or protocol._perMessageCompress is not None
            or not transport.connected
            or transport.disconnecting
            or transport.TLS
        ):
            return False
        data = wire.get(text)
        if data is None:
            data = wire[text] = text_frame(text)
        if not transport._tempDataLen and transport.offset == len(transport.dataBuffer):
            written = transport.writeSomeData(data)
            if not isinstance(written, int):
                written = 0  # a lost connection: Twisted's own write finds it out
            if written == len(data):
                return True
            data = data[written:]
        transport.write(data)
        return True

    def backlog(self) -> int:
        buffer = getattr(self.transport, "dataBuffer", None)
        if not isinstance(buffer, bytes):
            return 0
        offset = int(getattr(self.transport, "offset", 0))
        return len(buffer) - offset + int(getattr(self.transport, "_tempDataLen", 0))

    def inbound(self) -> int:
        """Frames from the client that the server queued for the consumer (daphne's queue
        has no bound: a client that sends faster than it is served would fill memory)."""
        queue = getattr(self.protocol, "application_queue", None)
        return queue.qsize() if isinstance(queue, asyncio.Queue) else 0

    def pause_reading(self) -> bool:
        """Stop reading from the client's socket (TCP pushes back on it); False if this
        server's transport cannot."""
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is None:
            return False
        pause()
        return True

    def resume_reading(self) -> None:
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()

    def allow_close_behind_backlog(self, seconds: float) -> None:
        """Give the close frame time to get through what the client has not read yet
        (autobahn drops the connection 1 s after a close frame by default)."""
        if hasattr(self.protocol, "closeHandshakeTimeout"):
            self.protocol.closeHandshakeTimeout = seconds


class AsyncioSocket(ServerSocket):
    """A connection of uvicorn's ``websockets`` protocols (the sans-I/O one, uvicorn's
    default, and the legacy one, ``--ws websockets``) on an asyncio transport. Their ASGI
    ``send`` is a method of the protocol, so the protocol and its transport are reachable.

    Through uvicorn a frame costs the ASGI ``send`` coroutine, the protocol's checks and
    framing per socket, and the transport's write. A frame that many connections share is
    framed once (``wire``, kept for one flush) and handed to the transport, which writes
    at once what the socket takes and buffers the rest in order, behind anything it
    holds. While the transport is paused (its buffer over the high-water mark) frames go
    through the server's ``send``, which waits for the client.
    """

    def __init__(self, protocol: Any, transport: Any) -> None:
        self.protocol = protocol
        self.transport = transport
        self.sansio = hasattr(protocol, "conn")
        self.direct = True
        # Loaded by uvicorn's protocol module, which needs the websockets library.
        self.open_state = sys.modules["websockets.protocol"].State.OPEN

    def backlog(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def write_text(self, text: str, wire: dict[str, bytes]) -> bool:
        protocol, transport = self.protocol, self.transport
        if transport.is_closing() or protocol.initial_response is not None:
            return False
        if self.sansio:
            conn = protocol.conn
            if (
                not protocol.handshake_complete
                or protocol.close_sent
                or protocol.disconnected
                or not protocol.writable.is_set()
                or conn.state is not self.open_state
                or conn.extensions
                or conn.expect_continuation_frame
            ):
                return False
        elif (
            protocol.state is not self.open_state
            or protocol.extensions
            or protocol._paused
            or protocol.closed_event.is_set()
            or not protocol.handshake_completed_event.is_set()
        ):
            return False
        data = wire.get(text)
        if data is None:
            data = wire[text] = text_frame(text)
        transport.write(data)
        return True


def server_socket(send: Any) -> ServerSocket:
    """What this connection's server lets syncapp see of its socket: daphne's Twisted
    transport, uvicorn's asyncio one, or nothing (any other server, or a ``send`` wrapped
    by middleware): then frames go through ``send``, and only the server's own
    backpressure holds a client that does not read."""
    protocol = getattr(send, "__self__", None)
    transport = getattr(protocol, "transport", None)
    if _uvicorn_websockets(protocol, transport):
        return AsyncioSocket(protocol, transport)
    return ServerSocket(send)


def _uvicorn_websockets(protocol: Any, transport: Any) -> bool:
    """uvicorn's sans-I/O or legacy ``websockets`` protocol on asyncio's own socket
    transport: not TLS (which writes through its own buffer), and not uvloop's transport,
    which syncapp's tests do not run."""
    module = type(protocol).__module__
    if module not in _UVICORN_PROTOCOLS or transport is None:
        return False
    selector = sys.modules.get("asyncio.selector_events")
    return (
        selector is not None
        and isinstance(transport, selector._SelectorSocketTransport)
        and transport.get_extra_info("sslcontext") is None
    )


_UVICORN_PROTOCOLS = frozenset(
    {
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "uvicorn.protocols.websockets.websockets_impl",
    }
)


def _writable_directly(protocol: Any, transport: Any) -> bool:
    """Whether frames may be written to this connection's socket as
    :meth:`ServerSocket.write_text` does: daphne's autobahn protocol on a plain Twisted
    TCP connection (not TLS, which Twisted writes through its own buffer)."""
    tcp = sys.modules.get("twisted.internet.tcp")
    websocket = sys.modules.get("autobahn.websocket.protocol")
    return (
        tcp is not None
        and websocket is not None
        and isinstance(protocol, websocket.WebSocketServerProtocol)
        and type(transport) is tcp.Server
    )


@dataclass(slots=True, eq=False)
class MutateQueue:
    """A connection's mutate frames while it has any: the queue, the takers that apply
    them in the worker thread (at most two: one applying, one waiting behind it), their
    answers in order, and the mutator task that sends those."""

    frames: deque[MutateFrame | dict[str, Any]] = field(default_factory=deque)
    takers: list[asyncio.Task[None]] = field(default_factory=list)
    answered: deque[dict[str, Any]] = field(default_factory=deque)
    taking: threading.Lock = field(default_factory=threading.Lock)
    mutated: asyncio.Event = field(default_factory=asyncio.Event)  # a taker is done
    mutator: asyncio.Task[None] | None = None


def error_frame(code: str, message: str, ref: Ref | None = None, **extra: Any) -> dict[str, Any]:
    """An ``error`` frame: its code and message, what else it carries, and the ``ref`` of
    the frame it answers."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message, **extra}
    if ref is not None:
        frame["ref"] = ref
    return frame


def text_frame(text: str) -> bytes:
    """``text`` as a final, unmasked WebSocket text frame (RFC 6455 section 5.2), as a
    server sends it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


class SyncConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """``<prefix>ws/``: subscribe, resume, mutate, ping."""

    # Live ops come through the process's hub, not through a channel per connection.
    channel_layer_alias = None

    hub: Hub
    user: Any
    client_id: str | None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections here on every message, a thread hop
        # each time; database_sync_to_async does it around each real database call.
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close with ``code``. daphne's WebSocket layer (autobahn) only lets applications
        close with 1000 or 3000-4999: the protocol's 1009, 1011, 1012 and 1013 would raise
        inside it, and the client would get 1011. Those go out as the close frame itself
        (tests/live/test_hostile_wire.py)."""
        socket = getattr(self, "socket", None)
        send_frame = getattr(socket and socket.protocol, "sendCloseFrame", None)
        reserved = isinstance(code, int) and not isinstance(code, bool) and code < 3000
        if reserved and code != 1000 and send_frame is not None:
            send_frame(code=code, reasonUtf8=(reason or "").encode()[:123] or None, isReply=False)
            return
        await super().close(code, reason)

    # lifecycle

    async def connect(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}
        self.starting: dict[str, asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.client_id = None
        self.closing = False
        self.user = self.scope.get("user") or AnonymousUser()
        self.hub = await get_hub()
        self.last_seen = self.hub.timer()
        # Frames waiting for the writer; made by push(), dropped once sent (an empty
        # deque is ~600 bytes, and most connections are idle most of the time).
        self.outbox: deque[str | Batch] | None = None
        self.outbox_bytes = 0
        self.flush_scheduled = False
        self.socket = server_socket(self.scope.get(SERVER_SEND))
        # Frames go straight to the server: Channels' send and its session middleware's
        # (which reads the session on every message) add nothing to a WebSocket frame.
        self._server_send = self.scope.get(SERVER_SEND) or self.base_send
        self.reading_paused = False
        # Started by push() when there is something to send, gone when all is sent: an
        # idle connection holds no task (docs/benchmarks.md, memory).
        self.writer: asyncio.Task[None] | None = None
        self.mutation_bucket = TokenBucket(conf.MUTATION_RATE, conf.MUTATION_BURST, self.hub.timer)
        # Mutate frames while there are any (made by the first, dropped once all are
        # answered: an idle connection holds none of it).
        self.mutating: MutateQueue | None = None
        self.presence_bucket = TokenBucket(
            conf.PRESENCE_MAX_RATE, conf.PRESENCE_BURST, self.hub.timer
        )
        # This connection's member id in every stream's presence.
        self.connection_id = secrets.token_hex(8)
        client = self.scope.get("client") or (None,)
        self.ident = limits.identity(self.user, client[0])
        if not await self._take_slots():
            return
        await self.accept()
        if self.scope.get(AUTH_ERROR):
            self.closing = True  # frames already on their way are not acted on
            await self.close(CLOSE_UNAUTHORIZED)
            return
        self.hub.connections.add(self)
        self.hub.watch_heartbeats()

    async def _take_slots(self) -> bool:
        """Take a slot of the process's and of the user's connection caps, or refuse the
        handshake: with 503/429 and Retry-After where the server can answer it with an
        HTTP response, else by closing at once with 1013/4429 after an ``error`` frame
        that says why. False when refused."""
        if not limits.reserve_process_slot(self.connection_id):
            await self._refuse(
                503,
                CLOSE_TRY_AGAIN_LATER,
                "server_busy",
                f"This server holds its most connections ({conf.MAX_CONNECTIONS}).",
            )
            return False
        self.slots_held = True
        if not await limits.acquire_user_slot(self.ident, self.connection_id):
            await self._release_slots()
            await self._refuse(
                429,
                CLOSE_TOO_MANY_CONNECTIONS,
                "too_many_connections",
                f"You hold the most connections allowed ({conf.MAX_USER_CONNECTIONS}).",
            )
            return False
        return True

    async def _refuse(self, status: int, close_code: int, code: str, message: str) -> None:
        self.closing = True
        logger.info("Refused a WebSocket of %s: %s", self.ident, code)
        if DENIAL_EXTENSION in (self.scope.get("extensions") or {}):
            body = encoding.dumps(
                {"type": "about:blank", "status": status, "code": code, "detail": message}
            ).encode()
            headers = [
                (b"content-type", b"application/problem+json"),
                (b"retry-after", str(CAP_RETRY_AFTER).encode()),
            ]
            raw_send = super(AsyncWebsocketConsumer, self).send  # the ASGI send itself
            await raw_send(
                {"type": "websocket.http.response.start", "status": status, "headers": headers}
            )
            await raw_send({"type": "websocket.http.response.body", "body": body})
            return
        # daphne answers a refused handshake with a bare 403, which clients must take as
        # final (a foreign Origin): accept, say why, close with a code worth a retry.
        await self.accept()
        frame = error_frame(code, message, retry_after_ms=CAP_RETRY_AFTER * 1000)
        await self.send(text_data=encoding.dumps(frame))
        await self.close(close_code, message[:120])

    async def _release_slots(self) -> None:
        if getattr(self, "slots_held", False):
            self.slots_held = False
            limits.release_process_slot(self.connection_id)
            await limits.release_user_slot(self.ident, self.connection_id)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        self.outbox = None  # the client is gone: nothing more to write
        self.outbox_bytes = 0
        await self._release_slots()
        hub = getattr(self, "hub", None)
        if hub is not None:
            hub.connections.discard(self)
        for task in list(getattr(self, "tasks", ())):
            task.cancel()
        for sub in list(getattr(self, "subscriptions", {}).values()):
            sub.close()
        if hub is not None and hasattr(self, "connection_id"):
            await hub.presence.leave_all(self.connection_id)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Connection task failed", exc_info=task.exception())
            self.closing = True  # frames already on their way are not acted on
            self.spawn(self.close(CLOSE_SERVER_ERROR))

    # outgoing

    def backlog(self) -> int:
        """Bytes waiting for this client: in the outbox and in the server's buffer."""
        return self.outbox_bytes + self.socket.backlog()

    def refused(self) -> int:
        """Bytes the client has not taken when offered: what the server holds unsent, and
        the outbox while a send waits for the client. The outbox of a connection whose
        flush has not come yet is not counted: the client was not offered it."""
        waiting = self.writer is not None and not self.writer.done()
        return self.socket.backlog() + (self.outbox_bytes if waiting else 0)

    def push(self, item: str | Batch) -> None:
        """Queue a frame, or a batch of live ops (which may go out in one ``ops`` frame with
        the batches queued after it). A client that keeps up takes any frame, however
        large; one that let more than OUTBOX_BYTES pile up is closed with 4503 (reconnect
        and resume)."""
        if self.closing:
            return
        if self.refused() > conf.OUTBOX_BYTES:
            self.fell_behind()
            return
        if self.outbox is None:
            self.outbox = deque()
        self.outbox.append(item)
        self.outbox_bytes += len(item) if isinstance(item, str) else len(item.frame())
        if not self.flush_scheduled and (self.writer is None or self.writer.done()):
            self.flush_scheduled = True
            self.hub.schedule_flush(self)

    def fell_behind(self) -> None:
        """Close with 4503: the client should reconnect and resume from its position."""
        self.closing = True
        self.outbox = None
        self.outbox_bytes = 0
        self.socket.allow_close_behind_backlog(CLOSE_GRACE)
        self.spawn(self.close(CLOSE_SLOW))

    async def writable(self) -> bool:
        """Wait until what is queued for this client is mostly out: a catch-up paces
        itself with it, so a long replay never trips the limit by itself. A client that
        takes no part of it for a heartbeat timeout has fallen behind. False once the
        connection is closing."""
        timeout = conf.HEARTBEAT_MS / 1000 * conf.HEARTBEAT_TIMEOUT_INTERVALS
        deadline = self.hub.timer() + timeout
        while not self.closing and self.backlog() > conf.OUTBOX_BYTES // 2:
            if self.hub.timer() > deadline:
                self.fell_behind()
                break
            await asyncio.sleep(0.01)
        return not self.closing

    def push_frame(self, frame: dict[str, Any]) -> None:
        self.push(encoding.dumps(frame))

    def push_error(self, code: str, message: str, ref: Ref | None = None, **extra: Any) -> None:
        self.push_frame(error_frame(code, message, ref, **extra))

    def flush(self, frames: Frames) -> None:
        """Send what is queued: called by the hub once per turn of the event loop for every
        connection that has something to send, so that ops delivered in the same turn go
        out in one frame.

        The server's send is started here, not in a task: daphne's and (unless the socket
        pushes back) uvicorn's complete without waiting. A send that has to wait is
        finished by the connection's writer task, which then sends the rest.
        ``frames`` holds the coalesced frames of this turn, built once for every
        connection that queued the same batches."""
        self.flush_scheduled = False
        if self.writer is not None and not self.writer.done():
            return  # the writer sends the rest
        socket, wire = self.socket, frames.wire
        while self.outbox:
            text = self._next(frames)
            if socket.direct and socket.write_text(text, wire):
                continue
            try:
                sending = self._server_send({"type": "websocket.send", "text": text})
                waiting = sending.send(None)
            except StopIteration:
                continue
            except Exception as exc:
                self._send_failed(exc)
                return
            self.writer = self.spawn(self._finish(sending, waiting))
            return
        self.outbox = None

    def _next(self, frames: Frames) -> str:
        """The next frame out of the outbox: a frame as it was queued, or the ops of
        consecutive batches of one stream, up to OUTBOX_BYTES / 4, in one ``ops`` frame."""
        assert self.outbox
        item = self.outbox.popleft()
        if isinstance(item, str):
            self.outbox_bytes -= len(item)
            return item
        run, size = [item], len(item.frame())
        limit = conf.OUTBOX_BYTES // 4
        while self.outbox:
            after = self.outbox[0]
            if (
                isinstance(after, str)
                or after.stream != item.stream
                or after.epoch != item.epoch
                or after.first != run[-1].last + 1
                or size + len(after.frame()) > limit
            ):
                break
            self.outbox.popleft()
            run.append(after)
            size += len(after.frame())
        self.outbox_bytes -= size
        if len(run) == 1:
            return item.frame()
        key = (item.stream, item.epoch, item.first, run[-1].last)
        text = frames.get(key)
        if text is None:
            ops = [op for batch in run for op in batch.ops]
            text = frames[key] = Batch(item.stream, item.epoch, key[2], key[3], ops).frame()
        return text

    async def _finish(self, sending: Coroutine[Any, Any, Any], waiting: Any) -> None:
        """Finish a send that had to wait, then send the rest."""
        await _resume(sending, waiting)
        while self.outbox:
            await self._server_send({"type": "websocket.send", "text": self._next(Frames())})
        self.outbox = None

    def _send_failed(self, exc: Exception) -> None:
        self.outbox = None
        self.outbox_bytes = 0
        logger.error("Could not write to a WebSocket", exc_info=exc)
        self.closing = True
        self.spawn(self.close(CLOSE_SERVER_ERROR))

    # incoming

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_seen = self.hub.timer()
        if self.closing:
            return
        # Backpressure: a client that sends faster than it is served is not read for a while.
        if (
            not self.reading_paused
            and self.socket.inbound() > conf.INBOUND_FRAMES
            and self.socket.pause_reading()
        ):
            self.reading_paused = True
            self.spawn(self._resume_reading())
        if text_data is None:
            await self._after_mutations()
            self.push_error(
                "binary_unsupported", "Frames are JSON text; binary frames are refused."
            )
            return
        try:
            too_big = len(text_data) > conf.MAX_FRAME_BYTES or (
                len(text_data.encode()) > conf.MAX_FRAME_BYTES
            )
        except UnicodeEncodeError:  # lone surrogates: not UTF-8 (tests/test_hostile_input.py)
            await self._after_mutations()
            self.push_error("parse_error", "The frame is not valid UTF-8.")
            return
        if too_big:
            self.closing = True
            await self.close(CLOSE_TOO_BIG)
            return
        try:
            frame = decode(text_data)
        except FrameError as exc:
            await self._after_mutations()
            self.push_error(exc.error_code, exc.message)
            return
        if not isinstance(frame, MutateFrame):
            await self._after_mutations()
        try:
            await self.handle(frame)
        except SyncError as exc:
            self.push_error(exc.error_code, exc.message, frame.ref)
        except Exception:
            # A bug or a database failure fails this frame, not the connection.
            logger.exception("Could not handle a %s frame", type(frame).__name__)
            stream = getattr(frame, "stream", None)
            extra = {"stream": stream} if stream else {}
            self.push_error(
                "internal_error", "The server failed to handle this frame.", frame.ref, **extra
            )

    async def handle(self, frame: ClientFrame) -> None:
        if isinstance(frame, HelloFrame):
            return self.hello(frame)
        if self.client_id is None:
            raise FrameError("Send hello first.", code="hello_required")
        if isinstance(frame, PingFrame):
            return self.pong(frame)
        if isinstance(frame, SubscribeFrame):
            return await self.subscribe(frame)
        if isinstance(frame, UnsubscribeFrame):
            return self.unsubscribe(frame)
        if isinstance(frame, PresenceFrame):
            return await self.set_presence(frame)
        return await self.mutate(frame)

    def hello(self, frame: HelloFrame) -> None:
        if self.client_id is not None:
            self.push_error("already_hello", "hello was already sent.", frame.ref)
            return
        if frame.protocol != PROTOCOL_VERSION:
            self.push_error(
                "protocol_unsupported",
                f"This server speaks protocol {PROTOCOL_VERSION}.",
                frame.ref,
            )
            self.closing = True
            self.spawn(self._close_after_flush(CLOSE_PROTOCOL))
            return
        self.client_id = frame.client_id
        welcome: dict[str, Any] = {
            "type": "welcome",
            "protocol": PROTOCOL_VERSION,
            "heartbeat_ms": conf.HEARTBEAT_MS,
            "max_frame_bytes": conf.MAX_FRAME_BYTES,
            "max_batch": conf.MAX_BATCH,
            "connection_id": self.connection_id,
            # The server's time: a client whose clock is behind takes it in, so that its
            # lww stamps are not older than what it is about to load (docs/conflicts.md).
            "time": encoding.iso(timezone.now()),
        }
        if frame.ref is not None:
            welcome["ref"] = frame.ref
        self.push_frame(welcome)

    def pong(self, frame: PingFrame) -> None:
        reply: dict[str, Any] = {"type": "pong", "ts": frame.ts}
        if frame.ref is not None:
            reply["ref"] = frame.ref
        self.push_frame(reply)

    async def subscribe(self, frame: SubscribeFrame) -> None:
        stream = frame.stream
        wait = await limits.atake("read", self.ident)
        if wait:
            self.push_error(
                "rate_limited",
                "Too many subscribes and reads; retry later.",
                frame.ref,
                stream=stream,
                retry_after_ms=int(wait * 1000) + 1,
            )
            return
        allowed = await database_sync_to_async(permissions.get_permission().can_read)(
            self.user, stream
        )
        self._drop(stream)  # a new subscribe replaces the old one, refused or not
        if not allowed:
            code = "permission_denied" if self.user.is_authenticated else "not_authenticated"
            self.push_error(code, f"You may not read {stream}.", frame.ref, stream=stream)
            return
        if len(self.subscriptions) >= conf.MAX_SUBSCRIPTIONS:
            self.push_error(
                "too_many_subscriptions",
                f"A connection holds at most {conf.MAX_SUBSCRIPTIONS} subscriptions.",
                frame.ref,
                stream=stream,
            )
            return
        sub = self.subscriptions[stream] = Subscription(self, stream)
        task = self.spawn(sub.start(frame.after, frame.ref))
        self.starting[stream] = task

        def started(done: asyncio.Task[None]) -> None:
            if self.starting.get(stream) is done:  # not a newer subscribe's task
                del self.starting[stream]

        task.add_done_callback(started)

    def unsubscribe(self, frame: UnsubscribeFrame) -> None:
        if frame.stream not in self.subscriptions:
            self.push_error(
                "not_subscribed",
                f"Not subscribed to {frame.stream}.",
                frame.ref,
                stream=frame.stream,
            )
            return
        self._drop(frame.stream)
        reply: dict[str, Any] = {"type": "unsubscribed", "stream": frame.stream}
        if frame.ref is not None:
            reply["ref"] = frame.ref
        self.push_frame(reply)

    def _drop(self, stream: str) -> None:
        task = self.starting.pop(stream, None)
        if task is not None:
            task.cancel()
        sub = self.subscriptions.pop(stream, None)
        if sub is not None:
            sub.close()
            self.spawn(self.hub.presence.leave(stream, self.connection_id))

    def end_subscription(self, sub: Subscription) -> None:
        """Called by a subscription that reset or lost its access."""
        if self.subscriptions.get(sub.stream) is sub:
            self._drop(sub.stream)
        else:
            sub.close()

    async def set_presence(self, frame: PresenceFrame) -> None:
        if frame.stream not in self.subscriptions:
            self.push_error(
                "not_subscribed",
                f"Subscribe to {frame.stream} before announcing presence there.",
                frame.ref,
                stream=frame.stream,
            )
            return
        if len(encoding.dumps(frame.state)) > conf.PRESENCE_MAX_BYTES:
            self.push_error(
                "too_large",
                f"A presence state is at most {conf.PRESENCE_MAX_BYTES} bytes of JSON.",
                frame.ref,
                stream=frame.stream,
            )
            return
        wait = self.presence_bucket.take() or await limits.atake("presence", self.ident)
        if wait:
            self.push_error(
                "rate_limited",
                "Too many presence frames.",
                frame.ref,
                stream=frame.stream,
                retry_after_ms=int(wait * 1000) + 1,
            )
            return
        user = await database_sync_to_async(presence.describe)(self.user)
        info = {"user": user, "client_id": self.client_id}
        await self.hub.presence.set(frame.stream, self.connection_id, info, frame.state)

    async def mutate(self, frame: MutateFrame) -> None:
        wait = self.mutation_bucket.take() or await limits.atake("mutate", self.ident)
        if wait:
            refusal = error_frame(
                "rate_limited",
                "Too many mutate frames; retry later with the same ids.",
                frame.ref,
                retry_after_ms=int(wait * 1000) + 1,
            )
            if self.mutating is not None:
                self.mutating.frames.append(refusal)  # after the acks of the frames before it
            else:
                self.push_frame(refusal)
            return
        # Taken from the queue by the connection's takers in the worker thread, so that
        # frames that arrive while a batch is applied are applied together (group commit
        # across frames, each still acked on its own, in order); answered by its mutator.
        # A client that queues more than MUTATE_QUEUE frames waits.
        state = self.mutating
        if state is None:
            state = self.mutating = MutateQueue()
            state.mutator = self.spawn(self._apply_queued(state))
        state.frames.append(frame)
        if len(state.takers) < 2:
            state.takers.append(self.spawn(database_sync_to_async(self._take)(state)))
        while state is self.mutating and len(state.frames) > MUTATE_QUEUE:
            state.mutated.clear()
            await state.mutated.wait()

    async def _after_mutations(self) -> None:
        """Wait until the mutate frames before this one are answered: answers keep the
        order of the frames (only consecutive mutate frames are applied together)."""
        state = self.mutating
        if state is not None and state.mutator is not None and not state.mutator.done():
            await asyncio.wait([state.mutator])

    async def _apply_queued(self, state: MutateQueue) -> None:
        """Answer the queued mutate frames in order, as the takers (:meth:`_take`) apply
        them. While a taker applies a batch in the worker thread, the next one waits
        behind it there: the thread goes on to the frames that came meanwhile as soon as
        the batch is done, while this task sends its answers."""
        while state.takers:
            await asyncio.wait([state.takers[0]])
            del state.takers[0]
            while state.answered:
                self.push_frame(state.answered.popleft())
            state.mutated.set()
            if state.frames and not self.closing and len(state.takers) < 2:
                state.takers.append(self.spawn(database_sync_to_async(self._take)(state)))
        # Frames still queued when the connection closes are not applied: their ids are
        # retried on the next connection (idempotency keys).
        self.mutating = None
        state.mutated.set()

    def _take(self, state: MutateQueue) -> None:
        """In the worker thread: take the frames queued now, consecutive mutate frames
        together up to MAX_BATCH mutations (a larger frame alone, refused by
        :func:`mutations.apply`), apply them, and queue their answers; a refusal queued
        behind them (``rate_limited``) is answered after them. Takers take in turn."""
        with state.taking:
            queue = state.frames
            while queue and not self.closing:
                first = queue.popleft()
                if isinstance(first, dict):
                    state.answered.append(first)  # a refusal queued behind earlier frames
                    continue
                group, size = [first], len(first.mutations)
                while queue:
                    after = queue[0]
                    if isinstance(after, dict) or size + len(after.mutations) > conf.MAX_BATCH:
                        break
                    queue.popleft()
                    group.append(after)
                    size += len(after.mutations)
                state.answered.extend(self._apply_group(group))
                return

    def _apply_group(self, group: list[MutateFrame]) -> list[dict[str, Any]]:
        """One :func:`mutations.apply` for the frames of ``group``; an answer each."""
        batch = [mutation for frame in group for mutation in frame.mutations]
        try:
            results = mutations.apply(batch, user=self.user, client_id=self.client_id, source="ws")
        except PayloadTooLarge as exc:
            return [error_frame(exc.error_code, exc.message, frame.ref) for frame in group]
        except Exception:
            # A bug or a database failure fails these frames, not the connection.
            logger.exception("Could not apply %s mutate frame(s)", len(group))
            return [
                error_frame("internal_error", "The server failed to handle this frame.", frame.ref)
                for frame in group
            ]
        answers: list[dict[str, Any]] = []
        start = 0
        for frame in group:
            end = start + len(frame.mutations)
            ack: dict[str, Any] = {"type": "ack", "results": results[start:end]}
            if frame.ref is not None:
                ack["ref"] = frame.ref
            answers.append(ack)
            start = end
        return answers

    async def _resume_reading(self) -> None:
        try:
            while not self.closing and self.socket.inbound() > conf.INBOUND_FRAMES // 2:
                await asyncio.sleep(0.01)
        finally:
            self.reading_paused = False
            self.socket.resume_reading()

    # heartbeats

    def check_heartbeat(self, now: float) -> tuple[str, str] | None:
        """Close a connection silent for too long. Called by the hub every half heartbeat;
        returns this connection's user slot for the hub to renew with the others' (the
        slot outlives three of these sweeps)."""
        limit = conf.HEARTBEAT_MS / 1000 * conf.HEARTBEAT_TIMEOUT_INTERVALS
        if not self.closing and now - self.last_seen > limit:
            self.closing = True
            self.spawn(self.close(CLOSE_TIMEOUT))
        elif not self.closing and conf.MAX_USER_CONNECTIONS is not None:
            return (self.ident, self.connection_id)
        return None

    async def _close_after_flush(self, code: int) -> None:
        while self.outbox or (self.writer is not None and not self.writer.done()):
            if self.writer is not None and not self.writer.done():
                await asyncio.wait([self.writer])
            else:
                await asyncio.sleep(0.005)  # the hub's next flush
        await self.close(code)


async def _resume(coroutine: Coroutine[Any, Any, Any], waiting: Any) -> None:
    """Run ``coroutine`` to its end, as a task would, from where it stopped to wait for
    ``waiting`` (what it yielded: an asyncio future, or None to let the loop turn).

    :meth:`SyncConsumer.flush` starts the server's send by hand so that a send which
    does not wait costs no task; the rare one that waits ends here."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            elif not waiting.done():
                await asyncio.wait([waiting])
            try:
                waiting = coroutine.send(None)
            except StopIteration:
                return
    except BaseException:
        coroutine.close()
        raise
