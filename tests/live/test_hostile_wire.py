"""Hostile input on the wire, against a real daphne process (issue 7).

In-process tests (tests/test_hostile_input.py) cannot put invalid UTF-8 in a text frame
or a 10 MB frame on a real socket: here a raw WebSocket client does. The frame gets the
documented close code or error frame, the process goes on serving everyone, and what was
accepted before is in the log.

daphne's WebSocket layer (autobahn) checks two things before syncapp sees a frame: UTF-8
(a violation would be 1007) and its own ``--websocket_max_message_size`` (1 MiB; 1009).
It fails both by dropping the TCP connection without a close frame (autobahn's
``failByDrop``): a client sees an abnormal closure (1006) and reconnects. A frame between
syncapp's ``MAX_FRAME_BYTES`` (512 KiB) and daphne's limit gets syncapp's close 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from syncapp.models import Op
from tests.live.clients import TIMEOUT, Credentials, new_card, request, ws_token
from tests.live.servers import Cluster, Daphne
from tests.ws import adb

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

TEN_MB = 10 * 1024 * 1024


async def connect(server: Daphne, auth: Credentials) -> ClientConnection:
    token = await ws_token(server, auth)
    ws = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/sync/ws/?token={token}",
        origin=server.origin,
        compression=None,
        proxy=None,
        open_timeout=TIMEOUT,
        max_size=None,
    )
    await ws.send(json.dumps({"type": "hello", "client_id": "wire", "protocol": 1}))
    assert (await receive(ws))["type"] == "welcome"
    return ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)))


async def accepted(ws: ClientConnection, stream: str, board: Any) -> str:
    """A card created over ``ws``: the id of its mutation."""
    mutation = new_card(stream, board.pk, "kept")
    await ws.send(json.dumps({"type": "mutate", "mutations": [mutation]}))
    ack = await receive(ws)
    assert ack["results"][0]["status"] == "applied", ack
    return str(mutation["id"])


async def closed_with(ws: ClientConnection) -> int:
    """The close code the server sent; 1006 when it dropped the connection without one."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    return 1006 if info.value.rcvd is None else info.value.rcvd.code


async def send_closing(ws: ClientConnection, payload: str | bytes) -> None:
    """Send a text frame (bytes as they are, unchecked) that the server may cut short."""
    with contextlib.suppress(websockets.ConnectionClosed, ConnectionResetError):
        await ws.send(payload, text=True)


async def still_serves(server: Daphne, auth: Credentials) -> None:
    ws = await connect(server, auth)
    await ws.send(json.dumps({"type": "ping", "ts": 1}))
    assert await receive(ws) == {"type": "pong", "ts": 1}
    await ws.close()


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("invalid utf-8 text frame", b'{"type":"ping","ref":"\xff\xfe"}', {1006, 1007}),
        ("truncated utf-8 text frame", b'{"type":"ping"}\xe2\x82', {1006, 1007}),
        ("600kB text frame", '{"type":"ping","pad":"' + "x" * 600_000 + '"}', {1009}),
        ("10MB text frame", '{"type":"ping","pad":"' + "x" * TEN_MB + '"}', {1006, 1009}),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "",
)
async def test_hostile_text_frame_on_a_real_socket(
    live: Cluster, auth, stream, board, name, payload, expected
):
    [server] = live.servers("a")
    ws = await connect(server, auth)
    kept = await accepted(ws, stream, board)
    await send_closing(ws, payload)
    assert await closed_with(ws) in expected
    await still_serves(server, auth)
    assert await adb(Op.objects.filter(mutation_id=kept).exists)()


async def test_binary_frame_on_a_real_socket_is_refused_and_the_connection_goes_on(
    live: Cluster, auth, stream, board
):
    [server] = live.servers("a")
    ws = await connect(server, auth)
    await ws.send(b"\x00\xff" * 1000)
    assert (await receive(ws))["code"] == "binary_unsupported"
    kept = await accepted(ws, stream, board)
    await ws.close()
    assert await adb(Op.objects.filter(mutation_id=kept).exists)()


async def test_ten_megabyte_body_on_a_real_socket_is_a_413(live: Cluster, auth, stream, board):
    [server] = live.servers("a")
    body = {"mutations": [{**new_card(stream, board.pk, "x"), "id": str(uuid.uuid4())}]}
    body["mutations"][0]["fields"]["body"] = "x" * TEN_MB
    try:
        response = await request(server, "POST", "/sync/api/mutations/", auth=auth, body=body)
    except ConnectionError:
        pytest.fail("the server dropped the connection instead of answering 413")
    assert (response.status, response.json()["code"]) == (413, "too_large")
    assert response.headers["content-type"] == "application/problem+json"
    await still_serves(server, auth)
