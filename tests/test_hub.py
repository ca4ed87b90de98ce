"""The hub's batches: slicing and splitting keep seqs and texts aligned."""

from __future__ import annotations

import asyncio
import json

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


class QuietRedisLayer:
    """A layer whose blocking receive times out (redis-py 8's 5 s socket timeout) a few
    times before a message arrives, as a real RedisChannelLayer does when it is quiet."""

    def __init__(self, timeouts: int, message: dict[str, object]) -> None:
        self.timeouts = timeouts
        self.message = message
        self.delivered = asyncio.Event()

    async def receive(self, channel: str) -> dict[str, object]:
        if self.timeouts:
            self.timeouts -= 1
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")
        if not self.delivered.is_set():
            self.delivered.set()
            return self.message
        await asyncio.Event().wait()  # nothing more
        raise AssertionError


async def test_a_quiet_redis_layer_is_received_again_at_once(monkeypatch, caplog):
    message = {"type": "syncapp.unknown"}
    layer = QuietRedisLayer(timeouts=8, message=message)
    hub = Hub(layer, asyncio.get_running_loop())
    dispatched: list[dict[str, object]] = []
    monkeypatch.setattr(hub, "dispatch", dispatched.append)
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("syncapp.hub.asyncio.sleep", sleep)
    task = asyncio.ensure_future(hub._receive_loop())
    try:
        await asyncio.wait_for(layer.delivered.wait(), 5)
        await real_sleep(0)
    finally:
        task.cancel()
    assert dispatched == [message]
    assert sleeps == []  # no backoff: a timeout of a blocking pop is not a failure
    assert "receive failed" not in caplog.text


async def test_other_receive_failures_back_off_and_are_logged(monkeypatch, caplog):
    class Broken(QuietRedisLayer):
        async def receive(self, channel: str) -> dict[str, object]:
            if self.timeouts:
                self.timeouts -= 1
                raise ConnectionError("Redis went away")
            return await super().receive(channel)

    layer = Broken(timeouts=2, message={"type": "syncapp.unknown"})
    hub = Hub(layer, asyncio.get_running_loop())
    monkeypatch.setattr(hub, "dispatch", lambda message: None)
    rejoined: list[bool] = []

    async def rejoin() -> None:
        rejoined.append(True)

    monkeypatch.setattr(hub, "rejoin", rejoin)
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("syncapp.hub.asyncio.sleep", sleep)
    task = asyncio.ensure_future(hub._receive_loop())
    try:
        await asyncio.wait_for(layer.delivered.wait(), 5)
    finally:
        task.cancel()
    assert sleeps == [0.2, 0.4]
    await real_sleep(0)
    assert rejoined == [True]  # memberships renewed once the layer answers again
    assert caplog.text.count("Channel layer receive failed") == 2


async def test_a_redis_that_cannot_be_reached_is_a_failure_not_a_quiet_layer(monkeypatch, caplog):
    """redis-py raises the same TimeoutError when it cannot connect: that backs off, is
    logged, and rejoins the groups once Redis answers."""

    class Unreachable(QuietRedisLayer):
        async def receive(self, channel: str) -> dict[str, object]:
            if self.timeouts:
                self.timeouts -= 1
                raise RedisTimeoutError("Timeout connecting to server")
            return await super().receive(channel)

    layer = Unreachable(timeouts=2, message={"type": "syncapp.unknown"})
    hub = Hub(layer, asyncio.get_running_loop())
    monkeypatch.setattr(hub, "dispatch", lambda message: None)
    rejoined: list[bool] = []

    async def rejoin() -> None:
        rejoined.append(True)

    monkeypatch.setattr(hub, "rejoin", rejoin)
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("syncapp.hub.asyncio.sleep", sleep)
    task = asyncio.ensure_future(hub._receive_loop())
    try:
        await asyncio.wait_for(layer.delivered.wait(), 5)
        await real_sleep(0)
    finally:
        task.cancel()
    assert sleeps == [0.2, 0.4]
    assert rejoined == [True]
    assert caplog.text.count("Channel layer receive failed") == 2
