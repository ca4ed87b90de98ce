"""Serve an ASGI application's WebSocket side over real TCP, in the test's event loop.

Daphne runs on Twisted's reactor, which cannot share pytest-asyncio's loop; this bridge
lets :class:`SyncClient` talk to the real consumer in-process, on the test database.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


class AsgiBridge:
    def __init__(self, application: Any) -> None:
        self.application = application
        self.url = ""
        self.connections: list[ServerConnection] = []
        self._server: Server | None = None

    async def __aenter__(self) -> AsgiBridge:
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/sync/ws/"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def drop(self) -> None:
        """Lose every connection, as a network failure would."""
        for ws in self.connections:
            ws.transport.abort()

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        path, _, query = request.path.partition("?")
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [
                (name.lower().encode("latin1"), value.encode("latin1"))
                for name, value in request.headers.raw_items()
            ],
            "client": ws.remote_address[:2],
            "server": ws.local_address[:2],
            "subprotocols": [],
        }
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "websocket.connect"})

        async def send(message: dict[str, Any]) -> None:
            with contextlib.suppress(ConnectionClosed):
                if message["type"] == "websocket.send":
                    await ws.send(message.get("text") or message["bytes"])
                elif message["type"] == "websocket.close":
                    await ws.close(message.get("code") or 1000, message.get("reason") or "")

        self.connections.append(ws)
        app = asyncio.create_task(self.application(scope, inbox.get, send))
        try:
            async for text in ws:
                inbox.put_nowait({"type": "websocket.receive", "text": text})
        except ConnectionClosed:
            pass
        finally:
            inbox.put_nowait({"type": "websocket.disconnect", "code": ws.close_code or 1006})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(app, 5)
