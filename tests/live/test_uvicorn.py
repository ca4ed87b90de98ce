"""syncapp on a real uvicorn, on its default WebSocket protocol (websockets' sans-I/O one)
and on the legacy one (``--ws websockets``).

Frames go straight onto uvicorn's asyncio transport (``consumers.AsyncioSocket``): they
must reach every client whole and in order, whatever their length encoding (under 126
bytes, under 64 KiB, more), mixed with the frames uvicorn writes itself; a client that
negotiated compression gets its frames through uvicorn's ``send``; a client that stops
reading is closed with 4503 once more than ``OUTBOX_BYTES`` (64 KiB here) waits for it,
and the others get every op.
"""

from __future__ import annotations

import os

import pytest

from tests.live.clients import Writer, mutation_ids, seqs, stalled_socket
from tests.live.servers import Daphne, Uvicorn, UvicornLegacy

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

BODY = 24 * 1024  # random bytes, sent as hex: ~48 KB per op


@pytest.fixture(params=[Uvicorn, UvicornLegacy], ids=["sansio", "legacy"])
def server(request: pytest.FixtureRequest, live) -> Daphne:
    kind = request.param
    [server] = live.servers(kind.ws, kind=kind)
    return server


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_frames_of_every_length_reach_uvicorn_clients_in_order(
    server, auth, stream, board, ws_client, compression
):
    reader = ws_client("reader", compression=compression)
    await reader.connect(server)
    await reader.subscribe(stream)
    assert reader.ws is not None
    assert bool(reader.ws.protocol.extensions) == (compression is not None)  # negotiated
    other = ws_client("other")  # a second reader of the same frames
    await other.connect(server)
    await other.subscribe(stream)
    writer = Writer(auth, stream, board.pk)

    await writer.write(server, 2)  # ~430-byte ops: a 16-bit length
    await writer.write(server, 1, body=os.urandom(40_000).hex())  # a 64-bit length
    await writer.write_batch(server, 20)  # a burst: ops share frames
    for ts in range(3):
        await reader.send({"type": "ping", "ts": ts})  # pongs: under 126 bytes
    await writer.write(server, 1)

    for client in (reader, other):
        await client.until(lambda c=client: c.last(stream) >= writer.head)
        expected_seqs, expected_ids = writer.expected()
        assert seqs(client.ops[stream]) == expected_seqs == list(range(1, 25))
        assert mutation_ids(client.ops[stream]) == expected_ids
        assert len(client.ops[stream][2]["fields"]["body"]) == 80_000
        assert client.problems == []
        assert not client.closed.is_set()
    await reader.until(lambda: len(reader.pongs) == 3)
    assert [pong["ts"] for pong in reader.pongs] == [0, 1, 2]


async def test_uvicorn_closes_a_client_that_stopped_reading_4503(
    server, auth, stream, board, ws_client
):
    fast = ws_client("fast")
    await fast.connect(server)
    await fast.subscribe(stream)
    stalled = ws_client("stalled", max_queue=1, ping_interval=None)
    await stalled.connect(server, sock=stalled_socket(server))
    await stalled.subscribe(stream)
    stalled.reading.clear()
    writer = Writer(auth, stream, board.pk)

    for _ in range(3):
        await writer.write_batch(server, 20, body=os.urandom(BODY).hex())
    await fast.until(lambda: fast.last(stream) >= writer.head)

    stalled.reading.set()
    await stalled.until(
        lambda: stalled.closed.is_set() or stalled.last(stream) >= writer.head,
        what="the stalled client to be closed",
    )
    assert stalled.close_codes == [4503], stalled
    assert seqs(stalled.ops[stream]) == list(range(1, stalled.last(stream) + 1))
    assert seqs(fast.ops[stream]) == list(range(1, 61))
    assert not fast.closed.is_set()
