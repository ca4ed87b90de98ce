"""The client against the real consumer (over TCP through an ASGI bridge, on the test
database): the fake server's assumptions hold for the real one."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.test import override_settings

from syncapp import tokens
from syncapp.client import SyncClient, TokenRejected
from tests.client.asgi_bridge import AsgiBridge
from tests.testapp.models import Board
from tests.ws import adb, close_hub

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("_hub"),
]

SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}


@pytest.fixture
async def _hub():
    yield
    await close_hub()


@pytest.fixture
async def bridge():
    from tests.asgi import application

    async with AsgiBridge(application) as running:
        yield running


def create_board(name: str) -> dict:
    return {
        "stream": "boards",
        "model": "testapp.board",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"name": name},
    }


@override_settings(SYNCAPP=SETTINGS)
async def test_live_subscribe_mutate_and_see_the_op(bridge, user, make_client):
    client = make_client(bridge.url, token=tokens.issue(user))
    await client.connect()
    handle = await client.subscribe("boards")
    [result] = await client.mutate([create_board("live")])
    assert result.status == "applied"
    await handle.wait_for(result.seq, timeout=5)
    assert handle.get("testapp.board", result.object.pk).fields["name"] == "live"


@override_settings(SYNCAPP=SETTINGS)
async def test_live_resume_after_a_lost_connection(bridge, user, make_client):
    client = make_client(bridge.url, token=tokens.issue(user))
    await client.connect()
    handle = await client.subscribe("boards")
    await adb(Board.objects.create)(name="before")
    await handle.wait_for(1, timeout=5)
    bridge.drop()
    await adb(Board.objects.create)(name="while away")
    await handle.wait_for(2, timeout=5)
    assert client.connection_count == 2
    names = sorted(obj.fields["name"] for obj in handle.objects.values())
    assert names == ["before", "while away"]


@override_settings(SYNCAPP=SETTINGS)
async def test_live_bad_token_stops_with_token_rejected(bridge):
    client = SyncClient(bridge.url, token="forged")
    with pytest.raises(TokenRejected):
        await client.connect()
    await client.close()


# One a second: each mutation takes far less than a second, even on a loaded machine.
@override_settings(SYNCAPP={**SETTINGS, "MUTATION_RATE": 1, "MUTATION_BURST": 1})
async def test_live_rate_limited_frames_are_retried_after_the_wait(bridge, user, make_client):
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await asyncio.sleep(delay)  # the server's bucket refills in real time

    client = make_client(bridge.url, token=tokens.issue(user), sleep=sleep)
    await client.connect()
    results = [(await client.mutate([create_board(f"b{n}")]))[0] for n in range(2)]
    assert [r.status for r in results] == ["applied"] * 2
    assert waits
    assert all(0 < wait <= 1.01 for wait in waits)


async def until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@override_settings(SYNCAPP=SETTINGS)
async def test_live_presence_is_seen_grouped_by_user_and_announced_again(
    bridge, user, other_user, make_client
):
    watcher = make_client(bridge.url, token=tokens.issue(user))
    await watcher.connect()
    watching = await watcher.subscribe("boards")
    tabs = [make_client(bridge.url, token=tokens.issue(other_user)) for _ in range(2)]
    for n, tab in enumerate(tabs):
        await tab.connect()
        await tab.subscribe("boards")
        await tab.set_presence("boards", {"cursor": n})
    await until(lambda: len(watching.members) == 2)
    [(user_id, members)] = watching.members_by_user().items()
    assert user_id == other_user.pk
    assert sorted(m["state"]["cursor"] for m in members) == [0, 1]
    # After a lost connection, each tab announces itself again.
    bridge.drop()
    await until(lambda: all(tab.connection_count == 2 for tab in tabs))
    await until(lambda: len(watching.members) == 2 and watcher.connection_count == 2)
    assert sorted(m["state"]["cursor"] for m in watching.members.values()) == [0, 1]
