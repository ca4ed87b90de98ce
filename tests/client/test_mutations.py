"""Mutations: ids assigned once and kept through resends and retries; results in order."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from syncapp.client import FrameTooLarge, MutationError
from syncapp.client.mutations import chunks, normalize
from syncapp.protocol import Mutation, MutationRequest
from tests.client.fake_server import FakeServer

MODEL = "todos.todo"


def change(pk="a", op="create", **fields):
    return {"stream": "s", "model": MODEL, "pk": pk, "op": op, "fields": fields}


def test_normalize_assigns_an_id_to_a_dict_without_one():
    mutation = normalize(change(title="x"))
    assert isinstance(mutation.id, uuid.UUID)
    assert mutation.fields == {"title": "x"}


def test_normalize_keeps_given_ids():
    key = uuid.uuid4()
    assert normalize(change() | {"id": str(key)}).id == key
    mutation = Mutation(id=key, stream="s", model=MODEL, pk=1, op="delete")
    assert normalize(mutation) is mutation
    assert normalize(MutationRequest(id=key, stream="s", model=MODEL, pk=1, op="delete")).id == key


def test_normalize_assigns_an_id_to_a_request_without_one():
    request = MutationRequest(stream="s", model=MODEL, pk=1, op="delete")
    assert isinstance(normalize(request).id, uuid.UUID)


def test_normalize_refuses_a_malformed_mutation():
    with pytest.raises(msgspec.ValidationError, match="op"):
        normalize(change(op="upsert"))


def test_chunks_split_in_order():
    assert list(chunks([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]


async def test_mutate_returns_results_in_order(server, make_client):
    client = make_client(server.url)
    await client.connect()
    given = uuid.uuid4()
    results = await client.mutate(
        [change("a"), Mutation(id=given, stream="s", model=MODEL, pk="b", op="create")]
    )
    assert [r.status for r in results] == ["applied", "applied"]
    assert results[1].id == given
    assert [r.seq for r in results] == [1, 2]
    assert server.log.applied == [str(r.id) for r in results]


async def test_mutate_then_wait_for_the_op(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    [result] = await client.mutate([change("a", title="milk")])
    await handle.wait_for(result.seq, timeout=5)
    assert handle.get(MODEL, "a").fields == {"title": "milk"}


async def test_mutate_splits_batches_into_frames(server, make_client):
    client = make_client(server.url, max_batch=2)
    await client.connect()
    results = await client.mutate([change(str(n)) for n in range(5)])
    assert [len(f["mutations"]) for f in server.frames("mutate")] == [2, 2, 1]
    assert [r.seq for r in results] == [1, 2, 3, 4, 5]


async def test_mutate_resends_with_the_same_id_after_a_lost_ack(server, make_client):
    server.drop_before_ack = 1
    client = make_client(server.url)
    await client.connect()
    [result] = await client.mutate([change("a", title="once")])
    first, second = server.frames("mutate")
    assert first["mutations"][0]["id"] == second["mutations"][0]["id"] == str(result.id)
    assert first["ref"] != second["ref"]
    assert server.frames("mutate", conn=2) == [second]
    assert server.log.applied == [str(result.id)]  # the server replayed the stored result
    assert result.status == "applied"


async def test_mutate_sent_while_disconnected_goes_out_on_reconnect(make_client):
    async with FakeServer() as first, FakeServer(first.log) as second:
        client = make_client([first.url, second.url])
        await client.connect()
        await first.kill()
        [result] = await client.mutate([change("a")])
        assert second.frames("mutate")[0]["mutations"][0]["id"] == str(result.id)


async def test_mutate_retries_in_progress_results_with_backoff(server, make_client, sleep):
    server.in_progress = 2
    client = make_client(server.url)
    await client.connect()
    results = await client.mutate([change("a"), change("b")])
    assert [r.status for r in results] == ["applied", "applied"]
    frames = server.frames("mutate")
    assert len(frames) == 3
    assert {m["id"] for f in frames for m in f["mutations"]} == {str(r.id) for r in results}
    assert sleep.delays == [0.005, 0.01]


async def test_mutate_retries_only_what_is_not_final(server, make_client):
    busy = Mutation(id=uuid.uuid4(), stream="s", model=MODEL, pk="b", op="create")
    server.busy.add(str(busy.id))
    client = make_client(server.url)
    await client.connect()
    results = await client.mutate([change("a"), busy, change("c")])
    assert [[m["pk"] for m in f["mutations"]] for f in server.frames("mutate")] == [
        ["a", "b", "c"],
        ["b"],
    ]
    assert [r.status for r in results] == ["applied"] * 3
    assert [r.id for r in results][1] == busy.id
    assert [r.seq for r in results] == [1, 3, 2]


async def test_mutate_gives_up_retrying_and_returns_the_last_result(server, make_client):
    server.in_progress = 100
    client = make_client(server.url, max_mutation_attempts=3)
    await client.connect()
    [result] = await client.mutate([change("a")])
    assert result.error.code == "in_progress"
    assert result.error.retry is True
    assert len(server.frames("mutate")) == 3


async def test_mutate_rate_limited_waits_retry_after(server, make_client, sleep):
    server.refuse_mutate = [{"code": "rate_limited", "retry_after_ms": 250}]
    client = make_client(server.url)
    await client.connect()
    [result] = await client.mutate([change("a")])
    assert sleep.delays == [0.25]
    first, second = server.frames("mutate")
    assert first["mutations"] == second["mutations"]
    assert result.status == "applied"


async def test_mutate_internal_error_frame_is_retried(server, make_client, sleep):
    server.refuse_mutate = [{"code": "internal_error"}]
    client = make_client(server.url)
    await client.connect()
    [result] = await client.mutate([change("a")])
    assert result.status == "applied"
    assert sleep.delays == [0.005]


async def test_mutate_refused_frame_raises(server, make_client):
    server.refuse_mutate = [{"code": "batch_too_large", "message": "too many"}]
    client = make_client(server.url)
    await client.connect()
    with pytest.raises(MutationError, match="batch_too_large") as info:
        await client.mutate([change("a")])
    assert info.value.error_code == "batch_too_large"


async def test_mutate_frame_over_max_frame_bytes_raises_and_keeps_the_connection(make_client):
    async with FakeServer(max_frame_bytes=400) as server:
        client = make_client(server.url)
        await client.connect()
        with pytest.raises(FrameTooLarge):
            await client.mutate([change("a", text="x" * 500)])
        assert server.frames("mutate") == []
        [result] = await client.mutate([change("b")])
        assert result.status == "applied"
        assert client.connection_count == 1


async def test_mutate_frame_the_server_closes_1009_on_is_not_resent(server, make_client):
    server.hard_frame_limit = 1000
    client = make_client(server.url)
    await client.connect()
    with pytest.raises(FrameTooLarge):
        await client.mutate([change("a", text="x" * 2000)])
    await server.wait_frame("hello", count=2)
    [result] = await client.mutate([change("b")])
    assert result.status == "applied"
    assert len(server.oversized) == 1
    assert [f["mutations"][0]["pk"] for f in server.frames("mutate")] == ["b"]
