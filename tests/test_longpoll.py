"""Long-poll: ops/?wait=N answers when an op commits, woken through the channel layer."""

from __future__ import annotations

import asyncio

import pytest
from django.db.backends.utils import CursorWrapper
from django.test import AsyncClient

from syncapp import oplog, permissions
from tests.testapp.models import Board, Card
from tests.ws import adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]


@pytest.fixture
def board(db):
    return Board.objects.create(name="b")


async def logged_in(user):
    client = AsyncClient()
    await client.aforce_login(user)
    return client


def url(board):
    return f"/sync/api/streams/board:{board.pk}/ops/"


async def started(client, path, params):
    """The request as a task, once it is waiting on the stream's feed."""
    from syncapp.hub import current_hub

    task = asyncio.ensure_future(client.get(path, params))
    while True:
        hub = current_hub()
        feed = hub.feeds.get(params["stream"]) if hub else None
        if (feed is not None and feed.listeners and feed.ready.is_set()) or task.done():
            return task
        await asyncio.sleep(0.01)


async def test_wait_answers_at_once_when_ops_exist(user, board):
    await adb(Card.objects.create)(board=board, title="a")
    client = await logged_in(user)
    response = await asyncio.wait_for(client.get(url(board), {"wait": 30}), 5)
    assert [op["seq"] for op in response.json()["ops"]] == [1]


async def test_wait_answers_as_soon_as_an_op_commits(user, board):
    head = await adb(oplog.head_of)(f"board:{board.pk}")
    client = await logged_in(user)
    params = {"epoch": head.epoch, "after": 0, "wait": 30, "stream": f"board:{board.pk}"}
    task = await started(client, url(board), params)
    await adb(Card.objects.create)(board=board, title="woken")
    # Woken by the broadcast: far sooner than the 30 s wait.
    response = await asyncio.wait_for(task, 5)
    ops = response.json()["ops"]
    assert [(op["seq"], op["fields"]["title"]) for op in ops] == [(1, "woken")]


async def test_waiting_makes_no_query(user, board, monkeypatch):
    client = await logged_in(user)
    head = await adb(oplog.head_of)(f"board:{board.pk}")
    params = {"epoch": head.epoch, "after": 0, "wait": 30, "stream": f"board:{board.pk}"}
    task = await started(client, url(board), params)
    queries = []
    real = CursorWrapper.execute

    def counting(self, *args, **kwargs):
        queries.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "execute", counting)
    await asyncio.sleep(0.5)  # a while of waiting, during which nothing may poll
    assert queries == []
    monkeypatch.undo()
    await adb(Card.objects.create)(board=board, title="x")
    await asyncio.wait_for(task, 5)


async def test_wait_times_out_empty(user, board):
    client = await logged_in(user)
    response = await asyncio.wait_for(client.get(url(board), {"wait": 0.2}), 5)
    body = response.json()
    assert (response.status_code, body["ops"], body["head"]) == (200, [], 0)


async def test_wait_longer_than_the_maximum_is_refused(user, board):
    client = await logged_in(user)
    response = await client.get(url(board), {"wait": 31})
    assert (response.status_code, response.json()["code"]) == (400, "invalid")


@pytest.mark.parametrize("wait", ["-1", "soon", "nan"])
async def test_invalid_wait_is_refused(user, board, wait):
    client = await logged_in(user)
    response = await client.get(url(board), {"wait": wait})
    assert (response.status_code, response.json()["code"]) == (400, "invalid")


async def test_revoked_access_ends_the_wait_with_403(django_user_model):
    staff = await adb(django_user_model.objects.create_user)("boss", is_staff=True)
    client = await logged_in(staff)
    task = await started(
        client, "/sync/api/streams/secret:plans/ops/", {"wait": 30, "stream": "secret:plans"}
    )
    await adb(django_user_model.objects.filter(pk=staff.pk).update)(is_staff=False)
    await adb(permissions.revoke)(staff, "secret:plans")
    response = await asyncio.wait_for(task, 5)
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
