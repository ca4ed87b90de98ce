"""The client against a fake server: hello, subscriptions, gaps, resets, resume, close."""

from __future__ import annotations

import asyncio

import pytest

from syncapp.client import (
    ClientClosed,
    ClientError,
    GapDetected,
    StreamReset,
    SubscriptionError,
    SyncClient,
)
from syncapp.protocol import ObjectState, Position

MODEL = "todos.todo"


async def test_client_says_hello_with_its_id_and_protocol(server, make_client):
    client = make_client(server.url, client_id="bench-1")
    await client.connect()
    hello = await server.wait_frame("hello")
    assert hello["client_id"] == "bench-1"
    assert hello["protocol"] == 1
    assert client.state == "connected"
    assert client.welcome.heartbeat_ms == server.heartbeat_ms


async def test_client_default_client_id_is_valid_and_stable(server, make_client):
    client = make_client(server.url)
    await client.connect()
    await server.drop()
    await server.wait_frame("hello", count=2)
    ids = {f["client_id"] for f in server.frames("hello")}
    assert ids == {client.client_id}


async def test_client_sends_origin_derived_from_the_url(server, make_client):
    await make_client(server.url).connect()
    assert server.conns[0].origin == server.url.split("/sync")[0].replace("ws://", "http://")


async def test_client_sends_given_origin_and_headers(server, make_client):
    client = make_client(server.url, origin="https://app.example", headers={"X-Bench": "1"})
    await client.connect()
    assert server.conns[0].origin == "https://app.example"
    assert server.conns[0].headers["X-Bench"] == "1"


async def test_client_subscribe_loads_snapshot(server, make_client):
    await server.log.commit("s", MODEL, "a", "create", {"title": "milk"})
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    assert server.frames("subscribe")[0]["after"] is None
    assert handle.objects == {
        (MODEL, "a"): ObjectState(model=MODEL, pk="a", version=1, fields={"title": "milk"})
    }
    assert handle.position == Position(epoch="epoch-1", seq=1)
    assert client.streams == {"s": handle}


async def test_client_subscribe_twice_returns_the_same_handle(server, make_client):
    client = make_client(server.url)
    await client.connect()
    assert await client.subscribe("s") is await client.subscribe("s")
    assert len(server.frames("subscribe")) == 1


async def test_client_applies_live_ops_and_wait_for_sees_them(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    with handle.ops() as feed:
        await server.log.commit("s", MODEL, "a", "create", {"title": "milk"})
        await server.log.commit("s", MODEL, "a", "update", {"done": True})
        await handle.wait_for(2, timeout=5)
        assert handle.get(MODEL, "a").fields == {"title": "milk", "done": True}
        assert [(await anext(feed)).seq, (await anext(feed)).seq] == [1, 2]


async def test_client_resumes_from_last_position_after_a_drop(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    await server.log.commit("s", MODEL, "a", "create", {"n": 1})
    await handle.wait_for(1, timeout=5)
    with handle.ops() as feed:
        await server.drop(1012)
        # Committed while the client is away: it must come from the resume.
        await server.log.commit("s", MODEL, "a", "update", {"n": 2})
        await server.log.commit("s", MODEL, "a", "update", {"n": 3})
        await handle.wait_for(3, timeout=5)
        assert [(await anext(feed)).seq for _ in range(2)] == [2, 3]
    resubscribe = server.frames("subscribe", conn=2)[0]
    assert resubscribe["after"] == {"epoch": "epoch-1", "seq": 1}
    assert handle.get(MODEL, "a").fields == {"n": 3}
    assert client.connection_count == 2


@pytest.mark.parametrize("code", [None, 1011, 4408, 4503, 1001])
async def test_client_reconnects_after(server, make_client, code):
    client = make_client(server.url)
    await client.connect()
    await client.subscribe("s")
    await server.drop(code)
    await server.wait_frame("subscribe", conn=2)
    assert client.error is None


async def test_client_gap_resubscribes_with_after(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    events = handle.events()
    await server.log.commit("s", MODEL, "a", "create", {"n": 1})
    await server.log.commit("s", MODEL, "a", "update", {"n": 2}, deliver=False)  # lost
    await server.log.commit("s", MODEL, "a", "update", {"n": 3})
    await handle.wait_for(3, timeout=5)
    assert server.frames("subscribe")[1]["after"] == {"epoch": "epoch-1", "seq": 1}
    assert handle.get(MODEL, "a").fields == {"n": 3}
    seen = [await anext(events) for _ in range(4)]
    assert seen[1] == GapDetected("s", "epoch-1", 1, "epoch-1", 3)
    assert [e.op.seq for e in seen if hasattr(e, "op")] == [1, 2, 3]
    assert client.connection_count == 1


async def test_client_reset_loads_a_snapshot(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    events = handle.events()
    server.log.reset("s", "epoch-2")
    await server.log.commit("s", MODEL, "b", "create", {"n": 1}, deliver=False)
    await server.send({"type": "reset", "stream": "s", "epoch": "epoch-2", "reason": "trimmed"})
    await server.wait_frame("subscribe", count=2)
    assert server.frames("subscribe")[1]["after"] is None
    await handle.wait_for(1, timeout=5)
    assert handle.position == Position(epoch="epoch-2", seq=1)
    assert await anext(events) == StreamReset("s", "epoch-2", "trimmed")


async def test_client_new_epoch_in_ops_ends_in_a_snapshot(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    await server.log.commit("s", MODEL, "a", "create", {"n": 1})
    await handle.wait_for(1, timeout=5)
    server.log.reset("s", "epoch-2")
    await server.log.commit("s", MODEL, "a", "update", {"n": 2})
    # after={old epoch} -> reset epoch_changed -> subscribe without after -> snapshot.
    await server.wait_frame("subscribe", count=3)
    subscribes = server.frames("subscribe")
    assert subscribes[1]["after"] == {"epoch": "epoch-1", "seq": 1}
    assert subscribes[2]["after"] is None
    await handle.wait_for(1, timeout=5)
    await server.wait_for(lambda: handle.position == Position(epoch="epoch-2", seq=1))
    assert handle.get(MODEL, "a").fields == {"n": 2}


async def test_client_reset_on_resume_loads_a_snapshot(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    await server.log.commit("s", MODEL, "a", "create", {"n": 1})
    await handle.wait_for(1, timeout=5)
    await server.drop()
    server.log.stream("s").trimmed_before = 5
    await server.log.commit("s", MODEL, "a", "update", {"n": 2}, deliver=False)
    await server.wait_frame("subscribe", conn=2, count=2)
    assert [f["after"] for f in server.frames("subscribe", conn=2)] == [
        {"epoch": "epoch-1", "seq": 1},
        None,
    ]


async def test_client_subscription_denied_raises(server, make_client):
    server.deny.add("secret")
    client = make_client(server.url)
    await client.connect()
    with pytest.raises(SubscriptionError) as info:
        await client.subscribe("secret")
    assert info.value.error_code == "permission_denied"
    assert "secret" not in client.streams


async def test_client_revoked_subscription_ends_its_feed(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    feed = handle.ops()
    await server.send(
        {"type": "error", "code": "permission_denied", "message": "revoked", "stream": "s"}
    )
    with pytest.raises(SubscriptionError):
        await asyncio.wait_for(anext(feed), 5)
    assert handle.ended
    await server.drop()
    await server.wait_frame("hello", count=2)
    await client.wait_connected()
    await client.subscribe("t")  # the replay of what is still subscribed went out before
    assert [f["stream"] for f in server.frames("subscribe", conn=2)] == ["t"]


async def test_client_unsubscribe_ends_feeds_and_is_not_resubscribed(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    feed = handle.ops()
    await client.unsubscribe("s")
    assert (await server.wait_frame("unsubscribe"))["stream"] == "s"
    assert [op async for op in feed] == []
    assert client.streams == {}


async def test_client_close_fails_waiting_calls(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    waiter = asyncio.create_task(handle.wait_for(10))
    await asyncio.sleep(0)
    await client.close()
    with pytest.raises(ClientClosed):
        await waiter
    assert client.state == "closed"
    with pytest.raises(ClientClosed):
        await client.subscribe("t")
    await client.wait_closed()  # closed on purpose: nothing to raise


async def test_client_calls_before_connect_are_an_error(server):
    client = SyncClient(server.url)
    with pytest.raises(ClientError, match="connect"):
        await client.subscribe("s")


async def test_client_context_manager_connects_and_closes(server):
    async with SyncClient(server.url) as client:
        assert len(server.live) == 1
    assert client.state == "closed"
    await server.wait_for(lambda: not server.live)


def test_client_validates_its_arguments():
    with pytest.raises(ValueError, match="URL"):
        SyncClient([])
    with pytest.raises(ValueError, match="client_id"):
        SyncClient("ws://h/", client_id="no spaces")
    with pytest.raises(ValueError, match="valid URI"):
        SyncClient("http://h/")


async def test_client_subscribe_internal_error_is_retried(server, make_client, sleep):
    server.refuse_subscribe = [{"code": "internal_error"}]
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    assert handle.live
    assert len(server.frames("subscribe")) == 2
    assert sleep.delays == [0.005]


async def test_client_rate_limited_subscribe_is_retried_after_the_wait(server, make_client, sleep):
    server.refuse_subscribe = [{"code": "rate_limited", "retry_after_ms": 250}]
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    assert handle.live
    assert len(server.frames("subscribe")) == 2
    assert sleep.delays == [0.25]


async def test_client_too_many_subscriptions_raises(server, make_client):
    server.refuse_subscribe = [{"code": "too_many_subscriptions", "message": "100"}]
    client = make_client(server.url)
    await client.connect()
    with pytest.raises(SubscriptionError, match="too_many_subscriptions"):
        await client.subscribe("s")


async def test_client_skips_unknown_and_malformed_frames(server, make_client):
    client = make_client(server.url)
    await client.connect()
    handle = await client.subscribe("s")
    await server.send({"type": "from_the_future", "x": 1})
    await server.send({"type": "ops", "stream": "s", "ops": "not a list"})
    await server.log.commit("s", MODEL, "a", "create", {"n": 1})
    await handle.wait_for(1, timeout=5)
    assert client.connection_count == 1


class Watched(SyncClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple] = []

    def on_connect(self, welcome):
        self.seen.append(("connect", welcome.protocol))

    def on_disconnect(self, code, reason):
        self.seen.append(("disconnect", code))

    def on_error(self, frame):
        self.seen.append(("error", frame.code))

    def on_presence(self, frame):
        self.seen.append(("presence", frame.stream))


async def test_client_hooks_see_the_connection(server, sleep):
    client = Watched(server.url, sleep=sleep)
    try:
        await client.connect()
        await server.send({"type": "presence", "stream": "s", "joins": {}, "leaves": []})
        await server.send({"type": "error", "code": "parse_error", "message": "?"})
        await server.drop(1012)
        await server.wait_frame("hello", count=2)
        await client.wait_connected()
        assert client.seen == [
            ("connect", 1),
            ("presence", "s"),
            ("error", "parse_error"),
            ("disconnect", 1012),
            ("connect", 1),
        ]
    finally:
        await client.close()


async def test_client_message_over_its_own_limit_reconnects(server, make_client):
    client = make_client(server.url, max_message_bytes=1000)
    await client.connect()
    await server.send({"type": "presence", "stream": "s", "joins": {"x": "y" * 2000}})
    await server.wait_frame("hello", count=2)
    assert server.conns[0].ws.close_code == 1009
    assert client.error is None
