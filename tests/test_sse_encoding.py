"""The SSE catch-up's row reader and page encoder: ``oplog.read_rows``' own statements
return what the ORM's query does, each op's stored text is its encoding, and the pages are
the same text as django-eventstream writes through ``OpLogStorage``, byte for byte."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import msgspec
import pytest
from django.db import connection, transaction

from syncapp import context, encoding, oplog, sse
from syncapp.exceptions import ResetRequired
from syncapp.models import Op, Stream
from syncapp.oplog import OpDraft
from syncapp.sse import channel_for
from tests.helpers import eventstream_text

pytestmark = pytest.mark.django_db

STREAM = "public:encoding"


def board_op(seq: int, **changes: Any) -> dict[str, Any]:
    """An op as the usual write makes it: a UUID-keyed model, a mutation id, flat fields."""
    return {
        "model": "testapp.board",
        "object_pk": str(uuid.uuid4()),
        "kind": "create",
        "fields": {"name": f"board {seq}", "public": True, "tags": ["a", "b"]},
        "version": 1,
        "mutation_id": uuid.uuid4(),
        **changes,
    }


def write(ops: list[dict[str, Any]]) -> Stream:
    """``ops`` appended to STREAM, each in its own transaction under its mutation id."""
    for op in ops:
        mutation_id = op.pop("mutation_id")
        attribution = context.Attribution(client_id="c", mutation_id=mutation_id, source="ws")
        with transaction.atomic():
            oplog.append([OpDraft(STREAM, attribution=attribution, **op)])
    return oplog.head_of(STREAM)


def page_text(stream: Stream, after: int = 0, limit: int = 1000) -> str:
    page = oplog.read_rows(STREAM, epoch=stream.epoch, after=after, limit=limit)
    return sse.PageEncoder(channel_for(STREAM), stream.epoch).encode(page).decode()


FORMS = {
    "usual": lambda seq: board_op(seq),
    "no mutation id": lambda seq: board_op(seq, mutation_id=None if seq == 3 else uuid.uuid4()),
    "upper-case key": lambda seq: board_op(
        seq, object_pk=str(uuid.uuid4()).upper() if seq == 2 else str(uuid.uuid4())
    ),
    "key of a model without UUIDs": lambda seq: (
        board_op(seq, model="testapp.doc", object_pk=str(seq)) if seq == 4 else board_op(seq)
    ),
    "unknown model": lambda seq: (
        board_op(seq, model="nope.model", object_pk='quo"te') if seq == 5 else board_op(seq)
    ),
    "empty and brace-like fields": lambda seq: board_op(
        seq,
        fields=[{}, {"s": "},{"}, {"s": '},{"x'}, {"t": "{}"}, {"u": "\n"}][seq % 5],
    ),
    "a nested object": lambda seq: board_op(
        seq, fields={"z": 1, "a": {"y": [1, {"c": 2, "b": 3}], "x": None}} if seq == 6 else {}
    ),
    "keys that sort by case and accent": lambda seq: board_op(
        seq, fields={"é": 1, "e": 2, "E": 3, "b": 1.5, "B": "x"}
    ),
    "text that is not ASCII": lambda seq: board_op(seq, fields={"name": "naïve ☃ \u2028 𝄞"}),
}


@pytest.mark.parametrize("form", FORMS)
def test_a_page_of_each_form_is_what_django_eventstream_would_send(form):
    stream = write([FORMS[form](seq) for seq in range(1, 11)])
    assert page_text(stream) == eventstream_text(STREAM, 0)
    assert page_text(stream, after=4, limit=3) == "".join(
        event + "\n\n" for event in eventstream_text(STREAM, 4).split("\n\n")[:3]
    )


@pytest.mark.parametrize("form", FORMS)
def test_each_stored_text_is_the_encoding_of_its_op(form):
    """The text encoded when the op was written encodes the op the database gives back
    (the same value; PostgreSQL's jsonb may reorder the keys of nested objects, which
    the stored text keeps as they were written and sent live)."""
    write([FORMS[form](seq) for seq in range(1, 11)])
    for op in Op.objects.filter(stream__name=STREAM).select_related("stream"):
        again = encoding.encode_op(op, op.stream.name, op.stream.epoch)
        assert msgspec.json.decode(op.encoded) == msgspec.json.decode(again)
        if form != "a nested object" or connection.vendor == "sqlite":
            assert op.encoded == again


def through_the_orm(monkeypatch: Any) -> None:
    """``oplog.read_rows`` as on a database it has no statements of its own for."""
    monkeypatch.setattr(oplog, "_row_statements", lambda alias: None)


def as_text(page: oplog.RowPage) -> oplog.RowPage:
    """``page`` with each op's JSON as text (SQLite's own statement returns its bytes)."""
    rows = [(t.decode() if isinstance(t, bytes) else t,) for (t,) in page.rows]
    return dataclasses.replace(page, rows=rows)


def test_the_readers_own_statements_return_what_the_orms_query_does(monkeypatch):
    stream = write([board_op(seq) for seq in range(1, 21)] + [FORMS["text that is not ASCII"](21)])
    pages = [(0, 5), (5, 100), (20, 1)]
    ours = [oplog.read_rows(STREAM, epoch=stream.epoch, after=a, limit=n) for a, n in pages]
    through_the_orm(monkeypatch)
    theirs = [oplog.read_rows(STREAM, epoch=stream.epoch, after=a, limit=n) for a, n in pages]
    assert [as_text(page) for page in ours] == theirs
    assert [(page.first, len(page.rows)) for page in ours] == [(1, 5), (6, 16), (21, 1)]
    texts = as_text(ours[1]).rows
    assert all(f'"seq":{seq},' in text for seq, (text,) in enumerate(texts, start=6))
    # SQLite hands over the stored bytes, undecoded; PostgreSQL the text.
    kind = bytes if connection.vendor == "sqlite" else str
    assert {type(text) for page in ours for (text,) in page.rows} == {kind}
    assert {type(text) for page in theirs for (text,) in page.rows} == {str}


@pytest.mark.parametrize("orm", [False, True], ids=["own statements", "orm"])
def test_pages_as_bytes_or_text_are_the_same_sse_text(monkeypatch, orm):
    """The encoder frames SQLite's bytes and the text of the others alike, text that is
    not ASCII included."""
    if orm:
        through_the_orm(monkeypatch)
    stream = write([FORMS["text that is not ASCII"](seq) for seq in range(1, 6)])
    page = oplog.read_rows(STREAM, epoch=stream.epoch, after=0, limit=10)
    encoder = sse.PageEncoder(channel_for(STREAM), stream.epoch)
    text = encoder.encode(page)
    assert text == encoder.encode(as_text(page))
    assert text.decode() == eventstream_text(STREAM, 0)
    assert "naïve ☃".encode() in text


@pytest.mark.parametrize("orm", [False, True], ids=["own statements", "orm"])
def test_the_reader_refuses_positions_either_way(monkeypatch, orm):
    if orm:
        through_the_orm(monkeypatch)
    stream = write([board_op(seq) for seq in range(1, 11)])
    with pytest.raises(ResetRequired) as other_epoch:
        oplog.read_rows(STREAM, epoch="another", after=0, limit=5)
    assert other_epoch.value.reason == "epoch_changed"
    Op.objects.filter(seq__lte=3).delete()
    Stream.objects.filter(pk=stream.pk).update(oldest_seq=4)
    with pytest.raises(ResetRequired) as trimmed:
        oplog.read_rows(STREAM, epoch=stream.epoch, after=1, limit=5)
    assert trimmed.value.reason == "trimmed"
    with pytest.raises(ResetRequired) as ahead:
        oplog.read_rows(STREAM, epoch=stream.epoch, after=11, limit=5)  # no rows
    assert ahead.value.reason == "ahead_of_head"
    assert oplog.read_rows(STREAM, epoch=stream.epoch, after=10, limit=5).rows == []


@pytest.mark.parametrize("orm", [False, True], ids=["own statements", "orm"])
def test_a_page_with_a_hole_is_refused(monkeypatch, orm):
    """The reader takes seqs from the position: a missing row anywhere in the page (not
    only at its start) is caught by its first and last seq."""
    if orm:
        through_the_orm(monkeypatch)
    stream = write([board_op(seq) for seq in range(1, 11)])
    Op.objects.filter(seq=5).delete()
    with pytest.raises(ResetRequired) as hole:
        oplog.read_rows(STREAM, epoch=stream.epoch, after=0, limit=10)
    assert hole.value.reason == "trimmed"
    assert len(oplog.read_rows(STREAM, epoch=stream.epoch, after=5, limit=10).rows) == 5


def test_an_op_row_made_by_hand_is_refused_with_a_clear_error():
    stream = write([board_op(seq) for seq in range(1, 3)])
    Op.objects.filter(seq=2).update(encoded="")
    with pytest.raises(RuntimeError, match=r"written by syncapp\.oplog\.append"):
        oplog.read_rows(STREAM, epoch=stream.epoch, after=0, limit=10)
