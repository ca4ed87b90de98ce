"""The hostile inputs of issue 7, one by one, on the transport each one targets.

10 MB frames and bodies, JSON nested 100,000 deep, invalid UTF-8, binary frames, huge
batches, 10,000 subscriptions on one connection, and malformed or hostile positions
(``abc``, ``-1``, ``2**63``, another stream's, a stream the user may not read) for
``subscribe``, the ops endpoint, long-poll and SSE's ``Last-Event-ID``. Each gets a 4xx,
an ``error`` frame or the documented close code; a connection that was not closed still
answers; and what was accepted before is still in the op log.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from django.test import AsyncClient

from syncapp import oplog
from syncapp.models import Op
from syncapp.sse import channel_for
from tests.fuzz import NO_RATE_LIMITS
from tests.http_streams import EventReader
from tests.testapp.models import Board, Card
from tests.ws import Client, adb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hub_closed")]

TEN_MB = 10 * 1024 * 1024
DEEP = 100_000
SECRET = "secret:plans"  # a stream the test user may not read (tests/testapp/permissions.py)


@pytest.fixture
def board(db):
    return Board.objects.create(name="b")


def stream_of(board: Board) -> str:
    return f"board:{board.pk}"


def card_mutation(board: Board, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "stream": stream_of(board),
        "model": "testapp.card",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"board": str(board.pk), "title": "kept"},
        **extra,
    }


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def in_log(mutation_id: str) -> bool:
    """The mutation's op is in the log and its object exists."""
    op = await adb(Op.objects.filter(mutation_id=mutation_id).first)()
    return op is not None and await adb(Card.objects.filter(pk=op.object_pk).exists)()


# WebSocket

LIVE = ("ops", "presence", "presence_state")


async def answer(client: Client, timeout: float = 5) -> dict[str, Any]:
    """The next frame that answers a client frame: live ops and presence are skipped."""
    while True:
        frame = await client.receive(timeout)
        if frame["type"] not in LIVE:
            return frame


async def accepted_over_ws(client: Client, board: Board) -> str:
    """A mutation applied over ``client``; its id."""
    mutation = card_mutation(board)
    await client.send({"type": "mutate", "mutations": [mutation], "ref": "ok"})
    ack = await answer(client)
    assert ack["results"][0]["status"] == "applied", ack
    return str(mutation["id"])


async def still_answers(client: Client, board: Board) -> None:
    """A valid frame still gets its answer, and a valid mutation still applies."""
    await client.send({"type": "ping", "ts": 42, "ref": "alive"})
    assert await answer(client) == {"type": "pong", "ts": 42, "ref": "alive"}
    assert await in_log(await accepted_over_ws(client, board))


def ws_cases(stream: str) -> list[tuple[str, str | bytes, str | int]]:
    """(name, text or bytes sent, the error code or close code expected)."""
    mutation = json.dumps(card_mutation_for(stream)).replace('"never"', nested(DEEP))
    return [
        ("10MB frame", '{"type":"ping","ts":1,"pad":"' + "x" * TEN_MB + '"}', 1009),
        ("10MB of multibyte text", '{"type":"ping","pad":"' + "é" * (TEN_MB // 2) + '"}', 1009),
        ("100k deep array", nested(DEEP), "invalid"),
        (
            "100k deep presence state",
            f'{{"type":"presence","stream":"{stream}","state":{{"a":{nested(DEEP)}}}}}',
            "too_deep",
        ),
        (
            "100k deep mutation fields",
            f'{{"type":"mutate","mutations":[{mutation}]}}',
            "too_deep",
        ),
        ("100k deep ping ts", f'{{"type":"ping","ts":{nested(DEEP)}}}', "invalid"),
        ("lone surrogate", '{"type":"ping","ts":1,"ref":"\ud800"}', "parse_error"),
        ("bare surrogate", "\udcff", "parse_error"),
        ("escaped lone surrogate", '{"type":"ping","ref":"\\ud800"}', "parse_error"),
        ("binary json", b'{"type":"ping","ts":1}', "binary_unsupported"),
        ("binary invalid utf-8", b"\xff\xfe\xfd", "binary_unsupported"),
        ("binary 10MB", b"\x00" * TEN_MB, "binary_unsupported"),
        ("not json", "{type: ping}", "parse_error"),
        ("no type", '{"ts": 1}', "unknown_type"),
        ("unknown type", '{"type": "pwn"}', "unknown_type"),
        ("type not a string", '{"type": ["ping"]}', "unknown_type"),
        ("huge batch", "", "batch_too_large"),  # built in the test: MAX_BATCH + 1 mutations
        ("ref too long", '{"type":"ping","ref":"' + "r" * 65 + '"}', "invalid"),
        ("ref out of range", '{"type":"ping","ref":' + str(2**64) + "}", "invalid"),
        ("ts out of range", '{"type":"ping","ts":1e999}', "invalid"),
        (
            "presence state not an object",
            f'{{"type":"presence","stream":"{stream}","state":[]}}',
            "invalid",
        ),
    ]


def card_mutation_for(stream: str) -> dict[str, Any]:
    board = stream.split(":", 1)[1]
    return {
        "id": str(uuid.uuid4()),
        "stream": stream,
        "model": "testapp.card",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"board": board, "title": "never"},
    }


WS_NAMES = [name for name, _, _ in ws_cases("board:x")]


@pytest.mark.parametrize("name", WS_NAMES)
async def test_websocket_hostile_frame(user, board, name):
    stream = stream_of(board)
    [(_, payload, expected)] = [case for case in ws_cases(stream) if case[0] == name]
    if name == "huge batch":
        batch = [card_mutation(board) for _ in range(101)]
        payload = json.dumps({"type": "mutate", "mutations": batch, "ref": "big"})
    client = await Client(user).connect()
    await client.subscribe(stream)
    kept = await accepted_over_ws(client, board)
    if isinstance(payload, bytes):
        await client.communicator.send_to(bytes_data=payload)
    else:
        await client.send_text(payload)
    if isinstance(expected, int):
        assert await client.closed() == expected
    else:
        error = await answer(client)
        assert (error["type"], error["code"]) == ("error", expected), error
        await still_answers(client, board)
        if name == "huge batch":
            assert error["ref"] == "big"
            ids = [m["id"] for m in json.loads(payload)["mutations"]]
            assert not await adb(Op.objects.filter(mutation_id__in=ids).exists)()
        await client.close()
    assert await in_log(kept)


@pytest.mark.parametrize("limits", ["default", "no rate limits"])
async def test_websocket_ten_thousand_subscriptions(user, board, settings, limits):
    """Every subscribe is answered; at most MAX_SUBSCRIPTIONS (100) are held, the rest get
    ``too_many_subscriptions`` (or ``rate_limited``, past the user's read budget); the
    connection goes on."""
    if limits != "default":
        settings.SYNCAPP = NO_RATE_LIMITS
    client = await Client(user).connect()
    kept = await accepted_over_ws(client, board)
    for i in range(10_000):
        await client.send({"type": "subscribe", "stream": f"public:s{i}", "ref": i})
    answered: dict[int, str] = {}
    while len(answered) < 10_000:
        frame = await client.receive(timeout=30)
        if frame["type"] == "subscribed":
            answered[frame["ref"]] = "subscribed"
        elif frame["type"] == "error":
            answered[frame["ref"]] = frame["code"]
    held = [ref for ref, what in answered.items() if what == "subscribed"]
    assert len(held) == 100
    assert set(answered.values()) <= {"subscribed", "too_many_subscriptions", "rate_limited"}
    assert "too_many_subscriptions" in answered.values()
    if limits != "default":
        assert list(answered.values()).count("too_many_subscriptions") == 9_900
    await still_answers(client, board)  # (skipping the presence_state frames still coming)
    await client.close()
    assert await in_log(kept)


def positions(board_epoch: str, other_epoch: str) -> dict[str, tuple[Any, str]]:
    """name: (the subscribe's ``after``, the code of the error or reset expected)."""
    return {
        "epoch abc": ({"epoch": "abc", "seq": 1}, "reset:epoch_changed"),
        "seq abc": ({"epoch": board_epoch, "seq": "abc"}, "invalid"),
        "seq -1": ({"epoch": board_epoch, "seq": -1}, "invalid"),
        "seq 2**63": ({"epoch": board_epoch, "seq": 2**63}, "invalid"),
        "seq 2**63-1": ({"epoch": board_epoch, "seq": 2**63 - 1}, "reset:ahead_of_head"),
        "seq float": ({"epoch": board_epoch, "seq": 1.5}, "invalid"),
        "epoch empty": ({"epoch": "", "seq": 1}, "invalid"),
        "epoch huge": ({"epoch": "e" * 100_000, "seq": 1}, "invalid"),
        "another stream's epoch": ({"epoch": other_epoch, "seq": 1}, "reset:epoch_changed"),
        "after not an object": ("abc", "invalid"),
        "extra field": ({"epoch": board_epoch, "seq": 1, "x": 1}, "invalid"),
    }


POSITION_NAMES = list(positions("", ""))


async def epochs(board: Board) -> tuple[str, str]:
    """The board stream's epoch and another stream's, both with one op."""
    await adb(Card.objects.create)(board=board, title="before")
    await adb(Board.objects.create)(name="other")
    board_head = await adb(oplog.head_of)(stream_of(board))
    other_head = await adb(oplog.head_of)("boards")
    assert board_head.epoch != other_head.epoch
    return board_head.epoch, other_head.epoch


@pytest.mark.parametrize("name", POSITION_NAMES)
async def test_websocket_hostile_subscribe_position(user, board, name):
    after, expected = positions(*await epochs(board))[name]
    client = await Client(user).connect()
    kept = await accepted_over_ws(client, board)
    await client.send({"type": "subscribe", "stream": stream_of(board), "after": after})
    frame = await answer(client)
    if expected.startswith("reset:"):
        assert (frame["type"], frame["reason"]) == ("reset", expected.removeprefix("reset:"))
    else:
        assert (frame["type"], frame["code"]) == ("error", expected), frame
    await still_answers(client, board)
    await client.close()
    assert await in_log(kept)


async def test_websocket_subscribe_to_a_stream_the_user_may_not_read(user, board):
    await epochs(board)
    client = await Client(user).connect()
    await client.send({"type": "subscribe", "stream": SECRET, "after": {"epoch": "x", "seq": 1}})
    error = await client.receive_type("error")
    assert (error["code"], error["stream"]) == ("permission_denied", SECRET)
    await still_answers(client, board)
    await client.close()


# REST

MUTATIONS = "/sync/api/mutations/"
CARDS = "/sync/api/models/testapp.card/"


def rest_cases(board: Board) -> dict[str, tuple[str, bytes, str, int, str]]:
    """name: (path, body, content type, status, code)."""
    deep_item = json.dumps(card_mutation(board)).replace('"kept"', nested(DEEP))
    huge = json.dumps({"mutations": [card_mutation(board) for _ in range(101)]})
    many = json.dumps({"mutations": [card_mutation(board) for _ in range(10_000)]})
    json_type = "application/json"
    return {
        "10MB body": (
            MUTATIONS,
            b'{"mutations":"' + b"x" * TEN_MB + b'"}',
            json_type,
            413,
            "too_large",
        ),
        "10MB model body": (
            CARDS,
            b'{"title":"' + b"x" * TEN_MB + b'"}',
            json_type,
            413,
            "too_large",
        ),
        "100k deep body": (MUTATIONS, nested(DEEP).encode(), json_type, 400, "invalid"),
        "100k deep fields": (
            MUTATIONS,
            f'{{"mutations":[{deep_item}]}}'.encode(),
            json_type,
            400,
            "too_deep",
        ),
        "100k deep model body": (
            CARDS,
            f'{{"title":{nested(DEEP)}}}'.encode(),
            json_type,
            400,
            "too_deep",
        ),
        "invalid utf-8": (
            MUTATIONS,
            b'{"client_id":"\xff\xfe","mutations":[]}',
            json_type,
            400,
            "parse_error",
        ),
        "invalid utf-8 outside strings": (
            MUTATIONS,
            b'{"mutations":\xff}',
            json_type,
            400,
            "parse_error",
        ),
        "invalid utf-8 model body": (CARDS, b'{"title":"\xc3\x28"}', json_type, 400, "parse_error"),
        "escaped lone surrogate": (
            CARDS,
            b'{"title":"\\ud800"}',
            json_type,
            400,
            "parse_error",
        ),
        "binary body": (
            MUTATIONS,
            bytes(range(256)),
            "application/octet-stream",
            415,
            "unsupported_media_type",
        ),
        "binary body as json": (MUTATIONS, bytes(range(256)), json_type, 400, "parse_error"),
        "huge batch": (MUTATIONS, huge.encode(), json_type, 413, "batch_too_large"),
        "10,000 mutations": (MUTATIONS, many.encode(), json_type, 413, "too_large"),
        "wrong types": (
            MUTATIONS,
            b'{"mutations":[{"id":1,"stream":2}]}',
            json_type,
            400,
            "invalid",
        ),
        "empty batch": (MUTATIONS, b'{"mutations":[]}', json_type, 400, "invalid"),
        "not an object": (CARDS, b"[1, 2]", json_type, 400, "invalid"),
    }


REST_NAMES = list(rest_cases(Board(pk=uuid.uuid4())))


@pytest.mark.parametrize("name", REST_NAMES)
def test_rest_hostile_body(api, board, name):
    kept = card_mutation(board)
    assert api.post(MUTATIONS, {"mutations": [kept]}, format="json").status_code == 200
    path, body, content_type, status, code = rest_cases(board)[name]
    before = Op.objects.count()
    response = api.generic("POST", path, body, content_type=content_type)
    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    assert response["Content-Type"] == "application/problem+json"
    assert Op.objects.count() == before  # nothing of a refused body was applied
    assert Op.objects.filter(mutation_id=kept["id"]).exists()


def test_rest_body_over_the_limit_without_content_length(api, board):
    """A chunked body has no Content-Length: the parser still stops reading at the limit."""
    from syncapp.api.parsers import read_limited
    from syncapp.exceptions import PayloadTooLarge

    class Endless:
        def read(self, size: int = -1) -> bytes:
            assert size > 0, "read without a limit"
            return b"x" * size

    with pytest.raises(PayloadTooLarge):
        read_limited(Endless(), 1024)


@pytest.mark.parametrize(
    "stream", ["a%00b", "x" * 201, "bad name", "%ff%fe", "\u00e9t\u00e9"], ids=repr
)
def test_rest_hostile_stream_names(api, stream):
    for path in (
        f"/sync/api/streams/{stream}/ops/",
        f"/sync/api/streams/{stream}/snapshot/",
        f"{CARDS}?stream={stream}",
        f"/sync/api/conflicts/?stream={stream}",
    ):
        response = api.get(path)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_stream"), path


# Positions on the ops endpoint and long-poll


def query_cases(board_epoch: str, other_epoch: str) -> dict[str, tuple[dict[str, Any], int, str]]:
    """name: (query, status, code)."""
    return {
        "after abc": ({"epoch": board_epoch, "after": "abc"}, 400, "invalid"),
        "after -1": ({"epoch": board_epoch, "after": "-1"}, 400, "invalid_position"),
        "after 2**63": ({"epoch": board_epoch, "after": str(2**63)}, 400, "invalid"),
        "after 2**63-1": ({"epoch": board_epoch, "after": str(2**63 - 1)}, 409, "reset"),
        "after 1.5": ({"epoch": board_epoch, "after": "1.5"}, 400, "invalid"),
        "after 1e3 is 1000": ({"epoch": board_epoch, "after": "1e3"}, 409, "reset"),
        "after without epoch": ({"after": "1"}, 400, "invalid_position"),
        "epoch abc": ({"epoch": "abc", "after": "1"}, 409, "reset"),
        "epoch with NUL": ({"epoch": "a\x00b", "after": "1"}, 409, "reset"),
        "epoch huge": ({"epoch": "e" * 10_000, "after": "1"}, 400, "invalid"),
        "another stream's epoch": ({"epoch": other_epoch, "after": "1"}, 409, "reset"),
        "limit 0": ({"limit": "0"}, 400, "invalid"),
        "limit abc": ({"limit": "abc"}, 400, "invalid"),
    }


QUERY_NAMES = list(query_cases("", ""))


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_ops_endpoint_hostile_position(api, board, name):
    query, status, code = query_cases(*_epochs_sync(board))[name]
    response = api.get(f"/sync/api/streams/{stream_of(board)}/ops/", query)
    assert (response.status_code, response.json()["code"]) == (status, code), response.content
    if code == "reset":
        assert response.json()["type"] == "reset"


def _epochs_sync(board: Board) -> tuple[str, str]:
    Card.objects.create(board=board, title="before")
    Board.objects.create(name="other")
    return oplog.head_of(stream_of(board)).epoch, oplog.head_of("boards").epoch


def test_ops_endpoint_of_a_stream_the_user_may_not_read(api, board):
    epoch, _ = _epochs_sync(board)
    response = api.get(f"/sync/api/streams/{SECRET}/ops/", {"epoch": epoch, "after": "1"})
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


async def logged_in(user: Any) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(user)
    return client


@pytest.mark.parametrize("name", QUERY_NAMES)
async def test_long_poll_hostile_position(user, board, name):
    """The same positions with ``wait``: refused at once, before any waiting."""
    query, status, code = query_cases(*await epochs(board))[name]
    client = await logged_in(user)
    response = await client.get(
        f"/sync/api/streams/{stream_of(board)}/ops/", {**query, "wait": "30"}
    )
    assert (response.status_code, response.json()["code"]) == (status, code), response.content


async def test_long_poll_of_a_stream_the_user_may_not_read(user, board):
    client = await logged_in(user)
    response = await client.get(f"/sync/api/streams/{SECRET}/ops/", {"wait": "30"})
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


# SSE: Last-Event-ID


def sse_id(stream: str, last: str) -> str:
    return f"{quote(channel_for(stream), safe='')}:{last}"


def last_event_ids(stream: str) -> dict[str, tuple[str, int | str]]:
    """name: (Last-Event-ID, 400 for a refusal or the first event expected)."""
    return {
        "abc": (sse_id(stream, "abc"), 400),
        "-1": (sse_id(stream, "-1"), 400),
        "2**63": (sse_id(stream, str(2**63)), 400),
        "2**63-1": (sse_id(stream, str(2**63 - 1)), "stream-reset"),
        "2**64": (sse_id(stream, str(2**64)), 400),
        "empty seq": (sse_id(stream, ""), 400),
        "named twice": (f"{sse_id(stream, '1')},{sse_id(stream, '2')}", 400),
        "another stream's": (sse_id("boards", "1"), "live"),
        "a stream the user may not read": (sse_id(SECRET, "1"), "live"),
        "garbage": ("%%%:::,,,", "live"),
        "error": ("error", "live"),
        "10kB": ("x" * 10_000, "live"),
    }


SSE_NAMES = list(last_event_ids("s"))


@pytest.mark.parametrize("name", SSE_NAMES)
@pytest.mark.parametrize("where", ["header", "query"])
async def test_sse_hostile_last_event_id(user, board, name, where):
    """A malformed id for this stream is a 400; an id for other streams (or none at all)
    is not this stream's position: it starts at the head, and gets only new ops."""
    await epochs(board)
    stream = stream_of(board)
    last, expected = last_event_ids(stream)[name]
    client = await logged_in(user)
    url = f"/sync/api/streams/{stream}/events/"
    if where == "header":
        response = await client.get(url, headers={"Last-Event-ID": last})
    else:
        response = await client.get(url, {"lastEventId": last})
    if expected == 400:
        assert (response.status_code, response.json()["code"]) == (400, "invalid_position")
        return
    assert response.status_code == 200
    events = EventReader(response)
    if expected == "stream-reset":
        await events.next_named("stream-reset")
    await adb(Card.objects.create)(board=board, title="new")
    [op] = await events.ops(1)
    assert (op["stream"], op["seq"], op["fields"]["title"]) == (stream, 2, "new")
    await events.close()


async def test_sse_of_a_stream_the_user_may_not_read(user, board):
    client = await logged_in(user)
    response = await client.get(
        f"/sync/api/streams/{SECRET}/events/", headers={"Last-Event-ID": sse_id(SECRET, "1")}
    )
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
