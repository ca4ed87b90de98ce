"""The hub's batches: slicing and splitting keep seqs and texts aligned."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from syncapp.hub import Batch, Hub


def batch(first: int, sizes: list[int]) -> Batch:
    ops = [json.dumps({"seq": first + i, "pad": "x" * size}) for i, size in enumerate(sizes)]
    return Batch("s", "e", first, first + len(ops) - 1, ops)


def seqs(part: Batch) -> list[int]:
    return [json.loads(text)["seq"] for text in part.ops]


def test_after_drops_what_was_sent():
    part = batch(5, [1, 1, 1]).after(5)
    assert (part.first, part.last, seqs(part)) == (6, 7, [6, 7])


def test_after_a_seq_before_the_batch_keeps_it_whole():
    whole = batch(5, [1, 1])
    assert whole.after(3) is whole


def test_split_bounds_each_part_and_keeps_order():
    whole = batch(1, [100] * 10)
    parts = whole.split(3 * len(whole.ops[0]) + 1)
    assert [seqs(p) for p in parts] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert all(p.last == p.first + len(p.ops) - 1 for p in parts)


def test_split_keeps_an_op_larger_than_the_bound_whole():
    parts = batch(1, [10, 1000, 10]).split(100)
    assert [seqs(p) for p in parts] == [[1], [2], [3]]


def test_frame_is_built_once_and_holds_the_ops():
    whole = batch(1, [1, 1])
    assert whole.frame() is whole.frame()
    frame = json.loads(whole.frame())
    assert (frame["type"], frame["stream"], [op["seq"] for op in frame["ops"]]) == (
        "ops",
        "s",
        [1, 2],
    )


class FailingLayer:
    """A layer whose receive raises ``error`` a few times before a message arrives (a
    quiet RedisChannelLayer under redis-py 8 raises a read timeout every 5 s)."""

    def __init__(self, timeouts: int, error: Exception) -> None:
        self.timeouts = timeouts
        self.error = error
        self.message: dict[str, object] = {"type": "syncapp.unknown"}
        self.delivered = asyncio.Event()

    async def receive(self, channel: str) -> dict[str, object]:
        if self.timeouts:
            self.timeouts -= 1
            raise self.error
        if not self.delivered.is_set():
            self.delivered.set()
            return self.message
        await asyncio.Event().wait()  # nothing more
        raise AssertionError


@dataclass
class ReceiveRun:
    dispatched: list[dict[str, object]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    rejoined: int = 0


async def run_receive_loop(monkeypatch: pytest.MonkeyPatch, layer: FailingLayer) -> ReceiveRun:
    """The hub's receive loop on ``layer`` until its message is dispatched: what it
    dispatched, how long it backed off, how often it rejoined its groups."""
    hub = Hub(layer, asyncio.get_running_loop())
    run = ReceiveRun()
    monkeypatch.setattr(hub, "dispatch", run.dispatched.append)

    async def rejoin() -> None:
        run.rejoined += 1

    monkeypatch.setattr(hub, "rejoin", rejoin)
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        run.sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("syncapp.hub.asyncio.sleep", sleep)
    task = asyncio.ensure_future(hub._receive_loop())
    try:
        await asyncio.wait_for(layer.delivered.wait(), 5)
        await real_sleep(0)
    finally:
        task.cancel()
    return run


async def test_a_quiet_redis_layer_is_received_again_at_once(monkeypatch, caplog):
    layer = FailingLayer(8, RedisTimeoutError("Timeout reading from 127.0.0.1:6379"))
    run = await run_receive_loop(monkeypatch, layer)
    assert run.dispatched == [layer.message]
    assert run.sleeps == []  # no backoff: a timeout of a blocking pop is not a failure
    assert run.rejoined == 0
    assert "receive failed" not in caplog.text


@pytest.mark.parametrize(
    "error",
    [ConnectionError("Redis went away"), RedisTimeoutError("Timeout connecting to server")],
    ids=["connection error", "connect timeout"],
)
async def test_other_receive_failures_back_off_are_logged_and_rejoin(monkeypatch, caplog, error):
    """Failures back off and are logged, and the groups are joined again once the layer
    answers; redis-py raises the same TimeoutError when it cannot connect, and that is a
    failure too, not a quiet layer."""
    run = await run_receive_loop(monkeypatch, FailingLayer(2, error))
    assert run.sleeps == [0.2, 0.4]
    assert run.rejoined == 1
    assert caplog.text.count("Channel layer receive failed") == 2
