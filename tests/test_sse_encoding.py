"""The SSE catch-up's row reader and page encoder: ``oplog.read_rows``' own statements
return what the ORM's query does, and the pages are the same text as django-eventstream
writes through ``OpLogStorage``, byte for byte, whichever of the encoder's paths a page
takes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connections

from syncapp import oplog, sse
from syncapp.exceptions import ResetRequired
from syncapp.models import Op, Stream
from syncapp.sse import channel_for
from tests.helpers import eventstream_text

pytestmark = pytest.mark.django_db

STREAM = "public:encoding"
MOMENT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def board_op(seq: int, **changes: Any) -> dict[str, Any]:
    """An op as the usual write makes it: a UUID-keyed model, a mutation id, flat fields."""
    return {
        "seq": seq,
        "model": "testapp.board",
        "object_pk": str(uuid.uuid4()),
        "kind": "create",
        "fields": {"name": f"board {seq}", "public": True, "tags": ["a", "b"]},
        "version": 1,
        "mutation_id": uuid.uuid4(),
        "created_at": MOMENT,
        **changes,
    }


def write(ops: list[dict[str, Any]]) -> Stream:
    stream = Stream.objects.create(name=STREAM, head=len(ops), oldest_seq=1)
    Op.objects.bulk_create(Op(stream=stream, client_id="c", source="ws", **op) for op in ops)
    return stream


def expected_text(after: int = 0) -> str:
    return eventstream_text(STREAM, after)


def encoder(stream: Stream) -> sse.PageEncoder:
    timezone = connections[oplog.db_alias()].timezone
    return sse.PageEncoder(channel_for(STREAM), STREAM, stream.epoch, timezone)


def page_text(stream: Stream, after: int = 0, limit: int = 1000) -> str:
    rows = oplog.read_rows(STREAM, epoch=stream.epoch, after=after, limit=limit).rows
    return encoder(stream).encode(rows).decode()


FORMS = {
    # Every op of the usual form: one f-string each, pks and mutation ids as they are.
    "usual": lambda seq: board_op(seq),
    "no mutation id": lambda seq: board_op(seq, mutation_id=None if seq == 3 else uuid.uuid4()),
    "upper-case key": lambda seq: board_op(
        seq, object_pk=str(uuid.uuid4()).upper() if seq == 2 else str(uuid.uuid4())
    ),
    "key of a model without UUIDs": lambda seq: (
        board_op(seq, model="testapp.doc" if seq == 4 else "testapp.board", object_pk=str(seq))
        if seq == 4
        else board_op(seq)
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
    "timestamps of every op": lambda seq: board_op(
        seq, created_at=MOMENT.replace(microsecond=0) + timedelta(seconds=seq)
    ),
}


@pytest.mark.parametrize("form", FORMS)
def test_a_page_of_each_form_is_what_django_eventstream_would_send(form):
    stream = write([FORMS[form](seq) for seq in range(1, 11)])
    assert page_text(stream) == expected_text()
    assert page_text(stream, after=4, limit=3) == "".join(
        event + "\n\n" for event in expected_text(4).split("\n\n")[:3]
    )


def through_the_orm(monkeypatch: Any) -> None:
    """``oplog.read_rows`` as on a database it has no statements of its own for."""
    monkeypatch.setattr(oplog, "_row_statements", lambda alias: None)


def test_the_readers_own_statements_return_what_the_orms_query_does(monkeypatch):
    stream = write([board_op(seq) for seq in range(1, 21)])
    pages = [(0, 5), (5, 100), (19, 1)]
    ours = [oplog.read_rows(STREAM, epoch=stream.epoch, after=a, limit=n) for a, n in pages]
    through_the_orm(monkeypatch)
    theirs = [oplog.read_rows(STREAM, epoch=stream.epoch, after=a, limit=n) for a, n in pages]
    assert ours == theirs
    assert [len(page.rows) for page in ours] == [5, 15, 1]


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


def test_a_full_timestamp_cache_is_emptied_before_a_page_not_during_it():
    stream = write(
        [board_op(seq, created_at=MOMENT + timedelta(seconds=seq)) for seq in range(1, 11)]
    )
    page = encoder(stream)
    page._times.update((f"stale {i}", "") for i in range(9_995))
    rows = oplog.read_rows(STREAM, epoch=stream.epoch, after=0, limit=100).rows
    assert page.encode(rows).decode() == expected_text()
    assert len(page._times) == 10


@pytest.mark.parametrize(
    ("values", "shaped"),
    [
        ([str(uuid.uuid4()) for _ in range(3)], True),
        ([], True),
        ([str(uuid.uuid4()), str(uuid.uuid4()).upper()], False),
        ([str(uuid.uuid4()), None], False),
        ([str(uuid.uuid4())[:-1] + "é"], False),
        ([str(uuid.uuid4()) + "\n" + str(uuid.uuid4())], False),  # two lines in one value
        ([uuid.uuid4().hex], False),
    ],
)
def test_uuid_shapes_are_checked_exactly(values, shaped):
    assert sse._all_shaped(values, sse._UUID_SHAPE) is shaped
