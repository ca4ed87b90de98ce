"""A daphne process killed with SIGKILL: its clients reconnect to another process and
resume from their last position, with nothing lost and nothing twice."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.live.clients import Writer, mutation_ids, seqs, snapshot

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

TOTAL = 40
BEFORE_KILL = 5
WHILE_AWAY = 5


async def test_sigkill_clients_resume_on_the_other_process_with_every_op_once(
    live, auth, stream, board, ws_client, sse_client, long_poll_client
):
    a, b = live.servers("a", "b")
    ws = ws_client("tab-a")
    await ws.connect(a)
    await ws.subscribe(stream)
    sse = sse_client()
    await sse.open(a)
    head = await snapshot(a, auth, stream)
    poller = long_poll_client(head["epoch"], head["seq"])
    poller.start(a, b)  # on a while it lives, then on b
    writer = Writer(auth, stream, board.pk)
    writing = asyncio.create_task(writer.write(b, TOTAL))

    # A dies while its clients are following the stream and writes keep going.
    await ws.until(lambda: ws.last(stream) >= BEFORE_KILL)
    await sse.until(lambda: len(sse.ops) >= BEFORE_KILL)
    await poller.until(lambda: len(poller.ops) >= BEFORE_KILL)
    a.kill(signal.SIGKILL)
    await ws.until(ws.closed.is_set, what="the WebSocket to close")
    await sse.until(sse.closed.is_set, what="the event stream to close")
    written = len(writer.results)
    await writer.until(lambda: len(writer.results) >= written + WHILE_AWAY)

    await ws.connect(b)
    await sse.open(b)
    await writing

    expected_seqs, expected_ids = writer.expected()
    await ws.until(lambda: ws.last(stream) >= writer.head)
    await sse.until(lambda: len(sse.ops) >= len(expected_seqs) or bool(sse.problems))
    await poller.until(lambda: poller.last >= writer.head)
    assert ws.close_codes == [1006]  # a killed process sends no close frame
    assert seqs(ws.ops[stream]) == expected_seqs == list(range(1, TOTAL + 1))
    assert mutation_ids(ws.ops[stream]) == expected_ids
    assert seqs(sse.ops) == expected_seqs
    assert mutation_ids(sse.ops) == expected_ids
    assert seqs(poller.ops) == expected_seqs
    assert mutation_ids(poller.ops) == expected_ids
    assert poller.failures  # its request to a failed, then it went on with b
    assert all(failure.startswith("a:") for failure in poller.failures)
    assert ws.problems == sse.problems == []
