"""Reading history, positions that cannot resume, snapshots, epochs."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from syncapp import context, encoding, oplog
from syncapp.exceptions import InvalidInput, ResetRequired
from syncapp.models import Op, Stream
from tests.testapp.models import Board, Card, Doc

pytestmark = pytest.mark.django_db


@pytest.fixture
def stream_with_ops(board):
    for i in range(5):
        Card.objects.create(board=board, title=str(i))
    return oplog.ensure_stream(f"board:{board.pk}")


def test_read_returns_ops_after_the_position(stream_with_ops):
    page = oplog.read(stream_with_ops.name, epoch=stream_with_ops.epoch, after=2, limit=10)
    assert [op.seq for op in page.ops] == [3, 4, 5]
    assert (page.epoch, page.head) == (stream_with_ops.epoch, 5)


def test_read_pages_with_limit(stream_with_ops):
    page = oplog.read(stream_with_ops.name, epoch=None, after=0, limit=2)
    assert [op.seq for op in page.ops] == [1, 2]
    assert page.head == 5


def test_read_of_a_new_stream_is_empty_and_writes_nothing():
    page = oplog.read("fresh", epoch=None, after=0, limit=10)
    assert (page.ops, page.head) == ([], 0)
    assert not Stream.objects.filter(name="fresh").exists()


def test_a_new_streams_epoch_survives_its_first_write(board):
    stream = f"board:{board.pk}"
    before = oplog.snapshot(stream)
    Card.objects.create(board=board, title="first")
    page = oplog.read(stream, epoch=before.epoch, after=before.seq, limit=10)
    assert [op.seq for op in page.ops] == [1]


@pytest.mark.django_db(transaction=True)
def test_snapshot_of_a_new_stream_writes_nothing():
    snap = oplog.snapshot("never-written")
    assert (snap.seq, snap.objects, snap.epoch) == (0, [], oplog.genesis_epoch("never-written"))
    assert not Stream.objects.filter(name="never-written").exists()


def test_read_from_another_epoch_resets(stream_with_ops):
    with pytest.raises(ResetRequired) as info:
        oplog.read(stream_with_ops.name, epoch="other", after=2, limit=10)
    assert info.value.as_frame() == {
        "type": "reset",
        "stream": stream_with_ops.name,
        "epoch": stream_with_ops.epoch,
        "reason": "epoch_changed",
    }


def test_read_ahead_of_the_head_resets(stream_with_ops):
    with pytest.raises(ResetRequired) as info:
        oplog.read(stream_with_ops.name, epoch=stream_with_ops.epoch, after=6, limit=10)
    assert info.value.reason == "ahead_of_head"


def test_read_behind_the_retained_floor_resets(stream_with_ops):
    Stream.objects.filter(pk=stream_with_ops.pk).update(oldest_seq=4)
    with pytest.raises(ResetRequired) as info:
        oplog.read(stream_with_ops.name, epoch=stream_with_ops.epoch, after=2, limit=10)
    assert info.value.reason == "trimmed"
    page = oplog.read(stream_with_ops.name, epoch=stream_with_ops.epoch, after=3, limit=10)
    assert [op.seq for op in page.ops] == [4, 5]


def test_read_negative_position_is_invalid(stream_with_ops):
    with pytest.raises(InvalidInput):
        oplog.read(stream_with_ops.name, epoch=None, after=-1, limit=10)


@pytest.mark.parametrize("name", ["", "a b", "x" * 201, "semi;colon", "slash/", "ünï"])
def test_invalid_stream_names_are_refused(name):
    with pytest.raises(InvalidInput) as info:
        oplog.validate_stream_name(name)
    assert info.value.error_code == "invalid_stream"


def test_snapshot_holds_every_object_of_the_stream_at_its_seq(board):
    a = Card.objects.create(board=board, title="a")
    b = Card.objects.create(board=board, title="b")
    Card.objects.create(board=Board.objects.create(name="other"), title="elsewhere")
    b.delete()
    a.title = "a2"
    a.save()
    snap = oplog.snapshot(f"board:{board.pk}")
    assert snap.seq == 4
    assert [(o["pk"], o["version"], o["fields"]["title"]) for o in snap.objects] == [
        (str(a.pk), 2, "a2")
    ]


def test_snapshot_of_integer_keys_and_excluded_fields():
    doc = Doc.objects.create(text="t", secret="s")
    [obj] = oplog.snapshot("docs").objects
    assert obj == {"model": "testapp.doc", "pk": doc.pk, "version": 1, "fields": {"text": "t"}}


def test_snapshot_inside_a_transaction(board):
    Card.objects.create(board=board, title="a")
    with transaction.atomic():
        snap = oplog.snapshot(f"board:{board.pk}")
    assert (snap.seq, len(snap.objects)) == (1, 1)


def test_reset_starts_a_new_epoch(stream_with_ops):
    fresh = oplog.reset(stream_with_ops.name)
    assert fresh.epoch != stream_with_ops.epoch
    assert (fresh.head, fresh.oldest_seq) == (0, 1)
    with pytest.raises(ResetRequired):
        oplog.read(stream_with_ops.name, epoch=stream_with_ops.epoch, after=5, limit=10)


@pytest.mark.django_db(transaction=True)
def test_append_outside_a_transaction_is_refused():
    draft = oplog.OpDraft("s", "testapp.doc", "1", "create", {}, 1)
    with pytest.raises(RuntimeError, match=r"inside transaction\.atomic"):
        oplog.append([draft])
    assert not Stream.objects.filter(name="s").exists()


def test_encoded_op_has_the_protocol_shape(board):
    card = Card.objects.create(board=board, title="a")
    page = oplog.read(f"board:{board.pk}", epoch=None, after=0, limit=1)
    data = json.loads(encoding.encode_op(page.ops[0], page.stream, page.epoch))
    assert list(data) == [
        "stream",
        "epoch",
        "seq",
        "model",
        "pk",
        "op",
        "fields",
        "version",
        "mutation",
        "ts",
    ]
    assert (data["pk"], data["op"], data["mutation"]) == (str(card.pk), "create", None)
    assert data["ts"].endswith("Z")


def test_taking_seqs_is_one_statement_and_reads_the_stream_as_the_orm_does(stream_with_ops):
    """``UPDATE ... RETURNING`` on PostgreSQL and SQLite 3.35+; the row it returns is
    converted as the ORM converts it (SQLite returns datetimes as text)."""
    before = Stream.objects.get(name=stream_with_ops.name)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        taken = oplog._take_seqs(before.name, 3, "default")
    statements = [q["sql"] for q in queries.captured_queries]
    assert [sql.split()[0] for sql in statements if "syncapp_stream" in sql] == ["UPDATE"]
    assert (taken.pk, taken.name, taken.epoch, taken.head, taken.oldest_seq) == (
        before.pk,
        before.name,
        before.epoch,
        before.head + 3,
        before.oldest_seq,
    )
    assert taken.created_at == before.created_at
    assert Stream.objects.get(pk=before.pk).head == before.head + 3


def test_the_first_write_to_a_stream_creates_its_row():
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        taken = oplog._take_seqs("fresh", 2, "default")
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    assert statements == ["UPDATE", "INSERT", "UPDATE"]
    assert (taken.name, taken.head, taken.epoch) == ("fresh", 2, oplog.genesis_epoch("fresh"))
    assert Stream.objects.get(name="fresh").head == 2


def test_appended_ops_that_differ_in_every_column_hold_what_the_log_stored(user):
    """The set-wise insert on PostgreSQL sends a column that is the same for every op as
    one value and the others as arrays: ops that differ in every column that can (and
    share the rest) come back as stored, column by column, and know their stream without
    a query. (Ops alike in everything but their pk: tests/test_mutation_batch.py,
    ``test_ops_appended_together_are_stored_as_one_at_a_time``.)"""
    count = 4
    drafts = [
        oplog.OpDraft(
            "appended",
            "testapp.doc" if i % 2 else "testapp.board",
            str(i) if i % 2 else str(uuid.uuid4()),
            "update" if i % 2 else "create",
            {"title": "same"},
            i + 1,
            context.Attribution(
                actor_id=user.pk if i % 2 else None,
                client_id=f"c-{i}",
                mutation_id=uuid.uuid4() if i else None,
                source="test" if i % 2 else "other",
            ),
        )
        for i in range(count)
    ]
    with transaction.atomic():
        ops = oplog.append(drafts)
    columns = [field.attname for field in Op._meta.concrete_fields]
    stored = {op.pk: op for op in Op.objects.filter(stream__name="appended")}
    assert len(stored) == count
    assert [op.seq for op in ops] == list(range(1, count + 1))
    for op, draft in zip(ops, drafts, strict=True):
        assert [getattr(op, name) for name in columns] == [
            getattr(stored[op.pk], name) for name in columns
        ]
        by = draft.attribution
        assert by is not None
        assert (op.model, op.kind, op.fields, op.version) == (
            draft.model,
            draft.kind,
            draft.fields,
            draft.version,
        )
        assert (op.actor_id, op.client_id, op.mutation_id, op.source) == (
            by.actor_id,
            by.client_id,
            by.mutation_id,
            by.source,
        )
        assert not op._state.adding
        with CaptureQueriesContext(connection) as queries:
            assert op.stream.name == "appended"
        assert queries.captured_queries == []
