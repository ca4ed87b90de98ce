"""Slow consumers on a real daphne: a connection that stops reading has a bounded
outgoing buffer (``OUTBOX_BYTES``, 64 KiB in tests.live_settings); past it the server
closes the connection with 4503 (reconnect and resume), and the other subscribers of the
stream are not held back.

Only a real server shows this: daphne hands frames to Twisted, which buffers without
limit, so the consumer must notice what Twisted holds (``_transport_backlog``).

The stalled client keeps the kernel's share small, so that a burst of a few MB is
enough: a small receive buffer, and a small MSS, which keeps the server's send buffer
(autotuned from the MSS) near 1 MB instead of the 4 MB loopback allows.

The close frame waits behind the bytes the client has not read. A client reading again
right after the burst reads it; one that never reads again sees the server end the TCP
connection once the close has gone unanswered (daphne waits 1 s; the test allows 10).
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from tests.live.clients import Writer, mutation_ids, seqs, stalled_socket
from tests.live.servers import Daphne

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

# Each op is under OUTBOX_BYTES (64 KiB); the burst is twice what the kernel holds.
BODY = 24 * 1024  # random bytes, sent as hex: ~48 KB per op
BURST = 60
TCP_ESTABLISHED = 1
DROP_TIMEOUT = 10.0


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (Linux ``tcp_info.tcpi_state``)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0]


async def burst(server: Daphne, writer: Writer) -> None:
    """BURST big ops, 20 to a request (each request stays under MAX_BODY_BYTES)."""
    for _ in range(BURST // 20):
        await writer.write_batch(server, 20, body=os.urandom(BODY).hex())


@pytest.fixture
def server(live) -> Daphne:
    [server] = live.servers("a")
    return server


@pytest.fixture
async def fast(server, stream, ws_client):
    client = ws_client("fast")
    await client.connect(server)
    await client.subscribe(stream)
    return client


@pytest.fixture
async def stalled(server, stream, ws_client):
    """A subscriber that has stopped reading: websockets queues one frame, then TCP
    backs up to the server."""
    sock = stalled_socket(server)
    client = ws_client("stalled", max_queue=1, ping_interval=None)
    await client.connect(server, sock=sock)
    await client.subscribe(stream)
    client.reading.clear()
    return client


async def test_slow_consumer_is_closed_4503_and_others_get_every_op(
    server, auth, stream, board, fast, stalled
):
    writer = Writer(auth, stream, board.pk)
    await burst(server, writer)
    await fast.until(lambda: fast.last(stream) >= writer.head)

    # Reading again right after the burst, it finds its connection closed, told to resume.
    stalled.reading.set()
    await stalled.until(
        lambda: stalled.closed.is_set() or stalled.last(stream) >= writer.head,
        what="the stalled client to be closed",
    )
    assert stalled.closed.is_set(), (
        f"the server sent all {writer.head} ops ({BURST * BODY * 2 // 1024} KiB) to a client "
        f"that was not reading, and kept the connection: {stalled!r}"
    )
    assert stalled.close_codes == [4503]
    assert stalled.last(stream) < writer.head
    assert seqs(stalled.ops[stream]) == list(range(1, stalled.last(stream) + 1))
    expected_seqs, expected_ids = writer.expected()
    assert seqs(fast.ops[stream]) == expected_seqs == list(range(1, BURST + 1))
    assert mutation_ids(fast.ops[stream]) == expected_ids
    assert not fast.closed.is_set()


async def test_slow_consumer_that_never_reads_again_is_dropped(
    server, auth, stream, board, fast, stalled
):
    writer = Writer(auth, stream, board.pk)
    await burst(server, writer)
    await fast.until(lambda: fast.last(stream) >= writer.head)

    # Without reading a byte, the client sees its TCP connection ended by the server.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DROP_TIMEOUT
    assert stalled.sock is not None
    while tcp_state(stalled.sock) == TCP_ESTABLISHED:
        assert loop.time() < deadline, (
            f"the server still holds the connection of a client that stopped reading "
            f"{writer.head} ops ({BURST * BODY * 2 // 1024} KiB) ago"
        )
        await asyncio.sleep(0.05)
    assert seqs(fast.ops[stream]) == list(range(1, BURST + 1))
    assert not fast.closed.is_set()


async def test_resume_of_more_than_outbox_bytes_sends_every_op(
    server, auth, stream, board, ws_client
):
    client = ws_client("returning")
    await client.connect(server)
    await client.subscribe(stream)
    writer = Writer(auth, stream, board.pk)
    await writer.write(server, 1)
    await client.until(lambda: client.last(stream) >= 1)
    await client.close()
    # Missed while away: each op fits in the outbox, all of them together do not.
    await writer.write(server, 4, body=os.urandom(BODY // 2).hex())

    await client.connect(server)  # subscribes again after seq 1

    await client.until(lambda: client.last(stream) >= writer.head or client.closed.is_set())
    assert client.close_codes == [1000]  # only the close this test asked for
    assert seqs(client.ops[stream]) == writer.expected()[0] == [1, 2, 3, 4, 5]
    assert mutation_ids(client.ops[stream]) == writer.expected()[1]
