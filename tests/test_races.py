"""Live delivery under races, failures and hostile input: each test is a defect a review
found (and proved), kept so that it stays fixed."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import uuid
from urllib.parse import quote

import pytest
from django.db import OperationalError
from django.test import AsyncClient, override_settings
from django.test import Client as SyncClient

from syncapp import consumers, oplog, permissions
from syncapp import hub as hubmod
from syncapp.hub import current_hub
from syncapp.sse import channel_for
from tests.http_streams import EventReader
from tests.testapp.models import Board, Card
from tests.ws import Client, adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]
SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}


@pytest.fixture
def board(db):
    return Board.objects.create(name="b")


def drain(client: Client) -> list[dict]:
    """Every frame (and close) the client has been sent and not read yet."""
    queue = client.communicator.output_queue
    out = []
    while not queue.empty():
        message = queue.get_nowait()
        out.append(json.loads(message["text"]) if message["type"] == "websocket.send" else message)
    return out


def slow_feed_start(monkeypatch, seconds: float = 0.5) -> None:
    """Make a feed's start (its head read, in the hub's thread) slow."""
    real = oplog.head_of

    def slow(*args, **kwargs):
        if threading.current_thread().name.startswith("syncapp-hub"):
            time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(oplog, "head_of", slow)


# The feed's start is shared by its listeners.


async def test_listener_leaving_during_feed_start_does_not_hang_the_others(
    user, board, monkeypatch
):
    stream = f"board:{board.pk}"
    slow_feed_start(monkeypatch)
    a, b = await Client(user).connect(), await Client(user).connect()
    await a.send({"type": "subscribe", "stream": stream})
    await asyncio.sleep(0.05)  # a's subscribe started the feed
    await b.send({"type": "subscribe", "stream": stream})
    await a.send({"type": "unsubscribe", "stream": stream})
    assert (await a.receive_type("unsubscribed"))["stream"] == stream
    await b.receive_type("snapshot")  # b is not left waiting on the start a left
    await b.receive_type("subscribed")
    await a.close()
    await b.close()


async def test_long_poll_ends_at_its_wait_even_when_the_feed_start_is_slow(
    user, board, monkeypatch
):
    stream = f"board:{board.pk}"
    slow_feed_start(monkeypatch, seconds=3)
    http = AsyncClient()
    await http.aforce_login(user)
    head = await adb(oplog.head_of)(stream)
    response = await asyncio.wait_for(
        http.get(f"/sync/api/streams/{stream}/ops/", {"epoch": head.epoch, "wait": 0.3}), 2
    )
    assert (response.status_code, response.json()["ops"]) == (200, [])


async def test_sse_reader_leaving_during_follow_does_not_stop_later_readers(
    user, board, monkeypatch
):
    from syncapp import sse

    stream = f"board:{board.pk}"
    url = f"/sync/api/streams/{stream}/events/"
    slow_feed_start(monkeypatch)
    http = AsyncClient()
    await http.aforce_login(user)
    first = EventReader(await http.get(url))
    with pytest.raises(TimeoutError):
        await first.next(timeout=0.1)  # gives up while the tap follows the stream
    await first.close()
    monkeypatch.undo()
    assert all(tap.readers == 0 for tap in sse._taps.values())
    second = EventReader(await http.get(url))
    await second.next_named("stream-open")
    await adb(Card.objects.create)(board=board, title="live")
    [op] = await second.ops(1)
    assert op["fields"]["title"] == "live"
    await second.close()


# Catch-ups end with their connection.


async def test_slow_client_catching_up_from_the_ring_does_not_freeze_the_process(
    user, board, monkeypatch
):
    stream = f"board:{board.pk}"
    settings = {**SETTINGS, "HEARTBEAT_MS": 200, "HEARTBEAT_TIMEOUT_INTERVALS": 3}
    with override_settings(SYNCAPP=settings):
        a = await Client(user).connect()
        await a.subscribe(stream)
        for i in range(5):
            await adb(Card.objects.create)(board=board, title=f"c{i}")
        await a.ops(5)
        await a.close()  # the feed lingers, its ring holding 1..5
        epoch = (await adb(oplog.head_of)(stream)).epoch
        b = await Client(user).connect()
        monkeypatch.setattr(consumers.ServerSocket, "backlog", lambda self: 10**9)
        await b.send({"type": "subscribe", "stream": stream, "after": {"epoch": epoch, "seq": 2}})
        await adb(Card.objects.create)(board=board, title="live")  # buffered meanwhile
        # The catch-up waits for a client that never reads until it is closed, as slow
        # (4503) or silent (4408), whichever comes first; the loop keeps turning all along
        # (a busy loop would never let this close happen).
        assert await b.closed(timeout=5) in (4503, 4408)


async def test_catch_up_buffer_is_bounded(user, board, monkeypatch):
    stream = f"board:{board.pk}"
    epoch = (await adb(oplog.head_of)(stream)).epoch
    with override_settings(SYNCAPP={**SETTINGS, "OUTBOX_BYTES": 20_000}):
        client = await Client(user).connect()
        monkeypatch.setattr(consumers.ServerSocket, "backlog", lambda self: 10**9)
        await client.send(
            {"type": "subscribe", "stream": stream, "after": {"epoch": epoch, "seq": 0}}
        )
        for _ in range(4):
            await adb(Card.objects.bulk_create)(
                [Card(board=board, title="t" * 190) for _ in range(50)]
            )
        consumer = next(iter(current_hub().connections))
        sub = consumer.subscriptions.get(stream)
        held = sum(len(t) for batch in sub._buffer for t in batch.ops) if sub else 0
        assert held <= 20_000
        monkeypatch.undo()
        await client.close()


# Subscribing again.


async def test_subscribe_again_then_unsubscribe_sends_nothing_more(user, board, monkeypatch):
    stream = f"board:{board.pk}"
    slow_feed_start(monkeypatch)
    client = await Client(user).connect()
    await client.send({"type": "subscribe", "stream": stream})
    await asyncio.sleep(0.05)
    await client.send({"type": "subscribe", "stream": stream})  # restarts the first
    await asyncio.sleep(0.05)
    await client.send({"type": "unsubscribe", "stream": stream})
    await client.receive_type("unsubscribed")
    assert await client.nothing(1.0)  # no stale snapshot after unsubscribed
    await client.close()


class Members:
    allowed: set[str] = set()


class MembershipPermission(permissions.BasePermission):
    def can_read(self, user, stream):
        return stream in Members.allowed


async def test_refused_subscribe_again_ends_the_old_subscription(user, board):
    stream = f"board:{board.pk}"
    Members.allowed = {stream}
    with override_settings(SYNCAPP={"PERMISSION_CLASS": f"{__name__}.MembershipPermission"}):
        permissions._instance.cache_clear()
        client = await Client(user).connect()
        frames = await client.subscribe(stream)
        Members.allowed = set()
        [error] = await client.subscribe(stream, {"epoch": frames[-1]["epoch"], "seq": 0})
        assert error["code"] == "permission_denied"
        await adb(Card.objects.create)(board=board, title="after")
        assert await client.nothing(0.5)
        await client.close()
    permissions._instance.cache_clear()


# Access.


async def test_deactivated_user_is_cut_off_by_revoke(django_user_model, board):
    eve = await adb(django_user_model.objects.create_user)("eve", password="pw")
    with override_settings(SYNCAPP={"PERMISSION_CLASS": "syncapp.permissions.IsAuthenticated"}):
        permissions._instance.cache_clear()
        client = await Client(eve).connect()
        stream = f"board:{board.pk}"
        await client.subscribe(stream)
        await adb(django_user_model.objects.filter(pk=eve.pk).update)(is_active=False)
        await adb(permissions.revoke)(eve)
        error = await client.receive_type("error")
        assert (error["code"], error["stream"]) == ("permission_denied", stream)
        await client.close()
    permissions._instance.cache_clear()


def test_revocations_name_users_in_text_so_every_layer_carries_them():
    from channels_redis.core import RedisChannelLayer

    user = type("User", (), {"pk": uuid.uuid4()})()
    layer = RedisChannelLayer(hosts=[("127.0.0.1", 6379)])
    message = {"type": hubmod.REVOKE, "user": hubmod.user_key(user), "stream": None}
    assert layer.deserialize(layer.serialize(message)) == message


async def test_frames_on_a_connection_refused_with_4401_are_ignored():
    client = Client(path="/sync/ws/?token=garbage")
    await client.communicator.connect(timeout=5)
    await client.send({"type": "hello", "client_id": "x", "protocol": 1})
    await client.send(
        {
            "type": "mutate",
            "mutations": [
                {
                    "id": str(uuid.uuid4()),
                    "stream": "public:boards",
                    "model": "testapp.board",
                    "pk": str(uuid.uuid4()),
                    "op": "create",
                    "fields": {"name": "via-refused-socket", "public": True},
                }
            ],
        }
    )
    assert await client.closed() == 4401
    assert not await adb(Board.objects.filter(name="via-refused-socket").exists)()


@pytest.mark.parametrize(
    "headers",
    [[], [(b"origin", b"null")], [(b"origin", b"https://evil.example")]],
    ids=["missing", "null", "foreign"],
)
async def test_wildcard_allowed_hosts_still_refuses_other_origins(user, headers):
    with override_settings(ALLOWED_HOSTS=["*"]):
        client = Client(user, headers=[*headers, (b"host", b"app.example")])
        connected, _ = await client.communicator.connect(timeout=5)
    assert connected is False


async def test_wildcard_allowed_hosts_accepts_the_sites_own_origin(user):
    with override_settings(ALLOWED_HOSTS=["*"]):
        headers = [(b"origin", b"https://app.example"), (b"host", b"app.example")]
        client = Client(user, headers=headers)
        connected, _ = await client.communicator.connect(timeout=5)
    assert connected is True
    await client.close()


# Failures stay in their frame.


async def test_a_failing_subscribe_fails_alone(user, board, monkeypatch):
    client = await Client(user).connect()
    await client.subscribe("boards")
    real = oplog.snapshot

    def failing(name):
        if name == f"board:{board.pk}":
            raise OperationalError("database is locked")
        return real(name)

    monkeypatch.setattr(oplog, "snapshot", failing)
    [error] = await client.subscribe(f"board:{board.pk}")
    assert (error["code"], error["stream"]) == ("internal_error", f"board:{board.pk}")
    await adb(Board.objects.create)(name="still live")
    [op] = await client.ops(1)
    assert op["fields"]["name"] == "still live"
    await client.close()


# SSE.


async def test_sse_reader_gets_a_reset_and_an_end_when_the_history_is_reset(user, board):
    stream = f"board:{board.pk}"
    http = AsyncClient()
    await http.aforce_login(user)
    reader = EventReader(await http.get(f"/sync/api/streams/{stream}/events/"))
    await reader.next_named("stream-open")
    for i in range(3):
        await adb(Card.objects.create)(board=board, title=f"old{i}")
    await reader.ops(3)
    await adb(oplog.reset)(stream)
    for i in range(5):
        await adb(Card.objects.create)(board=board, title=f"new{i}")
    reset = await reader.next_named("stream-reset")
    assert json.loads(reset["data"]) == {"channels": [channel_for(stream)]}
    with pytest.raises(StopAsyncIteration):  # the client reloads and reconnects
        await reader.next(timeout=5)


async def test_last_event_id_naming_the_stream_twice_is_a_400(user, board):
    stream = f"board:{board.pk}"
    http = AsyncClient()
    await http.aforce_login(user)
    channel = quote(channel_for(stream), safe="")
    response = await http.get(
        f"/sync/api/streams/{stream}/events/",
        headers={"Last-Event-ID": f"{channel}:0,{channel}:abc"},
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_position")


# Long-poll needs a long-lived event loop.


def test_long_poll_under_wsgi_is_refused_and_builds_no_hub(user, board):
    client = SyncClient()
    client.force_login(user)
    stream = f"board:{board.pk}"
    epoch = oplog.head_of(stream).epoch
    before = len(hubmod._hubs)
    response = client.get(f"/sync/api/streams/{stream}/ops/", {"epoch": epoch, "wait": 0.05})
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    gc.collect()
    assert len(hubmod._hubs) == before
