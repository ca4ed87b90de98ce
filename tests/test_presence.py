"""Presence over the WebSocket, in one process (the in-memory layer and store)."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from syncapp import permissions
from syncapp.hub import current_hub
from tests.ws import Client, adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]

SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}
STREAM = "boards"


async def joined(client, stream=STREAM, state=None):
    await client.subscribe(stream)
    await client.send({"type": "presence", "stream": stream, "state": state or {}})


async def next_presence(client, timeout=5):
    """The next presence diff, skipping other frames."""
    while True:
        frame = await client.receive(timeout)
        if frame["type"] == "presence":
            return frame


async def test_subscribers_get_the_members_on_subscribe(user):
    first = await Client(user).connect()
    await joined(first, state={"cursor": [1, 2]})
    await next_presence(first)  # its own join
    second = await Client(user).connect()
    await second.subscribe(STREAM)
    assert second.presence[STREAM] == {
        first.connection_id: {
            "user": {"id": user.pk, "name": "ada"},
            "client_id": "tab-1",
            "state": {"cursor": [1, 2]},
        }
    }
    await first.close()
    await second.close()


async def test_a_join_and_a_state_change_reach_the_other_subscribers(user, other_user):
    watcher = await Client(user).connect()
    await watcher.subscribe(STREAM)
    typist = await Client(other_user).connect()
    await joined(typist, state={"typing": False})
    join = await next_presence(watcher)
    assert join == {
        "type": "presence",
        "stream": STREAM,
        "joins": {
            typist.connection_id: {
                "user": {"id": other_user.pk, "name": "bea"},
                "client_id": "tab-1",
                "state": {"typing": False},
            }
        },
        "leaves": [],
    }
    await typist.send({"type": "presence", "stream": STREAM, "state": {"typing": True}})
    change = await next_presence(watcher)
    assert change["joins"][typist.connection_id]["state"] == {"typing": True}
    await watcher.close()
    await typist.close()


@override_settings(SYNCAPP={**SETTINGS, "PRESENCE_RATE": 5})
async def test_fast_state_changes_are_coalesced_latest_wins(user, other_user):
    watcher = await Client(user).connect()
    await watcher.subscribe(STREAM)
    mover = await Client(other_user).connect()
    await joined(mover, state={"x": 0})
    await next_presence(watcher)
    for x in range(1, 21):  # twenty cursor moves at once, far over 5 a second
        await mover.send({"type": "presence", "stream": STREAM, "state": {"x": x}})
    seen: list[int] = []
    while not seen or seen[-1] != 20:
        change = await next_presence(watcher)
        seen.append(change["joins"][mover.connection_id]["state"]["x"])
    # The first at once, then the latest each time the interval is up: a handful at most
    # even on a loaded machine, where sending twenty frames may take a few intervals.
    assert len(seen) <= 4
    assert seen[-1] == 20
    assert await watcher.nothing(0.3)
    await watcher.close()
    await mover.close()


@override_settings(SYNCAPP={**SETTINGS, "PRESENCE_MAX_RATE": 1, "PRESENCE_BURST": 2})
async def test_presence_past_the_hard_limit_is_refused(user):
    client = await Client(user).connect()
    await client.subscribe(STREAM)
    for x in range(3):
        await client.send({"type": "presence", "stream": STREAM, "state": {"x": x}, "ref": x})
    while True:
        frame = await client.receive()
        if frame["type"] == "error":
            break
    assert (frame["code"], frame["ref"]) == ("rate_limited", 2)
    assert frame["retry_after_ms"] > 0
    await client.close()


@override_settings(SYNCAPP={**SETTINGS, "PRESENCE_MAX_BYTES": 64})
async def test_presence_state_over_the_size_limit_is_refused(user):
    client = await Client(user).connect()
    await client.subscribe(STREAM)
    await client.send({"type": "presence", "stream": STREAM, "state": {"note": "x" * 100}})
    assert (await client.receive_type("error"))["code"] == "too_large"
    await client.close()


async def test_presence_needs_a_subscription(user):
    client = await Client(user).connect()
    await client.send({"type": "presence", "stream": STREAM, "state": {}})
    error = await client.receive_type("error")
    assert (error["code"], error["stream"]) == ("not_subscribed", STREAM)
    await client.close()


async def test_members_leave_when_they_unsubscribe_or_close(user, other_user):
    watcher = await Client(user).connect()
    await watcher.subscribe(STREAM)
    a, b = await Client(other_user).connect(), await Client(other_user).connect()
    for client in (a, b):
        await joined(client)
        await next_presence(watcher)
    await a.send({"type": "unsubscribe", "stream": STREAM})
    assert (await next_presence(watcher))["leaves"] == [a.connection_id]
    await b.close()
    assert (await next_presence(watcher))["leaves"] == [b.connection_id]
    await watcher.close()


async def test_tabs_of_one_user_are_one_user_with_several_connections(user, other_user):
    watcher = await Client(user).connect()
    tabs = [await Client(other_user).connect() for _ in range(2)]
    for tab in tabs:
        await joined(tab)
    await watcher.subscribe(STREAM)
    members = watcher.presence[STREAM]
    assert set(members) == {tab.connection_id for tab in tabs}
    assert {m["user"]["id"] for m in members.values()} == {other_user.pk}
    for client in (watcher, *tabs):
        await client.close()


async def test_readers_who_lose_access_leave_presence(django_user_model, user):
    watcher = await Client(
        await adb(django_user_model.objects.create_user)("w", is_staff=True)
    ).connect()
    await watcher.subscribe("secret:plans")
    staff = await adb(django_user_model.objects.create_user)("boss", is_staff=True)
    member = await Client(staff).connect()
    await joined(member, "secret:plans")
    await next_presence(watcher)
    await adb(django_user_model.objects.filter(pk=staff.pk).update)(is_staff=False)
    await adb(permissions.revoke)(staff, "secret:plans")
    leave = await next_presence(watcher)
    assert leave["leaves"] == [member.connection_id]
    await watcher.close()
    await member.close()


async def test_nobody_sees_members_of_a_stream_they_cannot_read(user, django_user_model):
    staff = await adb(django_user_model.objects.create_user)("boss", is_staff=True)
    member = await Client(staff).connect()
    await joined(member, "secret:plans")
    outsider = await Client(user).connect()
    [error] = await outsider.subscribe("secret:plans")
    assert error["code"] == "permission_denied"
    assert outsider.presence == {}
    assert await outsider.nothing(0.2)
    await member.close()
    await outsider.close()


@override_settings(SYNCAPP={**SETTINGS, "PRESENCE_TTL": 0.3})
async def test_members_not_renewed_expire_and_leave(user):
    """A member whose process died is not renewed; the sweep announces its leave."""
    watcher = await Client(user).connect()
    await watcher.subscribe(STREAM)
    hub = current_hub()
    await hub.presence.store.put(STREAM, "ghost", '{"user": null, "state": {}}', 0.3)
    leave = await next_presence(watcher, timeout=3)
    assert leave["leaves"] == ["ghost"]
    await watcher.close()


@pytest.mark.redis
async def test_redis_store_keeps_members_until_they_expire(redis_url):
    import uuid

    from syncapp.presence import RedisStore

    store = RedisStore(redis_url, prefix=f"syncapp-test:{uuid.uuid4().hex}")
    try:
        await store.put("s", "alive", '{"state": 1}', 30)
        await store.put("s", "dying", '{"state": 2}', 0.05)
        await asyncio.sleep(0.1)  # past the second member's time-to-live
        assert await store.members("s") == {"alive": '{"state": 1}'}
        assert await store.expire("s") == ["dying"]
        assert await store.expire("s") == []  # only one sweeper removes it
        assert await store.remove("s", "alive") is True
        assert await store.remove("s", "alive") is False
        assert await store.members("s") == {}
    finally:
        await store.close()


def test_presence_store_follows_the_channel_layer(settings):
    from syncapp.presence import MemoryStore, RedisStore, make_store, redis_url

    assert isinstance(make_store(), MemoryStore)
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [("127.0.0.1", 6390)]},
        }
    }
    assert redis_url() == "redis://127.0.0.1:6390"
    assert isinstance(make_store(), RedisStore)
    settings.SYNCAPP = {**settings.SYNCAPP, "PRESENCE_REDIS": "redis://elsewhere:1/2"}
    assert redis_url() == "redis://elsewhere:1/2"
