"""The floor: a bare ``websockets`` server that sends each text it is given to every
subscriber with ``broadcast()``, as fast as Python WebSockets go.

``python -m benchmarks.floor PORT``. Subscribers connect to ``/`` and get
``{"type":"subscribed"}``; the writer connects to ``/write`` and each text frame it sends
is broadcast, unchanged, to every subscriber.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

from benchmarks import gcsettle

subscribers: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    assert ws.request is not None
    if ws.request.path.startswith("/write"):
        async for text in ws:
            broadcast(subscribers, text)
        return
    subscribers.add(ws)
    try:
        await ws.send('{"type":"subscribed"}')
        await ws.wait_closed()
    finally:
        subscribers.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None) as server:
        await server.serve_forever()


if __name__ == "__main__":
    gcsettle.install()
    asyncio.run(main(int(sys.argv[1])))
