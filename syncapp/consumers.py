"""The WebSocket transport: protocol version 1 (docs/protocol.md) over Channels.

A thin layer: frames are decoded and validated once, then handed to the core (the
mutation path, the history reader, the permission hook). Live ops come from the
process's hub, already encoded, and go out through one bounded outbox per connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Coroutine
from typing import Any

import msgspec
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AnonymousUser

from syncapp import encoding, mutations, permissions, presence
from syncapp.conf import conf
from syncapp.exceptions import PayloadTooLarge, SyncError
from syncapp.hub import Hub, get_hub
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
# Seconds a close frame may take to get past what a slow client has not read yet.
CLOSE_GRACE = 5.0


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
        self.transport = getattr(self.protocol, "transport", None)

    def backlog(self) -> int:
        buffer = getattr(self.transport, "dataBuffer", None)
        if not isinstance(buffer, bytes):
            return 0
        offset = int(getattr(self.transport, "offset", 0))
        return len(buffer) - offset + int(getattr(self.transport, "_tempDataLen", 0))

    def allow_close_behind_backlog(self, seconds: float) -> None:
        """Give the close frame time to get through what the client has not read yet
        (autobahn drops the connection 1 s after a close frame by default)."""
        if hasattr(self.protocol, "closeHandshakeTimeout"):
            self.protocol.closeHandshakeTimeout = seconds


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
        self.outbox: deque[str] = deque()
        self.outbox_bytes = 0
        self.socket = ServerSocket(self.scope.get(SERVER_SEND))
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.mutation_bucket = TokenBucket(conf.MUTATION_RATE, conf.MUTATION_BURST, self.hub.timer)
        self.presence_bucket = TokenBucket(
            conf.PRESENCE_MAX_RATE, conf.PRESENCE_BURST, self.hub.timer
        )
        # This connection's member id in every stream's presence.
        self.connection_id = secrets.token_hex(8)
        await self.accept()
        if self.scope.get(AUTH_ERROR):
            self.closing = True  # frames already on their way are not acted on
            await self.close(CLOSE_UNAUTHORIZED)
            return
        self.writer = self.spawn(self._write_loop())
        self.hub.connections.add(self)
        self.hub.watch_heartbeats()

    async def disconnect(self, code: int) -> None:
        self.closing = True
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
            self.spawn(self.close(CLOSE_SERVER_ERROR))

    # outgoing

    def backlog(self) -> int:
        """Bytes waiting for this client: in the outbox and in the server's buffer."""
        return self.outbox_bytes + self.socket.backlog()

    def push(self, text: str) -> None:
        """Queue a frame. A client that keeps up takes any frame, however large; one that
        let more than OUTBOX_BYTES pile up is closed with 4503 (reconnect and resume)."""
        if self.closing:
            return
        if self.backlog() > conf.OUTBOX_BYTES:
            self.fell_behind()
            return
        self.outbox.append(text)
        self.outbox_bytes += len(text)
        self.wake.set()

    def fell_behind(self) -> None:
        """Close with 4503: the client should reconnect and resume from its position."""
        self.closing = True
        self.outbox.clear()
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
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message, **extra}
        if ref is not None:
            frame["ref"] = ref
        self.push_frame(frame)

    async def _write_loop(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                text = self.outbox.popleft()
                self.outbox_bytes -= len(text)
                await self.send(text_data=text)
            self.drained.set()

    # incoming

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_seen = self.hub.timer()
        if self.closing:
            return
        if text_data is None:
            self.push_error(
                "binary_unsupported", "Frames are JSON text; binary frames are refused."
            )
            return
        if len(text_data) > conf.MAX_FRAME_BYTES or len(text_data.encode()) > conf.MAX_FRAME_BYTES:
            self.closing = True
            await self.close(CLOSE_TOO_BIG)
            return
        try:
            frame = decode(text_data)
        except FrameError as exc:
            self.push_error(exc.error_code, exc.message)
            return
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
        wait = self.presence_bucket.take()
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
        wait = self.mutation_bucket.take()
        if wait:
            self.push_error(
                "rate_limited",
                "Too many mutate frames; retry later with the same ids.",
                frame.ref,
                retry_after_ms=int(wait * 1000) + 1,
            )
            return
        try:
            results = await database_sync_to_async(mutations.apply)(
                frame.mutations, user=self.user, client_id=self.client_id, source="ws"
            )
        except PayloadTooLarge as exc:
            self.push_error(exc.error_code, exc.message, frame.ref)
            return
        ack: dict[str, Any] = {"type": "ack", "results": results}
        if frame.ref is not None:
            ack["ref"] = frame.ref
        self.push_frame(ack)

    # heartbeats

    def check_heartbeat(self, now: float) -> None:
        limit = conf.HEARTBEAT_MS / 1000 * conf.HEARTBEAT_TIMEOUT_INTERVALS
        if not self.closing and now - self.last_seen > limit:
            self.closing = True
            self.spawn(self.close(CLOSE_TIMEOUT))

    async def _close_after_flush(self, code: int) -> None:
        self.drained.clear()
        self.wake.set()
        await self.drained.wait()
        await self.close(code)
