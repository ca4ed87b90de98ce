"""One WebSocket connection, from its handshake to its close: hello, heartbeats, frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from syncapp.client import codes
from syncapp.client.connection import derive_origin, open_websocket, with_token
from syncapp.client.errors import FrameTooLarge, HandshakeRejected
from syncapp.client.frames import (
    ErrorFrame,
    MalformedFrame,
    PongFrame,
    ServerFrame,
    WelcomeFrame,
    decode,
    encode,
)
from syncapp.client.heartbeat import Heartbeat
from syncapp.protocol import PROTOCOL_VERSION, ClientFrame, HelloFrame, PingFrame

logger = logging.getLogger("syncapp.client")

# Handshake statuses below 500 that a later attempt may not get.
_RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a connection attempt ended."""

    code: int | None
    """The close code received; ``None`` when there was no close frame."""
    reason: str
    welcomed: bool
    """Whether it got as far as ``welcome``."""
    retry_after: float | None = None
    """Seconds the server asked to wait (``Retry-After`` on a refused handshake)."""


@dataclass(frozen=True, slots=True)
class Dial:
    """How to open a connection: everything but the URL and the token."""

    origin: str | None
    headers: Mapping[str, str]
    open_timeout: float
    close_timeout: float
    max_message_bytes: int | None


class Session:
    """One WebSocket connection. The client makes a new one for every reconnect."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.welcome: WelcomeFrame | None = None
        self.heartbeat: Heartbeat | None = None
        self.dead: str | None = None
        """Why the heartbeat gave up on the connection."""

    @classmethod
    async def open(cls, url: str, token: str | None, dial: Dial) -> Session | Outcome:
        """Perform the handshake; an :class:`Outcome` when it failed in a way worth retrying.

        Raises :class:`HandshakeRejected` for a 4xx answer, such as the 403 for an
        Origin the server does not allow: retrying cannot change that answer.
        """
        try:
            ws = await open_websocket(
                with_token(url, token),
                origin=dial.origin or derive_origin(url),
                headers=dial.headers,
                open_timeout=dial.open_timeout,
                close_timeout=dial.close_timeout,
                max_message_bytes=dial.max_message_bytes,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status < 500 and status not in _RETRYABLE_STATUS:
                raise HandshakeRejected(status, url) from exc
            retry_after = exc.response.headers.get("Retry-After", "")
            return Outcome(
                None,
                f"HTTP {status}",
                welcomed=False,
                retry_after=float(retry_after) if retry_after.isdigit() else None,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            return Outcome(None, repr(exc), welcomed=False)
        return cls(ws, url)

    async def hello(
        self, client_id: str, timeout: float, on_error: Callable[[ErrorFrame], None]
    ) -> WelcomeFrame | Outcome:
        """Say ``hello`` and wait for ``welcome``; an :class:`Outcome` if it never comes."""
        try:
            await self.send(HelloFrame(client_id=client_id, protocol=PROTOCOL_VERSION))
            async with asyncio.timeout(timeout):
                while True:
                    frame = _decode(await self.ws.recv())
                    if isinstance(frame, WelcomeFrame):
                        self.welcome = frame
                        return frame
                    if isinstance(frame, ErrorFrame):
                        on_error(frame)  # protocol_unsupported comes before its 4400
        except ConnectionClosed as exc:
            return Outcome(*_close_of(exc), welcomed=False)
        except TimeoutError:
            return Outcome(None, "no welcome", welcomed=False)

    async def send(self, frame: ClientFrame) -> int:
        """Send ``frame``; return its size in bytes.

        A closed connection is not an error here: the reader sees the close too, and the
        next connection sends everything still unanswered. A frame over the server's
        ``max_frame_bytes`` raises :class:`FrameTooLarge` instead of costing the
        connection (the server would close it with 1009).
        """
        data = encode(frame)
        if self.welcome is not None and len(data) > self.welcome.max_frame_bytes:
            raise FrameTooLarge(len(data), self.welcome.max_frame_bytes)
        with contextlib.suppress(ConnectionClosed):
            # As str, not ``send(bytes, text=True)``: that option is newer than websockets 13.
            await self.ws.send(data.decode())
        return len(data)

    async def run(self, dispatch: Callable[[ServerFrame], Awaitable[None]]) -> Outcome:
        """Hand every frame to ``dispatch`` until the connection closes or goes silent."""
        assert self.welcome is not None
        heartbeat = self.heartbeat = Heartbeat(
            self.welcome.heartbeat_ms / 1000, asyncio.get_running_loop().time
        )
        beating = asyncio.create_task(self._beat(heartbeat))
        try:
            while True:
                frame = _decode(await self.ws.recv())
                heartbeat.received()
                if isinstance(frame, PongFrame):
                    heartbeat.ponged()
                elif frame is not None:
                    await dispatch(frame)
        except ConnectionClosed as exc:
            code, reason = _close_of(exc)
            if self.dead is not None:
                code, reason = None, self.dead
            return Outcome(code, reason, welcomed=True)
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)

    async def _beat(self, heartbeat: Heartbeat) -> None:
        while True:
            await asyncio.sleep(heartbeat.interval)
            dead = heartbeat.dead()
            if dead is not None:
                logger.warning("The connection to %s is dead: %s.", self.url, dead)
                self.dead = f"heartbeat timeout: {dead}"
                await self.ws.close(codes.CLIENT_HEARTBEAT_TIMEOUT, "heartbeat timeout")
                return
            heartbeat.pinged()
            await self.send(PingFrame(ts=int(time.time() * 1000)))

    async def close(self) -> None:
        await self.ws.close()


def _decode(data: str | bytes) -> ServerFrame | None:
    try:
        return decode(data)
    except MalformedFrame as exc:
        # Skipped, not fatal: a lost ``ops`` frame is a gap that the next one reveals, and
        # reconnecting would only fetch the same malformed frame again.
        logger.error("A malformed frame from the server: %s", exc)
        return None


def _close_of(exc: ConnectionClosed) -> tuple[int | None, str]:
    """The server's close code and reason; ``None`` when the server did not choose one.

    When this side closed first (websockets closes with 1009 itself when a message is
    over ``max_message_bytes``), the code echoed back is ours, not the server's verdict.
    """
    if exc.sent is not None and (exc.rcvd is None or not exc.rcvd_then_sent):
        return None, f"closed by the client: {exc.sent.code} {exc.sent.reason}".rstrip()
    if exc.rcvd is None:
        return None, "connection lost"
    return exc.rcvd.code, exc.rcvd.reason
