"""Helpers for WebSocket tests: a protocol-speaking communicator."""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from syncapp.hub import current_hub
from tests.asgi import application

ORIGIN = (b"origin", b"http://testserver")
TIMEOUT = 5


class Client:
    """A WebsocketCommunicator that sends and receives protocol frames."""

    def __init__(self, user: Any = None, path: str = "/sync/ws/", headers: Any = None) -> None:
        self.communicator = WebsocketCommunicator(
            application, path, headers=[ORIGIN] if headers is None else headers
        )
        if user is not None:
            self.communicator.scope["user"] = user
        self.presence: dict[str, Any] = {}
        self.connection_id = ""

    async def connect(self, hello: bool = True) -> Client:
        connected, _ = await self.communicator.connect(timeout=TIMEOUT)
        assert connected, "the handshake was refused"
        if hello:
            await self.send({"type": "hello", "client_id": "tab-1", "protocol": 1})
            welcome = await self.receive_type("welcome")
            self.connection_id = welcome["connection_id"]
        return self

    async def send(self, frame: Any) -> None:
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return json.loads(await self.communicator.receive_from(timeout=timeout))

    async def receive_type(self, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, which must be of type ``kind``."""
        frame = await self.receive(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def closed(self, timeout: float = TIMEOUT) -> int:
        """Wait for the server to close; the close code."""
        while True:
            message = await self.communicator.receive_output(timeout)
            if message["type"] == "websocket.close":
                return int(message.get("code", 1000))

    async def nothing(self, timeout: float = 0.1) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def subscribe(self, stream: str, after: Any = None) -> list[dict[str, Any]]:
        """Subscribe and collect frames up to ``subscribed`` (or a reset or error); the
        ``presence_state`` that follows ``subscribed`` is kept in ``self.presence``."""
        frame: dict[str, Any] = {"type": "subscribe", "stream": stream}
        if after is not None:
            frame["after"] = after
        await self.send(frame)
        frames = []
        while True:
            got = await self.receive()
            frames.append(got)
            if got["type"] == "subscribed":
                self.presence[stream] = (await self.receive_type("presence_state"))["members"]
                return frames
            if got["type"] in ("reset", "error"):
                return frames

    async def ops(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` ops, across ``ops`` frames."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            frame = await self.receive_type("ops")
            found.extend(frame["ops"])
        return found

    async def close(self) -> None:
        await self.communicator.disconnect()


async def close_hub() -> None:
    """Leave the channel-layer groups this test's event loop joined, and close the
    database connection of the thread that ran its database calls."""
    hub = current_hub()
    if hub is not None:
        await hub.close()
    await database_sync_to_async(connections.close_all)()


adb = database_sync_to_async
