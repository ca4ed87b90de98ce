"""The fan-out's write path: ops that reach a connection in one turn of the event loop
go out in one frame, flushes leave the loop time for other work, a send that has to
wait keeps the order, and mutation threads hand broadcasts to the loop without waiting
for it (docs/benchmarks.md, fan-out)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from syncapp import consumers as consumers_module
from syncapp import hub as hub_module
from syncapp import sender
from syncapp.conf import DEFAULTS, conf
from syncapp.consumers import SyncConsumer
from syncapp.hub import Feed, Hub, current_hub
from tests.testapp.models import Board
from tests.ws import Client, adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]

SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}


async def subscribed(user: Any) -> tuple[Client, Hub, Feed, SyncConsumer]:
    """A client subscribed to a new board's stream, with the hub, feed and consumer."""
    board = await adb(Board.objects.create)(name="b")
    stream = f"board:{board.pk}"
    client = await Client(user).connect()
    await client.subscribe(stream)
    hub = current_hub()
    assert hub is not None
    (consumer,) = hub.connections
    return client, hub, hub.feeds[stream], consumer


def message(feed: Feed, first: int, count: int, pad: int = 0) -> dict[str, Any]:
    """The channel-layer message of ``count`` ops after ``first - 1`` in ``feed``."""
    ops = [json.dumps({"seq": seq, "pad": "x" * pad}) for seq in range(first, first + count)]
    return {
        "type": "syncapp.ops",
        "stream": feed.name,
        "epoch": feed.epoch,
        "first": first,
        "last": first + count - 1,
        "ops": ops,
    }


def seqs(frame: dict[str, Any]) -> list[int]:
    assert frame["type"] == "ops", frame
    return [op["seq"] for op in frame["ops"]]


async def test_ops_delivered_in_one_turn_go_out_in_one_frame(user):
    client, hub, feed, _ = await subscribed(user)
    start = feed.last + 1
    for offset in range(3):  # three channel-layer messages in the same turn
        hub.dispatch(message(feed, start + offset, 1))
    assert seqs(await client.receive()) == [start, start + 1, start + 2]
    assert await client.nothing()


async def test_a_coalesced_frame_stays_within_a_quarter_of_outbox_bytes(user):
    with override_settings(SYNCAPP={**SETTINGS, "OUTBOX_BYTES": 8 * 1024}):
        client, hub, feed, _ = await subscribed(user)
        start = feed.last + 1
        for offset in range(4):  # 4 ops of ~1,200 bytes: a frame holds one of them
            hub.dispatch(message(feed, start + offset, 1, pad=1200))
        frames = [seqs(await client.receive()) for _ in range(4)]
        assert frames == [[start], [start + 1], [start + 2], [start + 3]]
        assert await client.nothing()


async def test_a_frame_queued_between_batches_keeps_its_place(user):
    client, hub, feed, consumer = await subscribed(user)
    start = feed.last + 1
    hub.dispatch(message(feed, start, 1))
    consumer.push_frame({"type": "pong", "ts": 1})
    hub.dispatch(message(feed, start + 1, 2))
    hub.dispatch(message(feed, start + 3, 1))
    assert seqs(await client.receive()) == [start]
    assert (await client.receive())["type"] == "pong"
    assert seqs(await client.receive()) == [start + 1, start + 2, start + 3]


async def test_a_flush_waits_as_long_as_the_last_one_took(user, monkeypatch):
    monkeypatch.setattr(hub_module, "MAX_FLUSH_WAIT", 5.0)
    client, hub, feed, _ = await subscribed(user)
    await asyncio.sleep(0.1)  # the subscribe's frames are out, the flush has settled
    # As if the last flush ended now and took 0.4 s (a thousand sockets, say).
    hub._flush_ended = hub.loop.time()
    hub._flush_took = 0.4
    hub.dispatch(message(feed, feed.last + 1, 1))
    assert await client.nothing(timeout=0.25)
    hub.dispatch(message(feed, feed.last + 1, 1))
    assert len(seqs(await client.receive())) == 2  # both, in the flush that waited
    # A lone op long after the last flush goes out at once.
    hub._flush_ended, hub._flush_took = hub.loop.time() - 10, 0.4
    hub.dispatch(message(feed, feed.last + 1, 1))
    assert len(seqs(await client.receive(timeout=0.2))) == 1


async def test_a_flush_waits_no_longer_than_max_flush_wait(user):
    client, hub, feed, _ = await subscribed(user)
    await asyncio.sleep(0.1)
    hub._flush_ended, hub._flush_took = hub.loop.time(), 3600.0
    hub.dispatch(message(feed, feed.last + 1, 1))
    assert len(seqs(await client.receive(timeout=5))) == 1


async def test_a_send_that_has_to_wait_keeps_the_order_of_what_follows(user):
    client, hub, feed, consumer = await subscribed(user)
    real_send = consumer._server_send
    gate = asyncio.Event()
    waited: list[str] = []

    async def slow_first_send(message: dict[str, Any]) -> None:
        if not waited:  # the server pushes back on the first frame
            waited.append(message["text"])
            await gate.wait()
        await real_send(message)

    consumer._server_send = slow_first_send
    start = feed.last + 1
    hub.dispatch(message(feed, start, 1))
    await asyncio.sleep(0.05)
    assert consumer.writer is not None
    assert not consumer.writer.done()
    for offset in range(1, 4):  # queued while the first send waits
        hub.dispatch(message(feed, start + offset, 1))
        await asyncio.sleep(0)
    consumer.push_frame({"type": "pong", "ts": 2})
    gate.set()
    got: list[int] = []
    while len(got) < 4:
        got.extend(seqs(await client.receive()))
    assert got == [start, start + 1, start + 2, start + 3]
    assert (await client.receive())["type"] == "pong"
    assert consumer.outbox is None
    assert consumer.outbox_bytes == 0


async def test_ops_waiting_for_a_late_flush_do_not_make_a_client_slow(user, monkeypatch):
    """More than OUTBOX_BYTES may pile up for a client before the flush offers it any: the
    client has refused nothing, so it is not closed (a reading client under a burst on a
    busy server used to be closed 4503 here)."""
    monkeypatch.setattr(hub_module, "MAX_FLUSH_WAIT", 5.0)
    with override_settings(SYNCAPP={**SETTINGS, "OUTBOX_BYTES": 8 * 1024}):
        client, hub, feed, consumer = await subscribed(user)
        await asyncio.sleep(0.1)
        hub._flush_ended, hub._flush_took = hub.loop.time(), 0.3  # the next flush waits
        start = feed.last + 1
        for offset in range(6):  # 6 ops of ~3 KB: twice OUTBOX_BYTES before the flush
            hub.dispatch(message(feed, start + offset, 1, pad=3000))
        assert consumer.outbox_bytes > 8 * 1024
        got: list[int] = []
        while len(got) < 6:
            got.extend(seqs(await client.receive()))
        assert got == list(range(start, start + 6))
        assert not consumer.closing


async def test_ops_piling_up_behind_a_send_the_client_holds_up_close_it_4503(user):
    with override_settings(SYNCAPP={**SETTINGS, "OUTBOX_BYTES": 8 * 1024}):
        client, hub, feed, consumer = await subscribed(user)
        gate = asyncio.Event()

        async def stuck_send(message: dict[str, Any]) -> None:
            await gate.wait()  # the client reads nothing: the server's send waits

        real_send, consumer._server_send = consumer._server_send, stuck_send
        start = feed.last + 1
        for offset in range(5):
            hub.dispatch(message(feed, start + offset, 1, pad=3000))
            await asyncio.sleep(0.01)
        assert consumer.closing  # 4 ops queued behind the waiting send are over 8 KiB
        consumer._server_send = real_send
        gate.set()
        assert await client.closed() == 4503


async def test_a_send_that_fails_closes_the_connection_with_1011(user, caplog):
    client, hub, feed, consumer = await subscribed(user)

    async def broken_send(message: dict[str, Any]) -> None:
        raise ConnectionResetError("gone")

    real_send = consumer._server_send
    consumer._server_send = broken_send
    with caplog.at_level(logging.ERROR, "syncapp.consumers"):
        hub.dispatch(message(feed, feed.last + 1, 1))
        await asyncio.sleep(0.05)
    consumer._server_send = real_send
    assert await client.closed() == 1011
    assert "Could not write to a WebSocket" in caplog.text
    assert consumer.outbox is None
    assert consumer.outbox_bytes == 0


# mutation threads hand their broadcasts to the loop


async def test_serving_loop_is_the_loop_a_sync_to_async_thread_works_for():
    loop = asyncio.get_running_loop()
    assert sender.serving_loop() is None  # the loop's own thread awaits instead
    assert await sync_to_async(sender.serving_loop)() is loop
    seen: list[Any] = ["unset"]
    plain = threading.Thread(target=lambda: seen.__setitem__(0, sender.serving_loop()))
    plain.start()
    plain.join()
    assert seen == [None]


class RecordingLayer:
    def __init__(self, fail: set[int] | None = None) -> None:
        self.sent: list[tuple[str, int]] = []
        self.fail = fail or set()
        self.arrived = asyncio.Event()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if message["first"] in self.fail:
            raise RuntimeError("layer down")
        self.sent.append((group, message["first"]))
        if len(self.sent) + len(self.fail) >= message["of"]:
            self.arrived.set()


async def test_send_later_does_not_wait_for_a_busy_loop_and_keeps_the_order(caplog):
    loop = asyncio.get_running_loop()
    layer = RecordingLayer(fail={7})
    queued = threading.Event()

    def write() -> None:
        for first in range(1, 51):
            sender.send_later(loop, layer, "g", {"first": first, "of": 50, "stream": "s"})
        queued.set()

    with caplog.at_level(logging.WARNING, "syncapp.broadcast"):
        thread = threading.Thread(target=write)
        thread.start()
        # The loop is busy (blocked) until the thread has queued all fifty: with a send
        # that waited for the loop, this would time out.
        finished = queued.wait(5)
        thread.join()
        assert finished
        await asyncio.wait_for(layer.arrived.wait(), 5)
    assert layer.sent == [("g", first) for first in range(1, 51) if first != 7]
    assert "Could not broadcast ops 7" in caplog.text


# settings are read once


def test_settings_are_read_once_and_again_when_they_change(settings):
    settings.SYNCAPP = {**settings.SYNCAPP, "OUTBOX_BYTES": 12345}
    assert conf.OUTBOX_BYTES == 12345
    assert conf.__dict__["OUTBOX_BYTES"] == 12345  # kept: no lookup in settings next time
    with override_settings(SYNCAPP={"OUTBOX_BYTES": 4321}):
        assert conf.OUTBOX_BYTES == 4321
    assert conf.OUTBOX_BYTES == 12345
    settings.SYNCAPP = {}
    assert conf.OUTBOX_BYTES == DEFAULTS["OUTBOX_BYTES"]


async def test_a_connection_that_fails_to_flush_does_not_stop_the_others(user, caplog):
    client, hub, feed, _ = await subscribed(user)

    class Broken:
        def flush(self, frames: dict[Any, str]) -> None:
            raise RuntimeError("broken")

    with caplog.at_level(logging.ERROR, "syncapp.hub"):
        hub.schedule_flush(Broken())
        hub.dispatch(message(feed, feed.last + 1, 1))
        assert len(seqs(await client.receive())) == 1
    assert "Could not write to a connection" in caplog.text


async def test_a_refused_hello_is_sent_before_the_close_even_when_the_flush_waits(user):
    client = await Client(user).connect(hello=False)
    hub = current_hub()
    assert hub is not None
    await asyncio.sleep(0.05)
    hub._flush_ended, hub._flush_took = hub.loop.time(), 0.2  # the next flush waits
    await client.send({"type": "hello", "client_id": "t", "protocol": 99})
    assert (await client.receive())["code"] == "protocol_unsupported"
    assert await client.closed() == 4400


async def test_resume_finishes_a_send_that_yields_to_the_loop_or_fails():
    steps: list[str] = []

    async def turns() -> None:
        await asyncio.sleep(0)  # yields None: let the loop turn
        steps.append("after a turn")

    sending = turns()
    waiting = sending.send(None)
    assert waiting is None
    await consumers_module._resume(sending, waiting)
    assert steps == ["after a turn"]

    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        await failed

    sending = waits()
    waiting = sending.send(None)
    failed.set_exception(ConnectionResetError("gone"))
    with pytest.raises(ConnectionResetError):
        await consumers_module._resume(sending, waiting)

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def hangs() -> None:
        try:
            await never
        finally:
            steps.append("closed")

    sending = hangs()
    waiting = sending.send(None)
    task = asyncio.ensure_future(consumers_module._resume(sending, waiting))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps[-1] == "closed"  # the send's coroutine was closed, not left pending


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 300_000])
@pytest.mark.parametrize("char", ["x", "é"])
def test_a_frame_written_straight_to_daphnes_socket_is_what_a_client_reads(size, char):
    """Each length encoding of RFC 6455 (7 bits, 16 bits, 64 bits; counted in bytes),
    parsed by the ``websockets`` library as a client parses a server's frame."""
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    text = char * (size // len(char.encode()))
    reader = StreamReader()
    reader.feed_data(consumers_module.text_frame(text))
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:  # pragma: no cover - the parser wanted more bytes than the frame has
        pytest.fail("incomplete frame")
    assert frame.opcode == Opcode.TEXT
    assert frame.fin
    assert frame.data.decode() == text


def test_only_daphnes_and_uvicorns_plain_sockets_are_written_directly():
    """A test's send, a send wrapped by middleware, and anything that is not autobahn on a
    Twisted TCP server or uvicorn's websockets protocols on an asyncio socket go through
    the server's ``send`` (tests/live/test_uvicorn.py and test_slow_consumer.py write to
    real servers' sockets)."""
    assert consumers_module.ServerSocket(None).direct is False
    assert consumers_module.ServerSocket(lambda message: None).direct is False

    class Protocol:
        transport = object()

        async def send(self, message: dict[str, Any]) -> None: ...

    for send in (None, lambda message: None, Protocol().send):
        socket = consumers_module.server_socket(send)
        assert type(socket) is consumers_module.ServerSocket
        assert socket.direct is False
        assert socket.backlog() == 0
