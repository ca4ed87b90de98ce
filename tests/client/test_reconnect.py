"""Reconnecting: when, where to (failover), and when not to (4400, 4401, a refused handshake)."""

from __future__ import annotations

import pytest

from syncapp.client import (
    Backoff,
    ConnectionFailed,
    HandshakeRejected,
    ProtocolRejected,
    TokenRejected,
)
from syncapp.client.codes import disposition
from syncapp.client.reconnect import Reconnect
from syncapp.client.session import Outcome
from tests.client.fake_server import FakeServer

BACKOFF = Backoff(base=1, cap=8, max_attempts=3, random=lambda: 0.5)


def lost(welcomed=False, code=None, retry_after=None):
    return Outcome(code, "lost", welcomed=welcomed, retry_after=retry_after)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (None, "reconnect"),
        (1000, "reconnect"),
        (1011, "reconnect"),
        (1012, "reconnect"),
        (4408, "reconnect"),
        (4503, "reconnect"),
        (4400, "stop"),
        (4401, "refresh_token"),
    ],
)
def test_disposition_of_close_codes(code, action):
    assert disposition(code) == action


def test_reconnect_backoff_grows_with_failures_in_a_row():
    policy = Reconnect(BACKOFF, can_refresh_token=False)
    assert policy.after("u", lost(welcomed=True)) == 0.5  # dropped: window 1
    assert policy.after("u", lost()) == 1.0  # failed once: window 2
    assert policy.after("u", lost()) == 2.0


def test_reconnect_a_welcome_starts_the_backoff_over():
    policy = Reconnect(BACKOFF, can_refresh_token=False)
    policy.after("u", lost())
    policy.after("u", lost())
    assert policy.after("u", lost(welcomed=True)) == 0.5


def test_reconnect_gives_up_after_max_attempts():
    policy = Reconnect(BACKOFF, can_refresh_token=False)
    policy.after("u", lost())
    policy.after("u", lost())
    with pytest.raises(ConnectionFailed, match="3 attempts"):
        policy.after("u", lost())


def test_reconnect_honours_retry_after():
    policy = Reconnect(BACKOFF, can_refresh_token=False)
    assert policy.after("u", lost(retry_after=7)) == 7


def test_reconnect_4400_stops():
    with pytest.raises(ProtocolRejected):
        Reconnect(BACKOFF, can_refresh_token=True).after("u", lost(True, 4400))


def test_reconnect_4401_without_a_token_source_stops():
    with pytest.raises(TokenRejected, match="no other"):
        Reconnect(BACKOFF, can_refresh_token=False).after("u", lost(True, 4401))


def test_reconnect_4401_with_a_token_source_retries_at_once_then_stops():
    policy = Reconnect(BACKOFF, can_refresh_token=True)
    assert policy.after("u", lost(code=4401)) is None
    with pytest.raises(TokenRejected, match="freshly"):
        policy.after("u", lost(code=4401))


def test_reconnect_4401_count_starts_over_after_a_good_connection():
    policy = Reconnect(BACKOFF, can_refresh_token=True)
    policy.after("u", lost(code=4401))
    policy.after("u", lost(welcomed=True, code=1012))
    assert policy.after("u", lost(code=4401)) is None


async def test_failover_to_the_second_url(make_client):
    async with FakeServer() as first, FakeServer(first.log) as second:
        client = make_client([first.url, second.url])
        await client.connect()
        handle = await client.subscribe("s")
        await first.log.commit("s", "todos.todo", "a", "create", {"n": 1})
        await handle.wait_for(1, timeout=5)
        await first.kill()
        await first.log.commit("s", "todos.todo", "a", "update", {"n": 2})
        await handle.wait_for(2, timeout=5)
        assert client.url == second.url
        assert second.frames("subscribe")[0]["after"] == {"epoch": "epoch-1", "seq": 1}


async def test_failover_skips_a_dead_first_url(make_client, sleep):
    async with FakeServer() as dead, FakeServer() as alive:
        await dead.kill()
        client = make_client([dead.url, alive.url])
        await client.connect()
        assert client.url == alive.url
        assert len(sleep.delays) == 1


async def test_connect_gives_up_after_max_attempts(make_client, sleep):
    async with FakeServer() as dead:
        await dead.kill()
    client = make_client(dead.url, backoff=Backoff(base=1, max_attempts=3, random=lambda: 0.5))
    with pytest.raises(ConnectionFailed):
        await client.connect()
    assert sleep.delays == [1.0, 2.0]
    assert isinstance(client.error, ConnectionFailed)
    with pytest.raises(ConnectionFailed):
        await client.wait_closed()


async def test_4400_stops_without_reconnecting(server, make_client):
    server.close_on_hello = 4400
    client = make_client(server.url)
    with pytest.raises(ProtocolRejected):
        await client.connect()
    assert len(server.conns) == 1


async def test_4401_without_a_token_callable_stops(server, make_client):
    server.accept_token = lambda token: token == "good"
    client = make_client(server.url, token="stale")
    with pytest.raises(TokenRejected):
        await client.connect()
    assert len(server.conns) == 1
    assert server.conns[0].token == "stale"


async def test_4401_with_a_token_callable_fetches_a_new_token(server, make_client, sleep):
    tokens = iter(["expired", "fresh"])

    async def fetch_token() -> str:
        return next(tokens)

    server.accept_token = lambda token: token == "fresh"
    client = make_client(server.url, token=fetch_token)
    await client.connect()
    assert [c.token for c in server.conns] == ["expired", "fresh"]
    assert sleep.delays == []  # a new token needs no backoff


async def test_4401_twice_in_a_row_stops(server, make_client):
    async def fetch_token() -> str:
        return "always-bad"

    server.accept_token = lambda token: False
    client = make_client(server.url, token=fetch_token)
    with pytest.raises(TokenRejected, match="freshly"):
        await client.connect()
    assert len(server.conns) == 2


async def test_token_callable_is_called_for_every_connection(server, make_client):
    count = 0

    async def fetch_token() -> str:
        nonlocal count
        count += 1
        return f"t{count}"

    client = make_client(server.url, token=fetch_token)
    await client.connect()
    await server.drop(1012)
    await server.wait_frame("hello", count=2)
    assert [c.token for c in server.conns] == ["t1", "t2"]


async def test_failing_token_callable_is_retried_with_backoff(server, make_client, sleep):
    calls = 0

    async def fetch_token() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("token service down")
        return "ok"

    client = make_client(server.url, token=fetch_token)
    await client.connect()
    assert len(sleep.delays) == 1
    assert server.conns[0].token == "ok"


async def test_handshake_refused_with_403_stops(server, make_client):
    server.handshake_status = 403
    client = make_client(server.url)
    with pytest.raises(HandshakeRejected) as info:
        await client.connect()
    assert info.value.status == 403


async def test_handshake_refused_with_503_is_retried(server, make_client, sleep):
    server.handshake_status = 503
    client = make_client(server.url, backoff=Backoff(base=1, max_attempts=2, random=lambda: 0))
    with pytest.raises(ConnectionFailed, match="HTTP 503"):
        await client.connect()
    assert sleep.delays == [0.0]


async def test_welcome_with_another_protocol_stops(server, make_client):
    server.welcome = {"protocol": 2}
    client = make_client(server.url)
    with pytest.raises(ProtocolRejected, match="protocol 2"):
        await client.connect()


async def test_no_welcome_is_a_failed_attempt(server, make_client):
    server.welcome = None
    # open_timeout bounds the handshake as well as the wait for the welcome: at 50 ms a
    # busy CI host let the second handshake time out before the server saw it.
    client = make_client(
        server.url, open_timeout=0.5, backoff=Backoff(max_attempts=2, random=lambda: 0)
    )
    with pytest.raises(ConnectionFailed, match="no welcome"):
        await client.connect()
    assert len(server.conns) == 2
