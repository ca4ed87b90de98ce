"""Two daphne processes, one Redis: a mutation made through process A reaches the
WebSocket, SSE and long-poll clients of process B."""

from __future__ import annotations

import asyncio

import pytest

from tests.live.clients import long_poll, mutate, mutation_ids, new_card, seqs, snapshot
from tests.live.servers import Daphne

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def servers(live) -> list[Daphne]:
    return live.servers("a", "b")


async def test_rest_mutation_on_a_reaches_websocket_client_on_b(
    servers, auth, stream, board, ws_client
):
    a, b = servers
    client = ws_client("reader-b")
    await client.connect(b)
    await client.subscribe(stream)

    [result] = await mutate(a, auth, [new_card(stream, board.pk, "from a")])

    await client.until(lambda: client.last(stream) >= result["seq"])
    assert mutation_ids(client.ops[stream]) == [result["id"]]
    assert client.problems == []


async def test_websocket_mutation_on_a_reaches_websocket_client_on_b(
    servers, stream, board, ws_client
):
    a, b = servers
    reader = ws_client("reader-b")
    await reader.connect(b)
    await reader.subscribe(stream)
    writer = ws_client("writer-a")
    await writer.connect(a)

    mutation = new_card(stream, board.pk, "over the socket")
    await writer.send({"type": "mutate", "mutations": [mutation], "ref": 1})
    await writer.until(lambda: bool(writer.acks))
    [result] = writer.acks[0]["results"]
    assert result["status"] == "applied", result

    await reader.until(lambda: reader.last(stream) >= result["seq"])
    assert mutation_ids(reader.ops[stream]) == [mutation["id"]]


async def test_rest_mutation_on_a_reaches_sse_client_on_b(servers, auth, stream, board, sse_client):
    a, b = servers
    reader = sse_client()
    await reader.open(b)

    [result] = await mutate(a, auth, [new_card(stream, board.pk, "from a")])

    await reader.until(lambda: len(reader.ops) >= 1)
    assert mutation_ids(reader.ops) == [result["id"]]
    assert reader.last_event_id is not None
    assert reader.last_event_id.endswith(f":{result['seq']}")
    assert reader.problems == []


async def test_rest_mutation_on_a_answers_long_poll_on_b(servers, auth, stream, board):
    a, b = servers
    head = await snapshot(b, auth, stream)
    poll = asyncio.create_task(long_poll(b, auth, stream, head["epoch"], head["seq"], wait=20))

    [result] = await mutate(a, auth, [new_card(stream, board.pk, "from a")])

    page = await asyncio.wait_for(poll, 10)
    assert seqs(page["ops"]) == [result["seq"]]
    assert mutation_ids(page["ops"]) == [result["id"]]
