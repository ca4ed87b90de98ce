"""Property-based fuzzing of every client frame of the WebSocket protocol (hypothesis).

Frames are built from the protocol (hello, subscribe, unsubscribe, mutate, ping,
presence): valid ones, ones with a member dropped, added or of another type, huge values,
raw text, invalid UTF-8 and binary frames. Every frame gets the answer its type promises
or an ``error`` frame with a documented code (never ``internal_error``), or, only for a
frame over ``max_frame_bytes``, a close with 1009. After each one a ``ping`` still gets
its ``pong``, and every mutation the server said it applied is in the op log at the end.
``SYNCAPP_FUZZ_EXAMPLES`` raises the number of examples (tests/fuzz.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from syncapp import oplog
from syncapp.conf import conf
from syncapp.consumers import FrameError, decode
from syncapp.models import Op
from tests.fuzz import (
    FUZZ,
    NO_RATE_LIMITS,
    RESULT_STATUSES,
    SERVER_FRAME_TYPES,
    WS_ERROR_CODES,
    broken,
    client_ids,
    json_values,
    mutations,
    refs,
    streams,
)
from tests.testapp.models import Board, Card
from tests.ws import Client, adb, close_hub

pytestmark = pytest.mark.django_db(transaction=True)

# Frames the server sends on its own, or late for a subscribe: not the answer to a frame.
UNPROMPTED = {"ops", "presence", "presence_state", "snapshot", "subscribed", "reset"}
DECODE_CODES = {"parse_error", "invalid", "unknown_type", "too_deep"}
CLIENT_TYPES = {"hello", "subscribe", "unsubscribe", "mutate", "ping", "presence"}


@pytest.fixture(autouse=True)
async def _hub(settings):
    settings.SYNCAPP = NO_RATE_LIMITS
    yield
    await close_hub()


@pytest.fixture
def world(db):
    """A board with one card: its stream has an epoch, and there is an object to edit."""
    board = Board.objects.create(name="fuzz")
    card = Card.objects.create(board=board, title="first")
    epoch = oplog.head_of(f"board:{board.pk}").epoch
    return {"board": str(board.pk), "pks": [str(card.pk), str(uuid.uuid4())], "epoch": epoch}


def client_frames(world: dict[str, Any]) -> SearchStrategy[dict[str, Any]]:
    board_stream = f"board:{world['board']}"
    stream = st.just(board_stream) | st.just("public:fuzz") | streams
    position = st.fixed_dictionaries(
        {
            "epoch": st.sampled_from([world["epoch"], "abc", ""]) | st.text(max_size=70),
            "seq": st.integers(min_value=-2, max_value=2**64) | st.sampled_from([0, 1, 2**63 - 1]),
        }
    )
    optional_ref = {"ref": refs}
    mutation = mutations(world["board"], world["pks"])
    valid = st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.just("hello"),
                "client_id": client_ids,
                "protocol": st.just(1) | st.integers(),
            },
            optional=optional_ref,
        ),
        st.fixed_dictionaries(
            {"type": st.just("subscribe"), "stream": stream},
            optional={"after": position | json_values, **optional_ref},
        ),
        st.fixed_dictionaries(
            {"type": st.just("unsubscribe"), "stream": stream}, optional=optional_ref
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("mutate"),
                "mutations": st.lists(mutation | broken(mutation), max_size=4),
            },
            optional=optional_ref,
        ),
        st.fixed_dictionaries(
            {"type": st.just("ping")},
            optional={
                "ts": st.integers() | st.floats(allow_nan=False, allow_infinity=False),
                **optional_ref,
            },
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("presence"),
                "stream": stream,
                "state": st.dictionaries(st.text(max_size=8), json_values, max_size=6),
            },
            optional=optional_ref,
        ),
    )
    return valid | broken(valid)


def huge_frames(world: dict[str, Any]) -> SearchStrategy[tuple[str, Any]]:
    """Frames at and past the limits: a batch over MAX_BATCH, a presence state over
    PRESENCE_MAX_BYTES, and text over MAX_FRAME_BYTES."""
    item = {
        "id": "",
        "stream": f"board:{world['board']}",
        "model": "testapp.card",
        "pk": "",
        "op": "create",
        "fields": {"board": world["board"], "title": "batch"},
    }

    def batch(size: int) -> dict[str, Any]:
        return {
            "type": "mutate",
            "mutations": [
                {**item, "id": str(uuid.uuid4()), "pk": str(uuid.uuid4())} for _ in range(size)
            ],
        }

    return st.sampled_from(
        [
            ("frame", batch(101)),
            ("frame", {"type": "presence", "stream": "public:fuzz", "state": {"a": "x" * 2000}}),
            ("text", '{"type":"ping","ref":"' + "x" * (conf.MAX_FRAME_BYTES + 1) + '"}'),
            ("text", '{"type":"ping","ts":1,"pad":"' + "é" * (conf.MAX_FRAME_BYTES // 2) + '"}'),
            ("text", "[" * 200_000 + "]" * 200_000),
            ("text", '{"type":"ping","ref":"' + "x" * 60 + '"}'),
        ]
    )


def items(world: dict[str, Any]) -> SearchStrategy[list[tuple[str, Any]]]:
    one = st.one_of(
        client_frames(world).map(lambda frame: ("frame", frame)),
        st.text(max_size=60).map(lambda text: ("text", text)),
        st.binary(max_size=60).map(lambda data: ("bytes", data)),
        st.sampled_from(
            ['{"type":"ping","ref":"\ud800"}', "\udfff", '{"type":"ping","ts":NaN}']
        ).map(lambda text: ("text", text)),
        huge_frames(world),
    )
    return st.lists(one, min_size=1, max_size=6)


def oracle(text: str) -> set[str] | None:
    """The codes that may refuse ``text`` judged without syncapp's decoder: None when it
    is a frame of a known type, whose answer then depends on what it asks."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
        text.encode()
    except RecursionError:
        # Too deep for Python's parser; syncapp's may refuse the shape before the depth.
        if not text.lstrip().startswith("{"):
            return {"invalid", "parse_error"}
        return {"too_deep", "invalid", "unknown_type", "parse_error"}
    except ValueError:  # not JSON, NaN, or a lone surrogate (UnicodeEncodeError)
        # syncapp's parser may meet a value of the wrong shape before the syntax error
        # (`0:` is a number, then junk).
        return {"parse_error", "invalid", "unknown_type"}
    if not isinstance(value, dict):
        return {"invalid"}
    if not isinstance(value.get("type"), str) or value["type"] not in CLIENT_TYPES:
        return {"unknown_type", "invalid"}
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def predicted(text: str) -> str | None:
    """The code syncapp's decoder refuses ``text`` with, or None."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return "parse_error"
    try:
        decode(text)
    except FrameError as exc:
        return exc.error_code
    return None


async def raw(client: Client, message: dict[str, Any]) -> None:
    """Send a frame as the ASGI server would, empty ones too (send_to refuses those)."""
    await client.communicator.send_input({"type": "websocket.receive", **message})


class Session:
    """One connection under fuzz: checks every frame it receives."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.applied: set[str] = set()

    def check(self, frame: dict[str, Any]) -> None:
        assert frame["type"] in SERVER_FRAME_TYPES, frame
        event(f"frame {frame['type']} {frame.get('code', '')}".strip())
        if frame["type"] == "error":
            assert frame["code"] in WS_ERROR_CODES, frame
            assert isinstance(frame["message"], str)
        if frame["type"] == "ack":
            for result in frame["results"]:
                event(f"result {result['status']}")
                assert result["status"] in RESULT_STATUSES, result
                if result["status"] == "rejected":
                    assert result["error"]["code"] != "internal_error", result
                if result["status"] in ("applied", "conflict") and result["seq"] is not None:
                    self.applied.add(result["id"])

    async def answers(self, marker: str) -> list[dict[str, Any]]:
        """What came back up to the ``pong`` of the ping ``marker``: the answers to the
        frame sent before it (the frames the server sends on its own are left out)."""
        found: list[dict[str, Any]] = []
        while True:
            frame = await self.client.receive(timeout=30)
            self.check(frame)
            if frame["type"] == "pong" and frame.get("ref") == marker:
                return found
            if frame["type"] not in UNPROMPTED:
                found.append(frame)


def check_answer(frame: dict[str, Any], answers: list[dict[str, Any]]) -> None:
    """The answer a frame that decodes gets: what its type promises, or a typed error."""
    kind = frame["type"]
    codes = [a["code"] for a in answers if a["type"] == "error"]
    assert not DECODE_CODES & set(codes), (frame, answers)
    if kind == "subscribe":
        assert len(answers) <= 1, answers
        assert set(codes) <= {"permission_denied", "not_authenticated", "too_many_subscriptions"}
    elif kind == "presence":
        assert len(answers) <= 1, answers
        assert set(codes) <= {"not_subscribed", "too_large"}
    else:
        assert len(answers) == 1, (frame, answers)
        [answer] = answers
        if kind == "ping":
            assert (answer["type"], answer["ts"]) == ("pong", frame.get("ts")), answer
        elif kind == "hello":
            assert (answer["type"], answer["code"]) == ("error", "already_hello")
        elif kind == "unsubscribe":
            assert answer["type"] == "unsubscribed" or answer["code"] == "not_subscribed"
        elif answer["type"] == "ack":
            sent = [m["id"] for m in frame["mutations"]]
            assert [r["id"] for r in answer["results"]] == sent
        else:
            assert (answer["type"], answer["code"]) == ("error", "batch_too_large"), answer
            assert len(frame["mutations"]) > conf.MAX_BATCH
    ref = frame.get("ref")
    if ref is not None:
        assert all(a.get("ref") == ref for a in answers), (frame, answers)


async def fuzz_connection(user: Any, sent: list[tuple[str, Any]]) -> None:
    client = await Client(user).connect()
    try:
        applied = await fuzz_frames(client, sent)
    finally:
        await client.close()
    # Whatever came before, the op log holds every mutation the server said it applied.
    found = await adb(
        lambda: set(
            Op.objects.filter(mutation_id__in=applied)
            .values_list("mutation_id", flat=True)
            .distinct()
        )
    )()
    assert {str(i) for i in found} == applied


async def fuzz_frames(client: Client, sent: list[tuple[str, Any]]) -> set[str]:
    """Send ``sent`` one by one, each followed by a ping; the ids of the mutations the
    server said it applied."""
    session = Session(client)
    for n, (kind, payload) in enumerate(sent):
        if kind == "bytes":
            await raw(client, {"bytes": payload})
            expected: str | None = "binary_unsupported"
            allowed = {"binary_unsupported"}
        else:
            text = payload if kind == "text" else json.dumps(payload)
            if len(text.encode("utf-8", "surrogatepass")) > conf.MAX_FRAME_BYTES:
                await raw(client, {"text": text})
                assert await client.closed(timeout=30) == 1009
                break
            expected = predicted(text)
            allowed = oracle(text) or {"invalid", "too_deep"}
            await raw(client, {"text": text})
        marker = f"marker-{n}"
        await client.send({"type": "ping", "ref": marker})
        answers = await session.answers(marker)
        if expected is not None:
            assert expected in allowed, (payload, expected)
            assert len(answers) == 1, (payload, answers)
            assert (answers[0]["type"], answers[0]["code"]) == ("error", expected), answers
        else:
            assert oracle(text) is None, payload
            check_answer(json.loads(text), answers)
    return session.applied


@given(data=st.data())
@FUZZ
async def test_fuzzed_frames_get_an_answer_or_a_typed_error(user, world, data):
    sent = data.draw(items(world), label="frames")
    who = data.draw(st.sampled_from([user, AnonymousUser()]), label="user")
    await fuzz_connection(who, sent)


@given(data=st.data())
@FUZZ
async def test_fuzzed_mutations_lose_nothing(user, world, data):
    """Batches of valid and broken mutations: after them, a valid one still applies, and
    every applied one is in the log (also the ones applied before the bad ones)."""
    mutation = mutations(world["board"], world["pks"])
    batches = data.draw(
        st.lists(st.lists(mutation | broken(mutation), min_size=1, max_size=5), max_size=4),
        label="batches",
    )
    kept = {
        "id": str(uuid.uuid4()),
        "stream": f"board:{world['board']}",
        "model": "testapp.card",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"board": world["board"], "title": "kept"},
    }
    sent = [("frame", {"type": "mutate", "mutations": [kept]})]
    sent += [("frame", {"type": "mutate", "mutations": batch}) for batch in batches]
    sent += [("frame", {"type": "mutate", "mutations": [{**kept, "id": str(uuid.uuid4())}]})]
    await fuzz_connection(user, sent)
    assert await adb(Op.objects.filter(mutation_id=kept["id"]).exists)()


first_frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("hello"), "client_id": client_ids, "protocol": st.integers()},
        optional={"ref": refs},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(sorted(CLIENT_TYPES - {"hello"}))}),
)


@given(frame=first_frames | broken(first_frames))
@FUZZ
async def test_fuzzed_first_frames(user, frame):
    """Before ``hello``: a valid hello is welcomed, one of another protocol is refused and
    closed with 4400, anything else is refused; after a refusal, hello still works."""
    client = await Client(user).connect(hello=False)
    try:
        await first_frame(client, frame)
    finally:
        await client.close()  # also after a close by the server: frees the user's slot


async def first_frame(client: Client, frame: dict[str, Any]) -> None:
    text = json.dumps(frame)
    await client.send_text(text)
    reply = await client.receive(timeout=30)
    code = predicted(text)
    if code is not None:
        assert (reply["type"], reply["code"]) == ("error", code)
    elif frame["type"] != "hello":
        assert (reply["type"], reply["code"]) == ("error", "hello_required")
    elif frame["protocol"] != 1:
        assert (reply["type"], reply["code"]) == ("error", "protocol_unsupported")
        assert await client.closed(timeout=30) == 4400
        return
    else:
        assert reply["type"] == "welcome"
        return
    await client.send({"type": "hello", "client_id": "tab-1", "protocol": 1})
    assert (await client.receive(timeout=30))["type"] == "welcome"
