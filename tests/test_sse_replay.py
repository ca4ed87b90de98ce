"""The SSE catch-up: a request that resumes from a position is served from the op log by
syncapp's events view in large pages, then handed over to django-eventstream live."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from django.db import transaction
from django.test import AsyncClient

from syncapp import oplog, retention, sse
from syncapp.oplog import OpDraft
from syncapp.sse import channel_for
from tests.helpers import eventstream_text
from tests.http_streams import EventReader
from tests.testapp.models import Board, Card
from tests.ws import adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]

#: Small pages, so that a few hundred ops cross several of them.
PAGES = (40, 150)


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch):
    monkeypatch.setattr(sse, "CATCH_UP_PAGES", PAGES)


@pytest.fixture
def board(db):
    return Board.objects.create(name="b")


def stream_of(board: Board) -> str:
    return f"board:{board.pk}"


def url(board: Board) -> str:
    return f"/sync/api/streams/{stream_of(board)}/events/"


def event_id(stream: str, seq: int) -> str:
    return f"{quote(channel_for(stream), safe='')}:{seq}"


def add_cards(board: Board, count: int, prefix: str = "c") -> None:
    """``count`` cards in one transaction: ``count`` ops in the board's stream."""
    Card.objects.bulk_create(Card(board=board, title=f"{prefix}{i}") for i in range(count))


async def open_events(user: Any, path: str, last: str | None) -> Any:
    client = AsyncClient()
    if user is not None:
        await client.aforce_login(user)
    headers = {"Last-Event-ID": last} if last is not None else {}
    return await client.get(path, headers=headers)


def expected_text(stream: str, after: int, limit: int = 10_000) -> str:
    """What django-eventstream's own loop sends for these ops through OpLogStorage."""
    return eventstream_text(stream, after, limit)


async def read_until(events: EventReader, name: str) -> list[dict[str, str]]:
    """Events up to and including the first one named ``name``."""
    seen = []
    while True:
        event = await events.next()
        seen.append(event)
        if event.get("event") == name:
            return seen


async def test_a_large_replay_crosses_pages_complete_in_order_once(user, board):
    await adb(add_cards)(board, 500)
    stream = stream_of(board)
    response = await open_events(user, url(board), event_id(stream, 7))
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    events = EventReader(response)
    assert (await events.next())["event"] == "stream-open"
    ops = await events.ops(493)
    assert [op["seq"] for op in ops] == list(range(8, 501))
    await adb(add_cards)(board, 1, "live")
    [live] = await events.ops(1)
    assert (live["seq"], live["fields"]["title"]) == (501, "live0")
    await events.close()


async def test_the_catch_up_is_what_django_eventstream_would_send(user, board):
    await adb(add_cards)(board, 300)
    stream = stream_of(board)
    response = await open_events(user, url(board), event_id(stream, 0))
    chunks = aiter(response.streaming_content)
    received = b""
    while received.count(b"\n\n") < 302:  # the padding, stream-open and 300 events
        received += await anext(chunks)
    assert received.decode() == sse.OPENING + await adb(expected_text)(stream, 0)
    await chunks.aclose()


def _append(stream: str, drafts: list[OpDraft]) -> None:
    with transaction.atomic():
        oplog.append(drafts)


async def test_unusual_ops_are_sent_as_django_eventstream_would(user):
    # Integer and text keys, nested objects, keys that sort differently by case and
    # accent, a float, text that looks nested, no mutation id.
    stream = "public:odd"
    drafts = [
        OpDraft(stream, "testapp.doc", "42", "update", {"text": "a\nb", "b": 1, "B": 2}, 3),
        OpDraft(stream, "testapp.doc", "7", "delete", {}, 1),
        OpDraft(stream, "testapp.board", str(uuid.uuid4()).upper(), "create", {"x": 1.5}, 1),
        OpDraft(
            stream, "nope.model", 'quo"te', "create", {"é": 1, "e": {"z": 1, "a": [{"y": 2}]}}, 1
        ),
        OpDraft(stream, "testapp.card", str(uuid.uuid4()), "update", {"s": "{not nested}"}, 2),
    ]
    await adb(_append)(stream, drafts)
    head = await adb(oplog.head_of)(stream)
    rows = await adb(oplog.read_rows)(stream, epoch=head.epoch, after=0, limit=100)
    encoder = sse.PageEncoder(channel_for(stream), head.epoch)
    assert encoder.encode(rows).decode() == await adb(expected_text)(stream, 0)


async def test_an_op_committed_at_the_handover_arrives_once(user, board, monkeypatch):
    await adb(add_cards)(board, 100)
    stream = stream_of(board)
    read_rows = oplog.read_rows
    committed: list[Card] = []

    def read_then_write(*args: Any, **kwargs: Any) -> oplog.RowPage:
        page = read_rows(*args, **kwargs)
        if page.rows and page.first + len(page.rows) - 1 == page.head and not committed:
            # After the catch-up's last read, before django-eventstream takes over.
            committed.append(Card.objects.create(board=board, title="between"))
        return page

    monkeypatch.setattr(oplog, "read_rows", read_then_write)
    events = EventReader(await open_events(user, url(board), event_id(stream, 0)))
    ops = await events.ops(101)
    assert [op["seq"] for op in ops] == list(range(1, 102))
    assert ops[-1]["fields"]["title"] == "between"
    await adb(add_cards)(board, 1, "live")
    [live] = await events.ops(1)
    assert live["seq"] == 102  # nothing repeated in between
    await events.close()


async def test_ops_committed_during_the_catch_up_arrive_once(user, board, monkeypatch):
    await adb(add_cards)(board, 200)
    stream = stream_of(board)
    read_rows = oplog.read_rows
    reads: list[int | None] = []

    def read_and_write(*args: Any, **kwargs: Any) -> oplog.RowPage:
        page = read_rows(*args, **kwargs)
        reads.append(page.first + len(page.rows) - 1 if page.rows else None)
        if len(reads) <= 3:
            add_cards(board, 30, f"during{len(reads)}-")
        return page

    monkeypatch.setattr(oplog, "read_rows", read_and_write)
    events = EventReader(await open_events(user, url(board), event_id(stream, 0)))
    ops = await events.ops(290)
    assert [op["seq"] for op in ops] == list(range(1, 291))
    assert len(reads) >= 3
    await adb(add_cards)(board, 1, "live")
    [live] = await events.ops(1)
    assert live["seq"] == 291
    await events.close()


async def test_a_trim_during_the_catch_up_gets_a_stream_reset_then_goes_live(
    user, board, monkeypatch
):
    await adb(add_cards)(board, 300)
    stream = stream_of(board)
    read_rows = oplog.read_rows
    calls: list[int] = []

    def trim_then_read(*args: Any, **kwargs: Any) -> oplog.RowPage:
        calls.append(kwargs["after"])
        if len(calls) == 2:
            retention.trim(stream, max_age=None, max_ops=10)
        return read_rows(*args, **kwargs)

    monkeypatch.setattr(oplog, "read_rows", trim_then_read)
    events = EventReader(await open_events(user, url(board), event_id(stream, 0)))
    seen = await read_until(events, "stream-reset")
    assert [json.loads(e["data"])["seq"] for e in seen if e.get("event") == "message"] == list(
        range(1, PAGES[0] + 1)
    )
    reset = seen[-1]
    assert reset["id"] == event_id(stream, 300)
    assert json.loads(reset["data"]) == {"channels": [channel_for(stream)]}
    await adb(add_cards)(board, 1, "live")
    [live] = await events.ops(1)
    assert live["seq"] == 301
    await events.close()


async def test_a_history_reset_during_the_catch_up_ends_with_a_stream_reset(
    user, board, monkeypatch
):
    await adb(add_cards)(board, 300)
    stream = stream_of(board)
    read_rows = oplog.read_rows
    calls: list[int] = []

    def reset_then_read(*args: Any, **kwargs: Any) -> oplog.RowPage:
        calls.append(kwargs["after"])
        if len(calls) == 2:
            oplog.reset(stream)
            add_cards(board, 250, "new")  # the new epoch's seqs cover the old position
        return read_rows(*args, **kwargs)

    monkeypatch.setattr(oplog, "read_rows", reset_then_read)
    response = await open_events(user, url(board), event_id(stream, 0))
    events = EventReader(response)
    seen = await read_until(events, "stream-reset")
    messages = [json.loads(e["data"]) for e in seen if e.get("event") == "message"]
    assert [op["seq"] for op in messages] == list(range(1, PAGES[0] + 1))
    assert all(not op["fields"]["title"].startswith("new") for op in messages)
    assert seen[-1]["id"] == event_id(stream, 0)
    with pytest.raises(StopAsyncIteration):
        await events.next()  # the response ended: the client loads a snapshot


async def test_a_reader_revoked_during_the_catch_up_is_cut_off(django_user_model, monkeypatch):
    staff = await adb(django_user_model.objects.create_user)("boss", is_staff=True)
    stream = "secret:plans"
    drafts = [
        OpDraft(stream, "testapp.doc", str(i), "update", {"text": f"t{i}"}, 1)
        for i in range(1, 301)
    ]
    await adb(_append)(stream, drafts)
    read_rows = oplog.read_rows
    calls: list[int] = []

    def revoke_after_first(*args: Any, **kwargs: Any) -> oplog.RowPage:
        calls.append(kwargs["after"])
        if len(calls) == 1:
            django_user_model.objects.filter(pk=staff.pk).update(is_staff=False)
        return read_rows(*args, **kwargs)

    monkeypatch.setattr(oplog, "read_rows", revoke_after_first)
    events = EventReader(
        await open_events(staff, f"/sync/api/streams/{stream}/events/", event_id(stream, 0))
    )
    seen = await read_until(events, "stream-error")
    messages = [e for e in seen if e.get("event") == "message"]
    assert len(messages) <= PAGES[0]  # what was read before the revocation, at most
    error = json.loads(seen[-1]["data"])
    assert error["condition"] == "forbidden"
    assert error["channels"] == [channel_for(stream)]
    assert seen[-1]["id"] == "error"
    with pytest.raises(StopAsyncIteration):
        await events.next()


@pytest.mark.parametrize("last", ["abc", "-1", "1.5", "", str(2**63)])
async def test_a_bad_last_event_id_is_a_400_with_a_log_to_replay(user, board, last):
    await adb(add_cards)(board, 50)
    stream = stream_of(board)
    response = await open_events(user, url(board), f"{quote(channel_for(stream), safe='')}:{last}")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_position")


async def test_a_stream_named_twice_is_a_400(user, board):
    await adb(add_cards)(board, 50)
    stream = stream_of(board)
    last = f"{event_id(stream, 1)},{event_id(stream, 2)}"
    response = await open_events(user, url(board), last)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_position")


async def test_a_position_behind_the_floor_is_reset_not_caught_up(user, board):
    await adb(add_cards)(board, 100)
    stream = stream_of(board)
    await adb(retention.trim)(stream, max_age=None, max_ops=10)
    events = EventReader(await open_events(user, url(board), event_id(stream, 5)))
    reset = await events.next_named("stream-reset")
    assert reset["id"] == event_id(stream, 100)
    await adb(add_cards)(board, 1, "live")
    [live] = await events.ops(1)
    assert live["seq"] == 101
    await events.close()


async def test_other_channels_in_last_event_id_are_ignored(user, board):
    await adb(add_cards)(board, 60)
    stream = stream_of(board)
    last = f"{quote(channel_for('public:else'), safe='')}:3,{event_id(stream, 55)}"
    events = EventReader(await open_events(user, url(board), last))
    ops = await events.ops(5)
    assert [op["seq"] for op in ops] == [56, 57, 58, 59, 60]
    await events.close()
