"""Faults, one test each (issue 7): what each fault must not break, and where it is proved.

=====================================================  =========================================
Fault (issue 7)                                         Proved by
=====================================================  =========================================
A transaction takes a seq, then waits while later      ``test_concurrency.py::test_reader_never_
ones queue behind it: no reader skips it               skips_an_op_with_concurrent_writers_and_a_
(PostgreSQL, writer threads, a reader thread)          slow_transaction``; ``test_consumers.py::
                                                       test_resume_while_writes_continue_sends_
                                                       every_op_once_in_order``
A transaction rolled back after its change: no op,     here: ``test_rollback_of_a_transaction_
no broadcast, no reused seq                            holding_a_seq_leaves_no_op_no_broadcast_
                                                       and_no_gap`` (PostgreSQL, a writer queued
                                                       behind it, a live WebSocket subscriber);
                                                       ``test_savepoint_rollback_...``;
                                                       ``test_capture.py::test_rollback_leaves_
                                                       no_op_no_broadcast_and_no_used_seq``;
                                                       ``test_broadcast.py::test_rolled_back_ops_
                                                       are_never_sent``
A process killed between commit and acknowledgement:   ``live/test_faults.py::test_rest_retry_
the retry gets the stored result, one op               after_a_kill_...`` and ``test_ws_retry_
                                                       after_a_kill_...`` (real daphne SIGKILLed
                                                       by ``testapp/faults.py`` right after the
                                                       commit); ``test_idempotency.py::test_
                                                       concurrent_retries_apply_exactly_once``
Group membership expiry and channel-layer capacity     ``live/test_faults.py::test_group_expiry_
overflow: clients detect the gap and recover           ...`` and ``test_capacity_overflow_...``
                                                       (channels_redis with ``group_expiry`` 2 s,
                                                       ``capacity`` 3); ``live/test_redis_
                                                       restart.py``; ``test_consumers.py::test_
                                                       dropped_broadcasts_are_recovered_from_the_
                                                       log``; the Python client's own gap check:
                                                       ``client/test_streams.py``, ``client/test_
                                                       client.py::test_client_gap_resubscribes_
                                                       with_after``
A consumer that raises: its connection closes          here: ``test_connection_whose_task_raises_
cleanly, the client resumes, others unaffected         closes_1011_...`` (SyncClient over TCP);
                                                       a hub listener that raises keeps no batch
                                                       from the others: ``test_listener_that_
                                                       raises_...`` (fixed in ``hub.py``);
                                                       a frame whose handling raises fails alone:
                                                       ``test_frame_whose_handling_raises_...``,
                                                       ``test_races.py::test_a_failing_subscribe_
                                                       fails_alone``, ``test_mutations.py::test_
                                                       unexpected_failure_is_a_retryable_
                                                       rejection_and_frees_the_id``
Client clocks an hour ahead and behind, NaN or         here: ``test_clock_skew_...`` and
far-future: lww stays correct within the skew clamp    ``test_malformed_clocks_...`` over REST and
                                                       the WebSocket; ``test_conflicts.py`` (lww,
                                                       clamp); ``test_clocks.py`` (parse, clamp)
=====================================================  =========================================

What existed, judged: the slow transaction was proved on real parts (PostgreSQL, six
writers queued on its lock, a reader asserting ``seq == last + 1``). Rollback was proved
on one connection only, with no writer queued for its seq and no live subscriber. The
kill, group expiry and capacity had nothing on real parts (in-process retries, an
in-memory layer that drops on purpose, a Redis restart). Frames that raise were covered;
a connection task that raises (1011) was not, nor a hub listener that raises, which kept
the batch from the listeners after it: fixed. The clamp and lww were tested through
``mutations.apply_one`` only, not over REST or the WebSocket, not year 9999 or NaN.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.test import override_settings
from rest_framework.test import APIClient

from syncapp import clocks, tokens
from syncapp.client import Backoff, OpApplied, StreamEvent, SyncClient
from syncapp.client.frames import ErrorFrame
from syncapp.clocks import HybridClock, Stamp
from syncapp.hub import announce_revocation, current_hub, get_hub
from tests.client.asgi_bridge import AsgiBridge
from tests.helpers import ops
from tests.test_concurrency import waiting_on_locks
from tests.testapp.models import Card
from tests.testapp.permissions import FAULTY
from tests.ws import Client, adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]

TIMEOUT = 10.0
SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}
FAULTY_SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.FaultyPermission"}


async def until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


class Abort(Exception):
    """Raised to roll a transaction back."""


def titles(stream: str) -> list[tuple[int, str]]:
    return [(op.seq, op.fields.get("title", "")) for op in ops(stream)]


# A rolled-back transaction.


@pytest.mark.postgresql
async def test_rollback_of_a_transaction_holding_a_seq_leaves_no_op_no_broadcast_and_no_gap(
    user, board
):
    """The rolled-back transaction took seq 2 while another writer queued for the stream's
    lock: the queued writer gets seq 2, and a live subscriber sees it, and only it."""
    stream = f"board:{board.pk}"
    await adb(Card.objects.create)(board=board, title="first")
    client = await Client(user).connect()
    [snapshot, *_] = await client.subscribe(stream)
    assert snapshot["seq"] == 1
    holding, release = threading.Event(), threading.Event()

    def doomed() -> None:
        try:
            with transaction.atomic():
                Card.objects.create(board=board, title="rolled back")  # takes seq 2
                holding.set()
                assert release.wait(TIMEOUT)
                raise Abort
        except Abort:
            pass
        finally:
            connections.close_all()

    def queued() -> None:
        try:
            Card.objects.create(board=board, title="committed")
        finally:
            connections.close_all()

    # Threads of their own (not the one adb uses), each with its own connection.
    first = asyncio.ensure_future(sync_to_async(doomed, thread_sensitive=False)())
    assert await asyncio.to_thread(holding.wait, TIMEOUT)
    second = asyncio.ensure_future(sync_to_async(queued, thread_sensitive=False)())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while await adb(waiting_on_locks)() < 1:  # the second writer waits for the stream
        assert loop.time() < deadline, "the second writer never queued"
        assert not second.done(), "the second writer did not wait for the first"
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), TIMEOUT)

    [op] = await client.ops(1)
    assert (op["seq"], op["fields"]["title"]) == (2, "committed")
    assert await client.nothing(0.3)  # nothing was broadcast for the rolled-back write
    assert await adb(titles)(stream) == [(1, "first"), (2, "committed")]
    assert not await adb(Card.objects.filter(title="rolled back").exists)()
    await client.close()


async def test_savepoint_rollback_inside_a_committed_transaction_sends_only_what_committed(
    user, board
):
    stream = f"board:{board.pk}"
    client = await Client(user).connect()
    await client.subscribe(stream)

    def write() -> None:
        with transaction.atomic():
            Card.objects.create(board=board, title="kept 1")
            try:
                with transaction.atomic():  # a savepoint
                    Card.objects.create(board=board, title="undone")
                    raise Abort
            except Abort:
                pass
            Card.objects.create(board=board, title="kept 2")

    await adb(write)()
    received = await client.ops(2)
    assert [(op["seq"], op["fields"]["title"]) for op in received] == [
        (1, "kept 1"),
        (2, "kept 2"),
    ]
    assert await client.nothing(0.3)
    assert await adb(titles)(stream) == [(1, "kept 1"), (2, "kept 2")]
    await client.close()


# A consumer that raises.


class WatchedClient(SyncClient):
    """A SyncClient that keeps its close codes, error frames and ops."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_codes: list[int | None] = []
        self.errors: list[ErrorFrame] = []
        self.seqs: list[int] = []

    def on_disconnect(self, code: int | None, reason: str) -> None:
        self.close_codes.append(code)

    def on_error(self, frame: ErrorFrame) -> None:
        self.errors.append(frame)

    def record(self, event: StreamEvent) -> None:
        if isinstance(event, OpApplied):
            self.seqs.append(event.op.seq)


def ada_members(handle: Any, client: SyncClient) -> list[str]:
    """The presence member ids of ``client``'s connections, as ``handle`` sees them."""
    return [
        member
        for member, data in handle.members.items()
        if data["state"].get("name") == client.client_id
    ]


def set_last_name(user: Any, value: str) -> None:
    type(user).objects.filter(pk=user.pk).update(last_name=value)


async def add_cards(board: Any, count: int) -> None:
    for _ in range(count):
        await adb(Card.objects.create)(board=board, title="card")


@override_settings(SYNCAPP=FAULTY_SETTINGS)
async def test_connection_whose_task_raises_closes_1011_resumes_and_others_never_notice(
    user, other_user, board
):
    """A revocation makes every subscription recheck its reader; for ada the permission
    hook raises. That connection's task fails: it closes with 1011, cleanly (its
    subscription and presence are gone), the client reconnects and resumes from its
    position. bea, on the same process and stream, sees nothing but ops."""
    from tests.asgi import application

    stream = f"board:{board.pk}"
    reconnect = asyncio.Event()

    async def gated_sleep(delay: float) -> None:  # ada reconnects once the test says so
        await reconnect.wait()

    backoff = Backoff(base=0.01, cap=0.1, random=lambda: 0.5)
    async with AsgiBridge(application) as bridge:
        ada = WatchedClient(
            bridge.url, token=tokens.issue(user), sleep=gated_sleep, backoff=backoff
        )
        bea = WatchedClient(bridge.url, token=tokens.issue(other_user), backoff=backoff)
        try:
            for client in (ada, bea):
                await client.connect()
                handle = await client.subscribe(stream)
                handle.add_listener(client.record)
                await client.set_presence(stream, {"name": client.client_id})
            ada_handle, bea_handle = ada.streams[stream], bea.streams[stream]
            await add_cards(board, 2)
            await ada_handle.wait_for(2, timeout=TIMEOUT)
            await until(lambda: len(bea_handle.members) == 2, "bea sees both members")
            [first_id] = ada_members(bea_handle, ada)

            await adb(set_last_name)(user, FAULTY)
            await adb(announce_revocation)(None, stream)  # every reader is rechecked
            await until(lambda: bool(ada.close_codes), "ada's connection to close")
            assert ada.close_codes == [1011]
            # Closed cleanly: its subscription left the feed, its presence left bea's view.
            hub = current_hub()
            assert hub is not None
            await until(lambda: len(hub.feeds[stream].listeners) == 1, "ada's listener to go")
            await until(lambda: first_id not in bea_handle.members, "ada's presence to leave")
            await add_cards(board, 2)  # while ada is away
            await bea_handle.wait_for(4, timeout=TIMEOUT)

            await adb(set_last_name)(user, "")  # the bug is fixed; ada reconnects
            reconnect.set()
            await ada_handle.wait_for(4, timeout=TIMEOUT)
            await add_cards(board, 1)
            for handle in (ada_handle, bea_handle):
                await handle.wait_for(5, timeout=TIMEOUT)
            assert ada.seqs == bea.seqs == [1, 2, 3, 4, 5]
            assert ada.connection_count == 2
            await until(lambda: bool(ada_members(bea_handle, ada)), "ada to be present again")
            [second_id] = ada_members(bea_handle, ada)
            assert second_id != first_id
            assert first_id not in bea_handle.members
            assert (bea.connection_count, bea.close_codes, bea.errors) == (1, [], [])
            assert len(hub.connections) == 2
        finally:
            for client in (ada, bea):
                await client.close()


@override_settings(SYNCAPP=FAULTY_SETTINGS)
async def test_frame_whose_handling_raises_fails_alone(user, other_user, board):
    """The permission hook raises while a subscribe is handled: that frame gets an
    ``internal_error`` naming the stream, and the connection goes on."""
    stream = f"board:{board.pk}"
    await adb(set_last_name)(user, FAULTY)
    user.last_name = FAULTY
    faulty, fine = await Client(user).connect(), await Client(other_user).connect()
    [error] = await faulty.subscribe(stream)
    assert (error["type"], error["code"], error["stream"]) == ("error", "internal_error", stream)
    await fine.subscribe(stream)
    await faulty.send({"type": "ping", "ts": 1})
    assert (await faulty.receive_type("pong"))["ts"] == 1
    await add_cards(board, 1)
    [op] = await fine.ops(1)
    assert op["seq"] == 1
    assert await faulty.nothing()
    await faulty.close()
    await fine.close()


class RaisingListener:
    """A hub listener with a bug: every delivery raises."""

    def deliver(self, batch: Any) -> None:
        raise RuntimeError("a listener with a bug")

    def reset(self, epoch: str, reason: str) -> None:
        pass

    def recheck(self, user_id: Any) -> None:
        pass

    def presence(self, frame: str) -> None:
        pass


async def test_listener_that_raises_does_not_keep_a_batch_from_the_others(user, board, caplog):
    """Listeners of one feed share each batch (WebSocket subscriptions, SSE taps, long-poll
    waiters); one that raises must not keep it from those after it. Many raising ones, so
    that some come before the subscription in the feed's (unordered) set."""
    stream = f"board:{board.pk}"
    client = await Client(user).connect()
    await client.subscribe(stream)
    hub = await get_hub()
    raising = [RaisingListener() for _ in range(20)]
    for listener in raising:
        await hub.follow(stream, listener)
    await add_cards(board, 1)
    [op] = await client.ops(1)  # at once: no later op reveals a gap
    assert op["seq"] == 1
    assert f"A listener of {stream} failed to take ops 1..1" in caplog.text
    for listener in raising:
        hub.unfollow(stream, listener)
    await client.close()


# Client clocks.

NOW = 1_800_000_000_000  # ms: the server's time in these tests
SKEW = 60_000  # MAX_CLOCK_SKEW's default, in ms
HOUR = 3_600_000
YEAR_9999 = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class ServerTime:
    """The server clock's physical time, set by the test."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def server_time():
    time = ServerTime(NOW)
    with clocks.using_clock(HybridClock("~server", time)):
        yield time


class Transport:
    """Sends one mutation as ``client_id`` over REST or the WebSocket."""

    def __init__(self, kind: str, user: Any) -> None:
        self.kind = kind
        self.user = user
        self.sockets: dict[str, Client] = {}

    async def raw(self, client_id: str, mutation_text: str) -> dict[str, Any]:
        """The result, or the error (problem+json or error frame) as a dict with a code."""
        if self.kind == "rest":
            body = f'{{"client_id": "{client_id}", "mutations": [{mutation_text}]}}'

            def post() -> Any:
                api = APIClient()
                api.force_authenticate(self.user)
                return api.post("/sync/api/mutations/", body, content_type="application/json")

            response = await adb(post)()
            data = json.loads(response.content)
            if response.status_code != 200:
                assert response.status_code == 400, data
                return {"error": data["code"], "detail": data["detail"]}
            [result] = data["results"]
            return dict(result)
        ws = self.sockets.get(client_id)
        if ws is None:
            ws = self.sockets[client_id] = await Client(self.user).connect(hello=False)
            await ws.send({"type": "hello", "client_id": client_id, "protocol": 1})
            await ws.receive_type("welcome")
        await ws.send_text(f'{{"type": "mutate", "mutations": [{mutation_text}]}}')
        frame = await ws.receive()
        if frame["type"] == "error":
            return {"error": frame["code"], "detail": frame["message"]}
        assert frame["type"] == "ack", frame
        [result] = frame["results"]
        return dict(result)

    async def update(self, client_id: str, card: Card, clock: Any, **fields: Any) -> Any:
        mutation = {
            "id": str(uuid.uuid4()),
            "stream": f"board:{card.board_id}",
            "model": "testapp.card",
            "pk": str(card.pk),
            "op": "update",
            "fields": fields,
            "clock": clock,
        }
        return await self.raw(client_id, json.dumps(mutation))

    async def close(self) -> None:
        for ws in self.sockets.values():
            await ws.close()


@pytest.fixture(params=["rest", "ws"])
async def transport(request, user):
    sender = Transport(request.param, user)
    yield sender
    await sender.close()


@pytest.fixture
def card(board, server_time):
    return Card.objects.create(board=board, title="t", body="created")


def stored(card: Card, field: str) -> tuple[Any, Stamp]:
    card.refresh_from_db()
    return getattr(card, field), Stamp.decode(card.sync_clocks[field])


async def test_clock_skew_an_hour_either_way_and_year_9999_stay_within_the_clamp(
    transport, card, server_time
):
    async def write(client_id: str, wall: int, value: str) -> str:
        result = await transport.update(client_id, card, f"{wall}:0", body=value)
        return str(result["status"])

    # An hour ahead: applied, but its stamp is pulled back to now + MAX_CLOCK_SKEW.
    assert await write("ahead", NOW + HOUR, "ahead") == "applied"
    assert await adb(stored)(card, "body") == ("ahead", Stamp(NOW + SKEW, 0, "ahead"))
    # An hour behind: older than the stored stamp, so the server keeps its value.
    assert await write("behind", NOW - HOUR, "behind") == "conflict"
    # Within the skew the ahead client's stamp still wins (the bound it is allowed)...
    server_time.now = NOW + SKEW // 2
    assert await write("honest", NOW + SKEW // 2, "inside the skew") == "conflict"
    # ... and no longer: without the clamp, it would win every write for an hour.
    server_time.now = NOW + 2 * SKEW
    assert await write("honest", NOW + 2 * SKEW, "past the skew") == "applied"
    assert await adb(stored)(card, "body") == ("past the skew", Stamp(NOW + 2 * SKEW, 0, "honest"))
    # Year 9999 is clamped the same way: it wins now, as a write one skew ahead would,
    # and loses to the first honest write once the server's time has passed its stamp.
    assert await write("future", YEAR_9999, "year 9999") == "applied"
    assert await adb(stored)(card, "body") == ("year 9999", Stamp(NOW + 3 * SKEW, 0, "future"))
    server_time.now = NOW + 3 * SKEW + 1
    assert await write("honest", NOW + 3 * SKEW + 1, "after 9999") == "applied"
    # The server's own stamps come after everything it has accepted, clamped or not.
    result = await transport.update("plain", card, None, body="no clock")
    assert result["status"] == "applied"
    value, stamp = await adb(stored)(card, "body")
    assert value == "no clock"
    assert stamp > Stamp(NOW + 3 * SKEW + 1, 0, "honest")
    assert stamp.wall == NOW + 3 * SKEW + 1
    # An hour behind on another field: the create's stamp is newer there too.
    result = await transport.update("behind", card, f"{NOW - HOUR}:0", done=True)
    assert result["status"] == "conflict"
    assert result["object"]["fields"]["done"] is False
    # Exactly the applied writes made ops.
    updates = await adb(ops)(f"board:{card.board_id}")
    assert [op.fields["body"] for op in updates[1:]] == [
        "ahead",
        "past the skew",
        "year 9999",
        "after 9999",
        "no clock",
    ]


async def update_with_raw_clock(transport: Any, card: Any, clock: str) -> Any:
    """An update of ``card`` whose ``clock`` is the raw JSON text ``clock``."""
    mutation = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "stream": f"board:{card.board_id}",
            "model": "testapp.card",
            "pk": str(card.pk),
            "op": "update",
            "fields": {"body": "never"},
        }
    )
    return await transport.raw("c1", mutation[:-1] + f', "clock": {clock}}}')


@pytest.mark.parametrize(
    "clock",
    [
        '"NaN:0"',
        '"-1:0"',
        f'"-{HOUR}:0"',
        '"1e3:0"',
        '"1.5:0"',
        '""',
        '"yesterday"',
        '"1:0:node"',
        f'"{"9" * 16}:0"',  # past year 33658: more than 15 digits
        "1800000000000",
        "-1",
    ],
)
async def test_malformed_clocks_get_a_typed_error_and_change_nothing(transport, card, clock):
    answer = await update_with_raw_clock(transport, card, clock)
    assert answer["error"] == "invalid", answer
    assert "$.mutations[0].clock" in answer["detail"]
    assert (await adb(stored)(card, "body"))[0] == "created"
    assert len(await adb(ops)(f"board:{card.board_id}")) == 1


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinite_clock_literals_are_parse_errors(transport, card, literal):
    answer = await update_with_raw_clock(transport, card, literal)
    assert answer["error"] == "parse_error", answer
    assert (await adb(stored)(card, "body"))[0] == "created"
    assert len(await adb(ops)(f"board:{card.board_id}")) == 1
