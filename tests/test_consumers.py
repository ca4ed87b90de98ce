"""The WebSocket consumer, protocol version 1, through Channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import datetime

import pytest
from channels.layers import channel_layers
from django.db.backends.utils import CursorWrapper
from django.test import override_settings
from django.utils import timezone

from syncapp import broadcast, encoding, oplog, permissions, retention
from syncapp.consumers import SyncConsumer
from syncapp.hub import Batch
from syncapp.models import Op
from tests.helpers import board_create
from tests.testapp.models import Board, Card
from tests.ws import Client, adb, close_hub

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]

SETTINGS = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}


@pytest.fixture
def board(db):
    return Board.objects.create(name="b")


def stream_of(board):
    return f"board:{board.pk}"


async def add_cards(board, count, prefix="c"):
    for i in range(count):
        await adb(Card.objects.create)(board=board, title=f"{prefix}{i}")


def seqs(ops):
    return [op["seq"] for op in ops]


# handshake


async def test_hello_is_welcomed_with_the_connection_parameters(user):
    client = await Client(user).connect(hello=False)
    await client.send({"type": "hello", "client_id": "tab-1", "protocol": 1, "ref": "h"})
    before = timezone.now()
    welcome = await client.receive()
    assert len(welcome.pop("connection_id")) == 16
    server_time = datetime.fromisoformat(welcome.pop("time").replace("Z", "+00:00"))
    assert before <= server_time <= timezone.now()
    assert welcome == {
        "type": "welcome",
        "protocol": 1,
        "heartbeat_ms": 25000,
        "max_frame_bytes": 524288,
        "max_batch": 100,
        "ref": "h",
    }
    await client.close()


async def test_unsupported_protocol_is_an_error_then_close_4400(user):
    client = await Client(user).connect(hello=False)
    await client.send({"type": "hello", "client_id": "tab-1", "protocol": 2})
    assert (await client.receive())["code"] == "protocol_unsupported"
    assert await client.closed() == 4400


async def test_frames_before_hello_are_refused(user):
    client = await Client(user).connect(hello=False)
    await client.send({"type": "ping", "ts": 1})
    assert (await client.receive())["code"] == "hello_required"
    await client.close()


async def test_second_hello_is_refused(user):
    client = await Client(user).connect()
    await client.send({"type": "hello", "client_id": "tab-2", "protocol": 1})
    assert (await client.receive())["code"] == "already_hello"
    await client.close()


async def test_ping_is_answered_with_pong(user):
    client = await Client(user).connect()
    await client.send({"type": "ping", "ts": 123.5, "ref": 7})
    assert await client.receive() == {"type": "pong", "ts": 123.5, "ref": 7}
    await client.close()


# subscribing


async def test_subscribe_without_position_sends_snapshot_then_live_ops(user, board):
    await add_cards(board, 2)
    client = await Client(user).connect()
    snapshot, subscribed = await client.subscribe(stream_of(board))
    assert snapshot["type"] == "snapshot"
    assert (snapshot["seq"], len(snapshot["objects"])) == (2, 2)
    assert subscribed == {
        "type": "subscribed",
        "stream": stream_of(board),
        "epoch": snapshot["epoch"],
        "head": 2,
    }
    await add_cards(board, 1, "live")
    [op] = await client.ops(1)
    assert (op["seq"], op["op"], op["fields"]["title"]) == (3, "create", "live0")
    await client.close()


async def test_subscribe_with_position_replays_what_was_missed(user, board):
    await add_cards(board, 5)
    epoch = (await adb(oplog.head_of)(stream_of(board))).epoch
    client = await Client(user).connect()
    frames = await client.subscribe(stream_of(board), {"epoch": epoch, "seq": 2})
    replayed = [op for frame in frames if frame["type"] == "ops" for op in frame["ops"]]
    assert seqs(replayed) == [3, 4, 5]
    assert frames[-1]["head"] == 5
    await client.close()


@override_settings(SYNCAPP={**SETTINGS, "RING_SIZE": 2})
async def test_resume_reads_the_log_when_the_ring_does_not_reach_back(user, board):
    client = await Client(user).connect()
    _, subscribed = await client.subscribe(stream_of(board))  # the feed starts now
    await add_cards(board, 6)
    await client.ops(6)
    other = await Client(user).connect()
    frames = await other.subscribe(stream_of(board), {"epoch": subscribed["epoch"], "seq": 1})
    replayed = [op for frame in frames if frame["type"] == "ops" for op in frame["ops"]]
    assert seqs(replayed) == [2, 3, 4, 5, 6]
    await client.close()
    await other.close()


async def test_resume_while_writes_continue_sends_every_op_once_in_order(user, board):
    await add_cards(board, 3)
    epoch = (await adb(oplog.head_of)(stream_of(board))).epoch
    client = await Client(user).connect()
    await client.send(
        {"type": "subscribe", "stream": stream_of(board), "after": {"epoch": epoch, "seq": 0}}
    )
    await add_cards(board, 20, "during")  # commits race the replay
    received: list = []
    while len(received) < 23:
        frame = await client.receive()
        if frame["type"] == "ops":
            received.extend(frame["ops"])
    assert seqs(received) == list(range(1, 24))
    assert await client.nothing()
    await client.close()


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        ({"epoch": "other", "seq": 1}, "epoch_changed"),
        ({"epoch": None, "seq": 99}, "ahead_of_head"),
    ],
)
async def test_unresumable_positions_get_a_reset(user, board, position, reason):
    await add_cards(board, 2)
    head = await adb(oplog.head_of)(stream_of(board))
    position = {**position, "epoch": position["epoch"] or head.epoch}
    client = await Client(user).connect()
    [reset] = await client.subscribe(stream_of(board), position)
    assert reset == {
        "type": "reset",
        "stream": stream_of(board),
        "epoch": head.epoch,
        "reason": reason,
    }
    await add_cards(board, 1)
    assert await client.nothing()  # the subscription ended with the reset
    await client.close()


async def test_position_behind_the_trimmed_floor_gets_a_reset(user, board):
    await add_cards(board, 5)
    await adb(retention.trim)(stream_of(board), max_age=None, max_ops=2)
    epoch = (await adb(oplog.head_of)(stream_of(board))).epoch
    client = await Client(user).connect()
    [reset] = await client.subscribe(stream_of(board), {"epoch": epoch, "seq": 1})
    assert reset["reason"] == "trimmed"
    frames = await client.subscribe(stream_of(board), {"epoch": epoch, "seq": 3})
    assert seqs(frames[0]["ops"]) == [4, 5]
    await client.close()


async def test_stream_reset_while_live_resets_subscribers(user, board):
    client = await Client(user).connect()
    await client.subscribe(stream_of(board))
    await adb(oplog.reset)(stream_of(board))
    await add_cards(board, 1)  # the first op of the new epoch reaches the feed
    frame = await client.receive()
    assert (frame["type"], frame["reason"]) == ("reset", "epoch_changed")
    await client.close()


async def test_unsubscribe_stops_delivery(user, board):
    client = await Client(user).connect()
    await client.subscribe(stream_of(board))
    await client.send({"type": "unsubscribe", "stream": stream_of(board), "ref": "u"})
    assert await client.receive() == {
        "type": "unsubscribed",
        "stream": stream_of(board),
        "ref": "u",
    }
    await add_cards(board, 1)
    assert await client.nothing()
    await client.send({"type": "unsubscribe", "stream": stream_of(board)})
    assert (await client.receive())["code"] == "not_subscribed"
    await client.close()


@override_settings(SYNCAPP={**SETTINGS, "MAX_SUBSCRIPTIONS": 2})
async def test_subscriptions_per_connection_are_limited(user):
    client = await Client(user).connect()
    await client.subscribe("s1")
    await client.subscribe("s2")
    [error] = await client.subscribe("s3")
    assert (error["code"], error["stream"]) == ("too_many_subscriptions", "s3")
    await client.close()


async def test_subscribing_needs_read_permission(user, other_user):
    anonymous = await Client().connect()
    [error] = await anonymous.subscribe("boards")
    assert (error["code"], error["stream"]) == ("not_authenticated", "boards")
    frames = await anonymous.subscribe("public:boards")
    assert frames[-1]["type"] == "subscribed"
    await anonymous.close()
    client = await Client(user).connect()
    [error] = await client.subscribe("secret:plans")
    assert error["code"] == "permission_denied"
    await client.close()


# the channel layer is a doorbell


async def test_dropped_broadcasts_are_recovered_from_the_log(user, board):
    alias = f"dropping-{uuid.uuid4().hex[:8]}"
    layers = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
        alias: {"BACKEND": "tests.layers.DroppingLayer", "CONFIG": {"drop_every": 3}},
    }
    settings = {**SETTINGS, "CHANNEL_LAYER": alias, "CHECK_INTERVAL": 0.2}
    with override_settings(CHANNEL_LAYERS=layers, SYNCAPP=settings):
        client = await Client(user).connect()
        await client.subscribe(stream_of(board))
        await add_cards(board, 30)
        received = await client.ops(30)
        assert seqs(received) == list(range(1, 31))
        assert channel_layers[alias].dropped >= 9
        assert await client.nothing()
        await client.close()
        await close_hub()
    channel_layers.backends.pop(alias, None)


# fan-out


async def test_fan_out_makes_no_query_and_encodes_nothing(user, board, monkeypatch):
    clients = [await Client(user).connect() for _ in range(20)]
    for client in clients:
        await client.subscribe(stream_of(board))
    await adb(Card.objects.bulk_create)([Card(board=board, title=str(i)) for i in range(3)])
    for client in clients:
        await client.ops(3)
    ops = await adb(
        lambda: list(Op.objects.filter(stream__name=stream_of(board)).select_related("stream"))
    )()
    stream = ops[0].stream
    queries: list = []
    frames: list = []
    real_execute, real_frame = CursorWrapper.execute, Batch.frame

    def execute(self, *args, **kwargs):
        queries.append(args)
        return real_execute(self, *args, **kwargs)

    def frame(self):
        frames.append(self)
        return real_frame(self)

    # Deliver three more ops as broadcast would: only the delivery is measured.
    for op in ops:
        op.seq += 3
        op.encoded = encoding.encode_op(op, stream.name, stream.epoch)

    def no_encoding(*args):
        raise AssertionError("the fan-out sends each op's stored text; it encodes nothing")

    monkeypatch.setattr(CursorWrapper, "execute", execute)
    monkeypatch.setattr(Batch, "frame", frame)
    monkeypatch.setattr(encoding, "encode_op", no_encoding)
    monkeypatch.setattr(oplog, "encode_op", no_encoding)
    await adb(broadcast.send)(stream.name, stream.epoch, ops)
    for client in clients:
        assert seqs(await client.ops(3)) == [4, 5, 6]
    assert queries == []
    assert len({id(batch) for batch in frames}) == 1  # one frame text for all 20
    for client in clients:
        await client.close()


# bad input never breaks the connection


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "parse_error"),
        ("[1, 2]", "invalid"),
        ('"hello"', "invalid"),
        ("{}", "unknown_type"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "subscribe", "stream": 5}', "invalid"),
        ('{"type": "subscribe", "stream": "has space"}', "invalid"),
        ('{"type": "subscribe", "stream": "s", "after": {"epoch": "e", "seq": -1}}', "invalid"),
        ('{"type": "subscribe", "stream": "s", "extra": 1}', "invalid"),
        ('{"type": "mutate", "mutations": []}', "invalid"),
        ('{"type": "mutate", "mutations": [{"id": "nope"}]}', "invalid"),
        ('{"type": "ping", "ts": "now"}', "invalid"),
        ('{"type": "ping", "ref": {"a": 1}}', "invalid"),
        (
            '{"type": "mutate", "mutations": [{"fields": ' + "[" * 5000 + "]" * 5000 + "}]}",
            "invalid",
        ),
        (
            '{"type": "mutate", "mutations": [{"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", '
            '"stream": "s", "model": "a.b", "pk": 1, "op": "update", "fields": {"deep": '
            + "[" * 100_000
            + "]" * 100_000
            + "}}]}",
            "too_deep",
        ),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_keeps_working(user, board, text, code):
    client = await Client(user).connect()
    await client.subscribe(stream_of(board))
    await client.send_text(text)
    error = await client.receive_type("error")
    assert error["code"] == code, error
    await add_cards(board, 1)
    assert seqs(await client.ops(1)) == [1]
    await client.close()


async def test_binary_frames_are_refused(user, board):
    client = await Client(user).connect()
    await client.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await client.receive())["code"] == "binary_unsupported"
    await client.send({"type": "ping"})
    assert (await client.receive())["type"] == "pong"
    await client.close()


@override_settings(SYNCAPP={**SETTINGS, "MAX_FRAME_BYTES": 1000})
async def test_oversize_frames_close_with_1009(user):
    client = await Client(user).connect()
    await client.send({"type": "ping", "ts": 1, "pad": "x" * 2000})
    assert await client.closed() == 1009


@override_settings(SYNCAPP={**SETTINGS, "MUTATION_RATE": 1, "MUTATION_BURST": 2})
async def test_mutation_rate_is_limited_per_connection(user, board):
    client = await Client(user).connect()
    for i in range(3):
        await client.send({"type": "mutate", "ref": i, "mutations": [board_create(f"r{i}")]})
    acks = [await client.receive() for _ in range(3)]
    assert [frame["type"] for frame in acks[:2]] == ["ack", "ack"]
    assert acks[2]["code"] == "rate_limited"
    assert 0 < acks[2]["retry_after_ms"] <= 1001
    assert await adb(Board.objects.filter(name="r2").exists)() is False
    await client.close()


# mutations


async def test_mutate_is_acked_with_results_in_order(user, board):
    client = await Client(user).connect()
    good = board_create("new")
    bad = {**board_create("x"), "model": "testapp.nothing"}
    await client.send({"type": "mutate", "ref": "m", "mutations": [good, bad]})
    ack = await client.receive_type("ack")
    assert ack["ref"] == "m"
    assert [(r["id"], r["status"]) for r in ack["results"]] == [
        (good["id"], "applied"),
        (bad["id"], "rejected"),
    ]
    op = await adb(Op.objects.get)(mutation_id=good["id"])
    assert (op.source, op.client_id, op.actor_id) == ("ws", "tab-1", user.pk)
    await client.close()


@override_settings(SYNCAPP={**SETTINGS, "MAX_BATCH": 2})
async def test_mutate_batch_over_the_limit_is_refused(user, board):
    client = await Client(user).connect()
    await client.send({"type": "mutate", "mutations": [board_create(str(i)) for i in range(3)]})
    assert (await client.receive())["code"] == "batch_too_large"
    assert await adb(Board.objects.count)() == 1
    await client.close()


# heartbeats


@override_settings(SYNCAPP={**SETTINGS, "HEARTBEAT_MS": 100, "HEARTBEAT_TIMEOUT_INTERVALS": 2})
async def test_silent_connections_are_closed_with_4408(user):
    client = await Client(user).connect()
    assert await client.closed() == 4408


@override_settings(SYNCAPP={**SETTINGS, "HEARTBEAT_MS": 100, "HEARTBEAT_TIMEOUT_INTERVALS": 3})
async def test_pinging_connections_stay_open(user):
    client = await Client(user).connect()
    for _ in range(8):  # 0.8 s of pings, past the 0.3 s silence limit
        await client.send({"type": "ping"})
        await client.receive_type("pong")
        assert await client.nothing(0.1)
    await client.close()


# authentication and origin


async def test_token_authenticates_a_connection(user, api):
    token = (await adb(api.post)("/sync/api/ws-token/")).json()["token"]
    client = await Client(path=f"/sync/ws/?token={token}").connect()
    frames = await client.subscribe("boards")
    assert frames[-1]["type"] == "subscribed"
    await client.close()


async def test_ws_token_needs_a_user(anon):
    response = await adb(anon.post)("/sync/api/ws-token/")
    assert (response.status_code, response.json()["code"]) == (403, "not_authenticated")


@pytest.mark.parametrize("token", ["garbage", "e30:1a2b3c:deadbeef"])
async def test_bad_token_closes_with_4401(token):
    client = await Client(path=f"/sync/ws/?token={token}").connect(hello=False)
    assert await client.closed() == 4401


async def test_expired_token_closes_with_4401(user, api, monkeypatch):
    token = (await adb(api.post)("/sync/api/ws-token/")).json()["token"]
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)  # TOKEN_TTL is 60 s
    client = await Client(path=f"/sync/ws/?token={token}").connect(hello=False)
    assert await client.closed() == 4401


@pytest.mark.parametrize(
    "headers",
    [[(b"origin", b"http://evil.example")], [(b"origin", b"null")], []],
    ids=["foreign", "null", "missing"],
)
async def test_handshake_from_a_bad_origin_is_refused_before_accept(user, headers):
    client = Client(user, headers=headers)
    connected, _ = await client.communicator.connect(timeout=5)
    assert connected is False


# revocation


async def test_revoking_access_ends_live_subscriptions(django_user_model, board):
    staff = await adb(django_user_model.objects.create_user)("boss", is_staff=True)
    client = await Client(staff).connect()
    await client.subscribe("secret:plans")
    await client.subscribe(stream_of(board))
    staff.is_staff = False
    await adb(staff.save)()
    await adb(permissions.revoke)(staff, "secret:plans")
    error = await client.receive_type("error")
    assert (error["code"], error["stream"]) == ("permission_denied", "secret:plans")
    await add_cards(board, 1)
    assert seqs(await client.ops(1)) == [1]  # the other subscription goes on
    await client.close()


async def test_a_failed_connection_task_stops_acting_on_frames_before_it_closes(monkeypatch):
    """A task of the connection that raises closes it with 1011; frames already on their
    way are not acted on meanwhile (closing is set at once)."""
    consumer = SyncConsumer()
    consumer.tasks = set()
    consumer.closing = False
    closed: list[object] = []

    async def close(code: object = None, reason: object = None) -> None:
        closed.append(code)

    monkeypatch.setattr(consumer, "close", close)

    async def boom() -> None:
        raise RuntimeError("a bug")

    task = consumer.spawn(boom())
    with contextlib.suppress(RuntimeError):
        await task
    assert consumer.closing
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert closed == [1011]
