"""Decoding server frames: every type, lenient about additions, strict about shapes."""

from __future__ import annotations

import json
import uuid

import pytest

from syncapp.client.frames import (
    AckFrame,
    ErrorFrame,
    MalformedFrame,
    OpsFrame,
    ResetFrame,
    WelcomeFrame,
    decode,
    encode,
)
from syncapp.protocol import MutateFrame, Mutation, Position, SubscribeFrame

OP = {
    "stream": "s",
    "epoch": "e",
    "seq": 3,
    "model": "todos.todo",
    "pk": "a",
    "op": "update",
    "fields": {"title": "x"},
    "version": 2,
    "mutation": None,
    "ts": "2026-11-24T15:04:05Z",
}


def test_decode_welcome():
    frame = decode(b'{"type":"welcome","protocol":1,"heartbeat_ms":25000,"max_frame_bytes":9}')
    assert frame == WelcomeFrame(protocol=1, heartbeat_ms=25000, max_frame_bytes=9)


def test_decode_welcome_with_the_connection_id_and_the_servers_time():
    frame = decode(
        b'{"type":"welcome","protocol":1,"heartbeat_ms":25000,"max_frame_bytes":9,'
        b'"max_batch":100,"connection_id":"5f2c9a1e0b7d4c3a","time":"2026-11-24T21:05:00Z"}'
    )
    assert isinstance(frame, WelcomeFrame)
    assert (frame.connection_id, frame.time) == ("5f2c9a1e0b7d4c3a", "2026-11-24T21:05:00Z")


def test_decode_ops():
    frame = decode(json.dumps({"type": "ops", "stream": "s", "ops": [OP]}))
    assert isinstance(frame, OpsFrame)
    assert frame.ops[0].seq == 3
    assert frame.ops[0].fields == {"title": "x"}


def test_decode_ack_with_results():
    mutation_id = str(uuid.uuid4())
    data = {
        "type": "ack",
        "ref": 7,
        "results": [
            {
                "id": mutation_id,
                "status": "rejected",
                "seq": None,
                "version": None,
                "object": None,
                "error": {"code": "in_progress", "message": "m", "retry": True},
            }
        ],
    }
    frame = decode(json.dumps(data))
    assert isinstance(frame, AckFrame)
    assert frame.ref == 7
    assert frame.results[0].id == uuid.UUID(mutation_id)
    assert frame.results[0].error.retry is True


def test_decode_error_with_retry_after():
    frame = decode(b'{"type":"error","code":"rate_limited","message":"m","retry_after_ms":250}')
    assert frame == ErrorFrame(code="rate_limited", message="m", retry_after_ms=250)


def test_decode_ignores_unknown_keys():
    frame = decode(b'{"type":"reset","stream":"s","epoch":"e","reason":"trimmed","extra":1}')
    assert frame == ResetFrame(stream="s", epoch="e", reason="trimmed")


def test_decode_skips_unknown_types():
    assert decode(b'{"type":"something_new","x":1}') is None


@pytest.mark.parametrize(
    "data",
    [b'{"type":"ops","stream":"s"}', b'{"type":"welcome","protocol":"1"}', b"[1]", b"nope"],
)
def test_decode_malformed_frame_raises(data):
    with pytest.raises(MalformedFrame):
        decode(data)


def test_encode_uses_the_protocol_structs():
    frame = SubscribeFrame(stream="s", after=Position(epoch="e", seq=4), ref=1)
    assert json.loads(encode(frame)) == {
        "type": "subscribe",
        "stream": "s",
        "after": {"epoch": "e", "seq": 4},
        "ref": 1,
    }


def test_encode_mutate_keeps_the_id():
    mutation = Mutation(id=uuid.uuid4(), stream="s", model="a.b", pk=1, op="delete")
    data = json.loads(encode(MutateFrame(mutations=[mutation], ref=2)))
    assert data["mutations"][0]["id"] == str(mutation.id)
