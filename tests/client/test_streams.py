"""A stream handle on its own: snapshots, ops applied exactly once, gaps, resets, waiting."""

from __future__ import annotations

import asyncio

import pytest

from syncapp.client import ClientClosed, GapDetected, OpApplied, SnapshotLoaded, StreamReset
from syncapp.client.frames import OpsFrame, ResetFrame, SnapshotFrame, SubscribedFrame
from syncapp.client.streams import StreamHandle
from syncapp.protocol import ObjectState, OpMessage, Position

SESSION = object()


def op(seq, kind="update", pk="a", fields=None, epoch="e1", version=None):
    return OpMessage(
        stream="s",
        epoch=epoch,
        seq=seq,
        model="t.item",
        pk=pk,
        op=kind,
        fields=fields or {},
        version=version or seq,
        mutation=None,
        ts="2026-11-24T15:04:05Z",
    )


def ops(*items):
    return OpsFrame(stream="s", ops=list(items))


async def loaded(seq=2, objects=None) -> StreamHandle:
    handle = StreamHandle("s")
    handle._subscribe_frame(1, SESSION)
    objects = objects or [ObjectState(model="t.item", pk="a", version=1, fields={"n": 1})]
    handle._on_snapshot(SnapshotFrame(stream="s", epoch="e1", seq=seq, objects=objects))
    handle._on_subscribed(SubscribedFrame(stream="s", epoch="e1", head=seq, ref=1))
    return handle


async def test_stream_first_subscribe_asks_for_a_snapshot():
    frame = StreamHandle("s")._subscribe_frame(1, SESSION)
    assert frame.after is None


async def test_stream_snapshot_sets_objects_and_position():
    handle = await loaded()
    assert handle.position == Position(epoch="e1", seq=2)
    assert handle.get("t.item", "a").fields == {"n": 1}
    assert handle.live


async def test_stream_resubscribe_resumes_from_position():
    handle = await loaded()
    handle._on_disconnect()
    assert handle._subscribe_frame(2, SESSION).after == Position(epoch="e1", seq=2)


async def test_stream_applies_create_update_delete():
    handle = await loaded()
    handle._on_ops(ops(op(3, "create", pk="b", fields={"n": 5, "m": 1})))
    handle._on_ops(ops(op(4, "update", pk="b", fields={"n": 6}), op(5, "delete", pk="a")))
    assert handle.objects == {
        ("t.item", "b"): ObjectState(model="t.item", pk="b", version=4, fields={"n": 6, "m": 1})
    }
    assert handle.seq == 5


async def test_stream_ignores_ops_already_applied():
    handle = await loaded()
    events = handle.ops()
    handle._on_ops(ops(op(3, fields={"n": 3})))
    assert not handle._on_ops(ops(op(2, fields={"n": 99}), op(3, fields={"n": 99})))
    assert handle.get("t.item", "a").fields == {"n": 3}
    events.close()
    assert [o.seq async for o in events] == [3]


async def test_stream_gap_asks_for_a_resubscribe_once():
    handle = await loaded()
    events = handle.events()
    assert handle._on_ops(ops(op(3), op(5)))
    assert handle.seq == 3
    frame = handle._subscribe_frame(2, SESSION)
    assert frame.after == Position(epoch="e1", seq=3)
    # Until the server answers, further gaps are the same gap.
    assert not handle._on_ops(ops(op(6)))
    events.close()
    assert [e async for e in events] == [
        OpApplied(op(3)),
        GapDetected("s", "e1", 3, "e1", 5),
    ]


async def test_stream_gap_fills_from_the_resubscribe():
    handle = await loaded()
    handle._on_ops(ops(op(4)))
    handle._subscribe_frame(2, SESSION)
    handle._on_ops(ops(op(3), op(4), op(5)))
    handle._on_subscribed(SubscribedFrame(stream="s", epoch="e1", head=5, ref=2))
    assert handle.seq == 5
    assert handle._on_ops(ops(op(7)))  # a new gap after the answer is a new gap


async def test_stream_other_epoch_is_a_gap():
    handle = await loaded()
    assert handle._on_ops(ops(op(1, epoch="e2")))
    assert handle.position == Position(epoch="e1", seq=2)


async def test_stream_reset_keeps_objects_until_the_snapshot():
    handle = await loaded()
    handle._on_reset(ResetFrame(stream="s", epoch="e2", reason="trimmed"))
    assert handle.get("t.item", "a") is not None
    assert handle._subscribe_frame(2, SESSION).after is None
    assert not handle._on_ops(ops(op(3)))  # nothing applies until the snapshot
    handle._on_snapshot(SnapshotFrame(stream="s", epoch="e2", seq=9, objects=[]))
    assert handle.objects == {}
    assert handle.position == Position(epoch="e2", seq=9)


async def test_stream_stale_subscribed_does_not_end_a_resync():
    handle = await loaded()
    handle._subscribe_frame(2, SESSION)
    handle._on_subscribed(SubscribedFrame(stream="s", epoch="e1", head=2, ref=1))
    assert not handle.live


async def test_stream_events_in_order():
    handle = StreamHandle("s")
    events = handle.events()
    handle._subscribe_frame(1, SESSION)
    handle._on_snapshot(SnapshotFrame(stream="s", epoch="e1", seq=0, objects=[]))
    handle._on_ops(ops(op(1, "create")))
    handle._on_reset(ResetFrame(stream="s", epoch="e2", reason="epoch_changed"))
    handle._end()
    assert [e async for e in events] == [
        SnapshotLoaded("s", "e1", 0),
        OpApplied(op(1, "create")),
        StreamReset("s", "e2", "epoch_changed"),
    ]


async def test_stream_listener_is_called_and_removable():
    handle = await loaded()
    seen: list[object] = []
    remove = handle.add_listener(seen.append)
    handle._on_ops(ops(op(3)))
    remove()
    handle._on_ops(ops(op(4)))
    assert seen == [OpApplied(op(3))]


async def test_stream_failing_listener_does_not_stop_the_stream():
    handle = await loaded()
    handle.add_listener(lambda event: 1 / 0)
    handle._on_ops(ops(op(3)))
    assert handle.seq == 3


async def test_stream_wait_for_returns_when_seq_is_reached():
    handle = await loaded()
    waiter = asyncio.create_task(handle.wait_for(4))
    await asyncio.sleep(0)
    handle._on_ops(ops(op(3)))
    await asyncio.sleep(0)
    assert not waiter.done()
    handle._on_ops(ops(op(4)))
    await asyncio.wait_for(waiter, 1)


async def test_stream_wait_for_past_seq_returns_at_once():
    handle = await loaded(seq=5)
    await asyncio.wait_for(handle.wait_for(3), 1)


async def test_stream_wait_for_times_out():
    handle = await loaded()
    with pytest.raises(TimeoutError):
        await handle.wait_for(3, timeout=0.01)
    assert handle._waiters == []


async def test_stream_end_fails_waiters_and_ends_feeds_with_the_error():
    handle = await loaded()
    feed = handle.ops()
    waiter = asyncio.create_task(handle.wait_for(10))
    await asyncio.sleep(0)
    error = RuntimeError("revoked")
    handle._end(error)
    with pytest.raises(RuntimeError, match="revoked"):
        await waiter
    with pytest.raises(RuntimeError, match="revoked"):
        await anext(feed)


async def test_stream_end_before_subscribed_fails_wait_ready():
    handle = StreamHandle("s")
    handle._end(RuntimeError("denied"))
    with pytest.raises(RuntimeError, match="denied"):
        await handle.wait_ready()


async def test_stream_end_without_error_ends_feeds_quietly():
    handle = await loaded()
    feed = handle.ops()
    handle._end()
    assert [o async for o in feed] == []
    with pytest.raises(ClientClosed):
        await handle.wait_for(10)
    assert [o async for o in handle.ops()] == []
