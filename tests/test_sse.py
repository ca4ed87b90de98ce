"""SSE through django-eventstream, backed by the op log."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest
from django.test import AsyncClient, override_settings

from syncapp import permissions, retention
from syncapp.sse import channel_for
from tests.http_streams import EventReader
from tests.testapp.models import Board, Card
from tests.ws import adb, close_hub

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]


@pytest.fixture
def board(db):
    return Board.objects.create(name="b")


async def client_for(user):
    client = AsyncClient()
    if user is not None:
        await client.aforce_login(user)
    return client


def url(board):
    return f"/sync/api/streams/board:{board.pk}/events/"


def event_id(board, seq):
    return f"{quote(channel_for(f'board:{board.pk}'), safe='')}:{seq}"


async def add_cards(board, count, prefix="c"):
    for i in range(count):
        await adb(Card.objects.create)(board=board, title=f"{prefix}{i}")


async def test_last_event_id_header_resumes_from_the_log_then_goes_live(user, board):
    await add_cards(board, 3)
    client = await client_for(user)
    response = await client.get(url(board), headers={"Last-Event-ID": event_id(board, 1)})
    assert response["Content-Type"] == "text/event-stream"
    events = EventReader(response)
    replayed = await events.ops(2)
    assert [op["seq"] for op in replayed] == [2, 3]
    await add_cards(board, 1, "live")
    [live] = await events.ops(1)
    assert (live["seq"], live["fields"]["title"]) == (4, "live0")
    await events.close()


async def test_event_ids_carry_the_seq(user, board):
    await add_cards(board, 2)
    client = await client_for(user)
    events = EventReader(await client.get(url(board), {"lastEventId": event_id(board, 0)}))
    first = await events.next_named("message")
    assert first["id"] == event_id(board, 1)
    assert json.loads(first["data"])["seq"] == 1
    await events.close()


async def test_position_behind_the_floor_gets_a_stream_reset(user, board):
    await add_cards(board, 5)
    await adb(retention.trim)(f"board:{board.pk}", max_age=None, max_ops=2)
    client = await client_for(user)
    events = EventReader(
        await client.get(url(board), headers={"Last-Event-ID": event_id(board, 1)})
    )
    reset = await events.next_named("stream-reset")
    assert json.loads(reset["data"]) == {"channels": [channel_for(f"board:{board.pk}")]}
    assert reset["id"] == event_id(board, 5)
    await events.close()


@pytest.mark.parametrize("last", ["abc", "-1", "1.5", ""])
async def test_malformed_last_event_id_is_a_400(user, board, last):
    client = await client_for(user)
    response = await client.get(
        url(board),
        headers={"Last-Event-ID": f"{quote(channel_for(f'board:{board.pk}'), safe='')}:{last}"},
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_position")


async def test_last_event_id_ahead_of_the_head_gets_a_reset(user, board):
    await add_cards(board, 1)
    client = await client_for(user)
    events = EventReader(
        await client.get(url(board), headers={"Last-Event-ID": event_id(board, 2**62)})
    )
    assert (await events.next_named("stream-reset"))["id"] == event_id(board, 1)
    await events.close()


async def test_reading_needs_permission(board):
    client = await client_for(None)
    response = await client.get(url(board))
    assert (response.status_code, response.json()["code"]) == (403, "not_authenticated")


async def test_invalid_stream_name_is_a_400(user):
    client = await client_for(user)
    response = await client.get("/sync/api/streams/bad%20name/events/")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_stream")


async def test_revoked_reader_is_cut_off(django_user_model):
    staff = await adb(django_user_model.objects.create_user)("boss", is_staff=True)
    client = await client_for(staff)
    events = EventReader(await client.get("/sync/api/streams/secret:plans/events/"))
    await events.next_named("stream-open")
    await adb(django_user_model.objects.filter(pk=staff.pk).update)(is_staff=False)
    await adb(permissions.revoke)(staff, "secret:plans")
    error = await events.next_named("stream-error")
    assert json.loads(error["data"])["condition"] == "forbidden"
    await events.close()


async def test_dropped_broadcasts_reach_sse_readers_from_the_log(user, board):
    from channels.layers import channel_layers

    alias = f"dropping-{uuid.uuid4().hex[:8]}"
    layers = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        alias: {"BACKEND": "tests.layers.DroppingLayer", "CONFIG": {"drop_every": 2}},
    }
    syncapp = {
        "PERMISSION_CLASS": "tests.testapp.permissions.TestPermission",
        "CHANNEL_LAYER": alias,
        "CHECK_INTERVAL": 0.2,
    }
    with override_settings(CHANNEL_LAYERS=layers, SYNCAPP=syncapp):
        client = await client_for(user)
        events = EventReader(await client.get(url(board), {"lastEventId": event_id(board, 0)}))
        await events.next_named("stream-open")
        await add_cards(board, 10)
        received = await events.ops(10)
        assert [op["seq"] for op in received] == list(range(1, 11))
        await events.close()
        await close_hub()
    channel_layers.backends.pop(alias, None)


async def test_after_a_reset_ahead_of_the_head_live_ops_still_arrive(user, board):
    await add_cards(board, 1)
    client = await client_for(user)
    events = EventReader(
        await client.get(url(board), headers={"Last-Event-ID": event_id(board, 500)})
    )
    await events.next_named("stream-reset")
    await add_cards(board, 1, "live")
    [op] = await events.ops(1)
    assert op["seq"] == 2
    await events.close()


async def test_without_a_position_the_stream_starts_at_the_head(user, board):
    await add_cards(board, 2)
    client = await client_for(user)
    events = EventReader(await client.get(url(board)))
    await events.next_named("stream-open")
    await add_cards(board, 1, "live")
    [op] = await events.ops(1)
    assert op["seq"] == 3
    await events.close()
