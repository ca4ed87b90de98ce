"""Mutate frames over the WebSocket: frames that arrive while a batch is applied are
applied together (group commit across frames), each frame still gets its own answer,
and answers keep the order of the frames."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.test import override_settings

from syncapp import mutations
from syncapp.consumers import MUTATE_QUEUE, SyncConsumer
from syncapp.hub import current_hub
from syncapp.models import Op
from tests.helpers import board_create
from tests.testapp.models import Board
from tests.ws import Client, adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]

SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}


class GatedApply:
    """Wraps ``mutations.apply``: records each call's batch size; the first call waits
    for ``gate`` (so that the frames sent meanwhile queue up behind it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.real = mutations.apply
        self.fail = fail
        monkeypatch.setattr(mutations, "apply", self)

    def __call__(self, batch: Any, **kwargs: Any) -> Any:
        self.sizes.append(len(batch))
        if len(self.sizes) == 1:
            assert self.gate.wait(5)
        if self.fail and len(self.sizes) > 1:
            raise RuntimeError("the database went away")
        return self.real(batch, **kwargs)


async def connected(user: Any) -> tuple[Client, SyncConsumer]:
    client = await Client(user).connect()
    hub = current_hub()
    assert hub is not None
    (consumer,) = hub.connections
    return client, consumer


async def applying(spy: GatedApply) -> None:
    """Wait until the first batch is being applied (and waits for the gate): the frames
    sent after this queue up behind it."""
    for _ in range(500):
        if spy.sizes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first batch was never applied")


async def queued(consumer: SyncConsumer, count: int) -> None:
    """Wait until ``count`` frames wait behind the batch being applied."""
    for _ in range(500):
        if consumer.mutating is not None and len(consumer.mutating.frames) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} frames never queued: {consumer.mutating!r}")


async def test_frames_that_arrive_meanwhile_are_applied_together_and_acked_each(user, monkeypatch):
    spy = GatedApply(monkeypatch)
    client, consumer = await connected(user)
    sent = [board_create(f"b{i}") for i in range(6)]
    for i, mutation in enumerate(sent):
        await client.send({"type": "mutate", "ref": f"m{i}", "mutations": [mutation]})
        if i == 0:
            await applying(spy)
    await queued(consumer, 5)
    assert consumer.mutating is not None
    assert len(consumer.mutating.takers) == 2  # the next taker waits in the worker thread
    spy.gate.set()
    acks = [await client.receive_type("ack") for _ in range(6)]
    assert [ack["ref"] for ack in acks] == [f"m{i}" for i in range(6)]
    assert [[r["id"] for r in ack["results"]] for ack in acks] == [[m["id"]] for m in sent]
    assert {r["status"] for ack in acks for r in ack["results"]} == {"applied"}
    assert spy.sizes == [1, 5]  # the five that waited went as one batch
    ops = await adb(lambda: list(Op.objects.filter(stream__name="boards").order_by("seq")))()
    assert [str(op.mutation_id) for op in ops] == [m["id"] for m in sent]  # in frame order


async def test_a_batch_never_exceeds_max_batch_and_a_frame_too_large_is_refused_alone(
    user, monkeypatch
):
    with override_settings(SYNCAPP={**SETTINGS, "MAX_BATCH": 3}):
        spy = GatedApply(monkeypatch)
        client, consumer = await connected(user)
        frames = [
            [board_create("first")],
            [board_create("a1"), board_create("a2")],
            [board_create("b1"), board_create("b2")],
            [board_create(f"big{i}") for i in range(4)],
            [board_create("c1")],
        ]
        for i, batch in enumerate(frames):
            await client.send({"type": "mutate", "ref": i, "mutations": batch})
            if i == 0:
                await applying(spy)
        await queued(consumer, 4)
        spy.gate.set()
        answers = [await client.receive() for _ in range(5)]
    assert [(a["type"], a["ref"]) for a in answers] == [
        ("ack", 0),
        ("ack", 1),
        ("ack", 2),
        ("error", 3),
        ("ack", 4),
    ]
    assert answers[3]["code"] == "batch_too_large"
    assert spy.sizes == [1, 2, 2, 4, 1]  # 2 + 2 > 3: not together; 4 alone, refused


async def test_a_failed_batch_fails_its_frames_and_the_connection_goes_on(user, monkeypatch):
    spy = GatedApply(monkeypatch, fail=True)
    client, consumer = await connected(user)
    await client.send({"type": "mutate", "ref": "ok", "mutations": [board_create("ok")]})
    await applying(spy)
    for ref in ("x", "y"):
        await client.send({"type": "mutate", "ref": ref, "mutations": [board_create(ref)]})
    await queued(consumer, 2)
    spy.gate.set()
    answers = [await client.receive() for _ in range(3)]
    assert [(a["type"], a["ref"]) for a in answers] == [
        ("ack", "ok"),
        ("error", "x"),
        ("error", "y"),
    ]
    assert {a.get("code") for a in answers[1:]} == {"internal_error"}
    await client.send({"type": "ping", "ts": 1, "ref": "p"})
    assert (await client.receive_type("pong"))["ref"] == "p"


async def test_answers_to_other_frames_wait_for_the_mutations_before_them(user, monkeypatch):
    spy = GatedApply(monkeypatch)
    client, consumer = await connected(user)
    await client.send({"type": "mutate", "ref": "m", "mutations": [board_create("m")]})
    await client.send({"type": "ping", "ts": 1, "ref": "p"})
    await client.send_text("not json")
    assert await client.nothing(timeout=0.2)  # the ping waits behind the mutation
    spy.gate.set()
    answers = [await client.receive() for _ in range(3)]
    assert [a["type"] for a in answers] == ["ack", "pong", "error"]
    assert answers[2]["code"] == "parse_error"
    assert consumer.mutating is None  # nothing left behind once all is answered


async def test_a_client_that_queues_too_many_frames_is_not_read_until_they_go(user, monkeypatch):
    spy = GatedApply(monkeypatch)
    client, consumer = await connected(user)
    count = MUTATE_QUEUE + 4
    for i in range(count):
        await client.send({"type": "mutate", "ref": i, "mutations": [board_create(f"q{i}")]})
        if i == 0:
            await applying(spy)
    await queued(consumer, MUTATE_QUEUE + 1)
    await asyncio.sleep(0.2)
    # One frame in flight, MUTATE_QUEUE + 1 waiting (the last one's receive waits): the
    # rest stay unread.
    assert consumer.mutating is not None
    assert len(consumer.mutating.frames) == MUTATE_QUEUE + 1
    spy.gate.set()
    acks = [await client.receive_type("ack") for _ in range(count)]
    assert [ack["ref"] for ack in acks] == list(range(count))
    assert sum(spy.sizes) == count


async def test_frames_still_queued_when_the_connection_closes_are_not_applied(user, monkeypatch):
    """The batch being applied when the connection closes commits; the frames queued
    behind it are not applied (the client retries their ids on its next connection): the
    taker waiting for the worker thread goes with the connection's tasks, and a taker
    takes nothing once the connection is closing."""
    spy = GatedApply(monkeypatch)
    client, consumer = await connected(user)
    await client.send({"type": "mutate", "ref": 0, "mutations": [board_create("first")]})
    await applying(spy)
    for i in range(1, 4):
        await client.send({"type": "mutate", "ref": i, "mutations": [board_create(f"late{i}")]})
    await queued(consumer, 3)
    await client.close()
    spy.gate.set()
    await asyncio.sleep(0.3)  # time for a taker that would wrongly take them
    assert spy.sizes == [1]
    names = await adb(lambda: sorted(Board.objects.values_list("name", flat=True)))()
    assert names == ["first"]
