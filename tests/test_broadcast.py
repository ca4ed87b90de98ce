"""Broadcast after commit: one channel-layer message per stream and transaction, each op
encoded once, the same text the ops endpoint serves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.db import transaction

from syncapp import broadcast, encoding, oplog
from syncapp.models import Op
from syncapp.sse import OpLogStorage, channel_for
from tests.helpers import ops
from tests.testapp.models import Board, Card

pytestmark = pytest.mark.django_db


def subscribe(stream: str, alias: str = "default") -> tuple[Any, str]:
    layer = get_channel_layer(alias)
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(broadcast.stream_group(stream), channel)
    return layer, channel


def receive(layer, channel, timeout: float = 5.0):
    async def get():
        return await asyncio.wait_for(layer.receive(channel), timeout)

    return async_to_sync(get)()


def nothing_waiting(layer, channel) -> bool:
    async def poll():
        try:
            await asyncio.wait_for(layer.receive(channel), 0.05)
        except TimeoutError:
            return True
        return False

    return async_to_sync(poll)()


def test_group_names_are_valid_channel_layer_names():
    name = broadcast.stream_group("a:" * 100)
    assert len(name) < 100
    assert name.replace(".", "").replace("_", "").replace("-", "").isalnum()
    assert broadcast.stream_group("a:b") != broadcast.stream_group("a_b")


def test_committed_ops_reach_the_stream_group(board, django_capture_on_commit_callbacks):
    layer, channel = subscribe(f"board:{board.pk}")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        Card.objects.create(board=board, title="a")
        Card.objects.create(board=board, title="b")
    stored = ops(f"board:{board.pk}")
    first, second = receive(layer, channel), receive(layer, channel)
    for message, op in zip([first, second], stored, strict=True):
        assert message["type"] == "syncapp.ops"
        assert (message["first"], message["last"]) == (op.seq, op.seq)
        assert message["ops"] == [encoding.encode_op(op, op.stream.name, op.stream.epoch)]


def test_an_op_is_the_same_text_live_and_replayed(django_capture_on_commit_callbacks):
    """Nested objects included, whose keys PostgreSQL's jsonb would reorder: what the
    group got is what the log serves, to the ops endpoint, the SSE catch-up and
    django-eventstream's storage."""
    stream = "public:nested"
    layer, channel = subscribe(stream)
    fields = {"z": 1, "a": {"y": [1, {"c": 2, "b": 3}], "x": None}, "é": "naïve"}
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        oplog.append([oplog.OpDraft(stream, "testapp.doc", "7", "update", fields, 2)])
    [live] = receive(layer, channel)["ops"]
    assert '"a":{"y":[1,{"c":2,"b":3}],"x":null}' in live
    head = oplog.head_of(stream)
    assert [op.encoded for op in oplog.read(stream, epoch=None, after=0, limit=10).ops] == [live]
    page = oplog.read_rows(stream, epoch=head.epoch, after=0, limit=10)
    [(text,)] = page.rows
    assert page.first == 1
    assert (text.decode() if isinstance(text, bytes) else text) == live
    [event] = OpLogStorage().get_events(channel_for(stream), 0)
    assert event.data == live


def test_bulk_write_is_one_message(board, django_capture_on_commit_callbacks):
    layer, channel = subscribe(f"board:{board.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        Card.objects.bulk_create([Card(board=board, title=str(i)) for i in range(3)])
    message = receive(layer, channel)
    assert (message["first"], message["last"], len(message["ops"])) == (1, 3, 3)
    assert nothing_waiting(layer, channel)


def test_rolled_back_ops_are_never_sent(board, django_capture_on_commit_callbacks):
    layer, channel = subscribe(f"board:{board.pk}")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        Card.objects.create(board=board, title="a")
        transaction.set_rollback(True)
    assert nothing_waiting(layer, channel)


def test_each_op_is_encoded_once(board, django_capture_on_commit_callbacks, monkeypatch):
    calls = []

    def counting(op, stream, epoch):
        calls.append(op.seq)
        return encoding.encode_op(op, stream, epoch)

    monkeypatch.setattr(oplog, "encode_op", counting)
    subscribe(f"board:{board.pk}")
    subscribe(f"board:{board.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        Card.objects.bulk_create([Card(board=board, title=str(i)) for i in range(3)])
    assert calls == [1, 2, 3]


def test_broadcast_failure_is_logged_not_raised(board, caplog, monkeypatch):
    layer = get_channel_layer()

    async def broken(group, message):
        raise ConnectionError("layer down")

    monkeypatch.setattr(layer, "group_send", broken)
    card = Card.objects.create(board=board, title="a")
    with caplog.at_level(logging.WARNING, logger="syncapp.broadcast"):
        broadcast.send(card.sync_stream, "e", ops(card.sync_stream))
    assert "Could not broadcast ops 1..1" in caplog.text


@pytest.mark.parametrize("batched", [False, True], ids=["one write", "a batch"])
def test_an_op_that_cannot_be_encoded_fails_its_write(
    board, monkeypatch, django_capture_on_commit_callbacks, batched
):
    """Ops are encoded as they are written: one that cannot be could be neither sent nor
    replayed, so its write fails, and nothing of it is committed or sent."""
    layer, channel = subscribe(f"board:{board.pk}")

    def broken(op, stream, epoch):
        raise ValueError("cannot encode")

    monkeypatch.setattr(oplog, "encode_op", broken)
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(ValueError, match="cannot encode"),
        transaction.atomic(),
    ):
        if batched:
            with broadcast.coalesced("default"):
                Card.objects.create(board=board, title="a")
        else:
            Card.objects.create(board=board, title="a")
    assert not Card.objects.filter(title="a").exists()
    assert not Op.objects.filter(stream__name=f"board:{board.pk}").exists()
    assert nothing_waiting(layer, channel)


def test_broadcast_off_sends_nothing(board, settings, django_capture_on_commit_callbacks):
    layer, channel = subscribe(f"board:{board.pk}")
    settings.SYNCAPP = {**settings.SYNCAPP, "CHANNEL_LAYER": None}
    with django_capture_on_commit_callbacks(execute=True):
        Card.objects.create(board=board, title="a")
    assert nothing_waiting(layer, channel)


@pytest.mark.redis
def test_ops_cross_redis(redis_url, settings, django_capture_on_commit_callbacks):
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "redis": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": "syncapp-test"},
        },
    }
    settings.SYNCAPP = {**settings.SYNCAPP, "CHANNEL_LAYER": "redis"}
    try:
        board = Board.objects.create(name="r")
        layer, channel = subscribe(f"board:{board.pk}", "redis")
        with django_capture_on_commit_callbacks(execute=True):
            Card.objects.create(board=board, title="over redis")
        message = receive(layer, channel)
        assert message["ops"] == [
            encoding.encode_op(op, op.stream.name, op.stream.epoch)
            for op in ops(f"board:{board.pk}")
        ]
        async_to_sync(layer.flush)()
    finally:
        channel_layers.backends.pop("redis", None)
