"""Redis restarted under two daphne processes: what was broadcast meanwhile is lost
(and so are the processes' group memberships), and every client still ends up with
every op once, in order, read from the log."""

from __future__ import annotations

import signal

import pytest
from channels.db import database_sync_to_async

from tests.helpers import ops
from tests.live.clients import Writer, mutation_ids, seqs

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

RECOVERY_TIMEOUT = 15.0


async def test_redis_restart_clients_on_both_processes_get_every_op_once(
    live, auth, stream, board, ws_client, sse_client
):
    a, b = live.servers("a", "b")
    clients = [ws_client("tab-a"), ws_client("tab-b")]
    for client, server in zip(clients, (a, b), strict=True):
        await client.connect(server)
        await client.subscribe(stream)
    sse = sse_client()
    await sse.open(b)
    writer = Writer(auth, stream, board.pk)
    await writer.write(a, 3)
    for client in clients:
        await client.until(lambda c=client: c.last(stream) >= 3)

    marks = [a.mark(), b.mark()]
    live.redis.kill(signal.SIGKILL)
    await writer.write(a, 2)
    await writer.write(b, 2)
    # Committed and in the log, though their doorbell could not ring...
    assert [op.seq for op in await database_sync_to_async(ops)(stream)] == list(range(1, 8))
    # ... and both processes noticed that the channel layer is gone.
    for server, mark in zip((a, b), marks, strict=True):
        await server.wait_output("Channel layer probe failed", since=mark)

    live.redis.start()
    # Nothing else is written: no later op reveals the gap, the processes find it.
    for client in clients:
        await client.until(lambda c=client: c.last(stream) >= 7, timeout=RECOVERY_TIMEOUT)
    await writer.write(a, 2)
    await writer.write(b, 2)

    expected_seqs, expected_ids = writer.expected()
    assert expected_seqs == list(range(1, 12))
    for client in clients:
        await client.until(lambda c=client: c.last(stream) >= 11, timeout=RECOVERY_TIMEOUT)
        assert seqs(client.ops[stream]) == expected_seqs
        assert mutation_ids(client.ops[stream]) == expected_ids
        assert client.problems == []
        assert not client.closed.is_set()
    await sse.until(lambda: len(sse.ops) >= 11 or bool(sse.problems), timeout=RECOVERY_TIMEOUT)
    assert seqs(sse.ops) == expected_seqs
    assert sse.problems == []
