"""Retention: trimming the op log, expiring idempotency records, resetting a stream."""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test.utils import override_settings
from django.utils import timezone

from syncapp import mutations, oplog, retention
from syncapp.exceptions import ResetRequired
from syncapp.models import IdempotencyRecord, Op, Stream
from tests.helpers import mutation, ops
from tests.testapp.models import Board, Doc

pytestmark = pytest.mark.django_db

NO_AGE_LIMIT = {"RETENTION_MAX_AGE": None}


def make_boards(count: int) -> list[Board]:
    """``count`` boards in the "boards" stream: seqs 1..count."""
    return [Board.objects.create(name=f"b{i}") for i in range(count)]


def make_docs(count: int) -> list[Doc]:
    return [Doc.objects.create(text=f"d{i}") for i in range(count)]


def age_ops(stream: str, *, up_to_seq: int, days: float) -> None:
    Op.objects.filter(stream__name=stream, seq__lte=up_to_seq).update(
        created_at=timezone.now() - timedelta(days=days)
    )


def seqs(stream: str) -> list[int]:
    return [op.seq for op in ops(stream)]


def stream_row(name: str) -> Stream:
    return Stream.objects.get(name=name)


def run(command: str, *args: str, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


# -- retention.trim -------------------------------------------------------------------


def test_trim_by_count_keeps_the_newest():
    make_boards(5)
    result = retention.trim("boards", max_age=None, max_ops=2)
    assert result == retention.Trimmed("boards", 4, 3)
    assert seqs("boards") == [4, 5]


def test_trim_by_count_moves_the_floor():
    make_boards(5)
    retention.trim("boards", max_age=None, max_ops=2)
    stream = stream_row("boards")
    assert (stream.oldest_seq, stream.head) == (4, 5)


def test_trim_by_count_under_the_limit_deletes_nothing():
    make_boards(3)
    result = retention.trim("boards", max_age=None, max_ops=10)
    assert result == retention.Trimmed("boards", 1, 0)
    assert seqs("boards") == [1, 2, 3]


def test_trim_by_count_zero_empties_the_log():
    make_boards(3)
    result = retention.trim("boards", max_age=None, max_ops=0)
    assert result == retention.Trimmed("boards", 4, 3)
    assert seqs("boards") == []


def test_trim_by_age_deletes_older_ops():
    make_boards(5)
    age_ops("boards", up_to_seq=3, days=2)
    result = retention.trim("boards", max_age=timedelta(days=1), max_ops=None)
    assert result == retention.Trimmed("boards", 4, 3)
    assert seqs("boards") == [4, 5]


def test_trim_by_age_keeps_younger_ops():
    make_boards(3)
    age_ops("boards", up_to_seq=3, days=0.5)
    result = retention.trim("boards", max_age=timedelta(days=1), max_ops=None)
    assert result.deleted == 0
    assert seqs("boards") == [1, 2, 3]


def test_trim_by_age_uses_the_injected_now():
    make_boards(3)
    later = timezone.now() + timedelta(days=2)
    result = retention.trim("boards", max_age=timedelta(days=1), max_ops=None, now=later)
    assert result == retention.Trimmed("boards", 4, 3)


def test_trim_by_age_and_count_uses_the_higher_floor():
    make_boards(6)
    age_ops("boards", up_to_seq=2, days=2)
    by_count = retention.trim("boards", max_age=timedelta(days=1), max_ops=3)
    assert by_count.oldest_seq == 4
    assert seqs("boards") == [4, 5, 6]


def test_trim_without_limits_deletes_nothing():
    make_boards(3)
    assert retention.trim("boards", max_age=None, max_ops=None) == retention.Trimmed("boards", 1, 0)


def test_trim_never_moves_the_floor_back():
    make_boards(5)
    retention.trim("boards", max_age=None, max_ops=2)
    result = retention.trim("boards", max_age=None, max_ops=4)
    assert result == retention.Trimmed("boards", 4, 0)


def test_trim_leaves_other_streams_alone():
    make_boards(3)
    make_docs(3)
    retention.trim("boards", max_age=None, max_ops=1)
    assert seqs("docs") == [1, 2, 3]
    assert stream_row("docs").oldest_seq == 1


def test_trim_deletes_in_batches_and_reports_progress():
    make_boards(5)
    heard: list[int] = []
    result = retention.trim("boards", max_age=None, max_ops=0, batch=2, progress=heard.append)
    assert heard == [2, 4, 5]
    assert result.deleted == 5


def test_trim_then_new_ops_continue_the_seq():
    make_boards(3)
    retention.trim("boards", max_age=None, max_ops=0)
    Board.objects.create(name="after")
    assert seqs("boards") == [4]


def test_read_behind_the_floor_requires_reset_trimmed():
    make_boards(5)
    retention.trim("boards", max_age=None, max_ops=2)
    epoch = stream_row("boards").epoch
    with pytest.raises(ResetRequired) as excinfo:
        oplog.read("boards", epoch=epoch, after=2, limit=100)
    assert excinfo.value.reason == "trimmed"
    assert excinfo.value.epoch == epoch


def test_read_from_the_start_after_trim_requires_reset():
    make_boards(5)
    retention.trim("boards", max_age=None, max_ops=2)
    with pytest.raises(ResetRequired) as excinfo:
        oplog.read("boards", epoch=None, after=0, limit=100)
    assert excinfo.value.reason == "trimmed"


def test_read_at_the_floor_returns_the_retained_ops():
    make_boards(5)
    retention.trim("boards", max_age=None, max_ops=2)
    epoch = stream_row("boards").epoch
    page = oplog.read("boards", epoch=epoch, after=3, limit=100)
    assert [op.seq for op in page.ops] == [4, 5]
    assert (page.epoch, page.head) == (epoch, 5)


def test_read_at_the_head_after_trimming_everything():
    make_boards(3)
    retention.trim("boards", max_age=None, max_ops=0)
    page = oplog.read("boards", epoch=None, after=3, limit=100)
    assert (page.head, page.ops) == (3, [])


def test_trim_keeps_the_epoch():
    make_boards(3)
    epoch = stream_row("boards").epoch
    retention.trim("boards", max_age=None, max_ops=1)
    assert stream_row("boards").epoch == epoch


def test_snapshot_after_trim_has_every_object():
    boards = make_boards(4)
    boards[0].name = "renamed"
    boards[0].save()
    retention.trim("boards", max_age=None, max_ops=1)
    snap = oplog.snapshot("boards")
    assert snap.seq == 5
    assert sorted(o["pk"] for o in snap.objects) == sorted(str(b.pk) for b in boards)
    first = next(o for o in snap.objects if o["pk"] == str(boards[0].pk))
    assert (first["fields"]["name"], first["version"]) == ("renamed", 2)


# -- manage.py syncapp_trim ------------------------------------------------------------


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_by_count_prints_progress_and_summary():
    make_boards(5)
    out, err = run("syncapp_trim", "--max-ops", "2", "--batch", "2")
    assert out.splitlines() == [
        "  boards: 2 ops deleted so far",
        "  boards: 3 ops deleted so far",
        "[1/1] boards: deleted 3, oldest retained seq now 4",
        "Trimmed 3 ops from 1 stream(s).",
    ]
    assert err == ""
    assert seqs("boards") == [4, 5]


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_trims_every_stream_by_default():
    make_boards(3)
    make_docs(2)
    out, _ = run("syncapp_trim", "--max-ops", "1")
    assert "[1/2] boards: deleted 2, oldest retained seq now 3" in out
    assert "[2/2] docs: deleted 1, oldest retained seq now 2" in out
    assert out.splitlines()[-1] == "Trimmed 3 ops from 2 stream(s)."


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_stream_option_limits_the_streams():
    make_boards(3)
    make_docs(3)
    out, _ = run("syncapp_trim", "--max-ops", "1", "--stream", "docs")
    assert seqs("docs") == [3]
    assert seqs("boards") == [1, 2, 3]
    assert out.splitlines()[-1] == "Trimmed 2 ops from 1 stream(s)."


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_stream_option_is_repeatable():
    make_boards(3)
    make_docs(3)
    Board.objects.create(name="public", public=True)
    run("syncapp_trim", "--max-ops", "1", "--stream", "docs", "--stream", "boards")
    assert (seqs("boards"), seqs("docs"), seqs("public:boards")) == ([3], [3], [1])


def test_trim_command_by_age():
    make_boards(4)
    age_ops("boards", up_to_seq=2, days=2)
    out, _ = run("syncapp_trim", "--max-age", str(24 * 3600))
    assert "[1/1] boards: deleted 2, oldest retained seq now 3" in out
    assert seqs("boards") == [3, 4]


@override_settings(SYNCAPP={"RETENTION_MAX_AGE": 3600})
def test_trim_command_uses_retention_max_age():
    make_boards(3)
    age_ops("boards", up_to_seq=1, days=1)
    run("syncapp_trim")
    assert seqs("boards") == [2, 3]


@override_settings(SYNCAPP={"RETENTION_MAX_AGE": None, "RETENTION_MAX_OPS": 2})
def test_trim_command_uses_retention_max_ops():
    make_boards(3)
    run("syncapp_trim")
    assert seqs("boards") == [2, 3]


def test_trim_command_nothing_to_trim():
    make_boards(3)
    out, _ = run("syncapp_trim")
    assert out.splitlines() == [
        "[1/1] boards: deleted 0, oldest retained seq now 1",
        "Trimmed 0 ops from 1 stream(s).",
    ]
    assert seqs("boards") == [1, 2, 3]


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_without_any_limit_says_so():
    make_boards(3)
    out, _ = run("syncapp_trim")
    assert out == "No retention limit is set; nothing to trim.\n"
    assert seqs("boards") == [1, 2, 3]


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_unknown_stream_is_an_error_before_any_trim():
    make_boards(3)
    with pytest.raises(CommandError, match="No stream 'nope'"):
        run("syncapp_trim", "--max-ops", "1", "--stream", "nope", "--stream", "boards")
    assert seqs("boards") == [1, 2, 3]


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_negative_max_ops_is_an_error():
    make_boards(3)
    with pytest.raises(CommandError, match="--max-ops"):
        run("syncapp_trim", "--max-ops", "-1")
    assert seqs("boards") == [1, 2, 3]


@override_settings(SYNCAPP=NO_AGE_LIMIT)
def test_trim_command_then_read_behind_the_floor_resets():
    make_boards(4)
    run("syncapp_trim", "--max-ops", "1")
    with pytest.raises(ResetRequired) as excinfo:
        oplog.read("boards", epoch=None, after=1, limit=10)
    assert excinfo.value.reason == "trimmed"
    assert [op.seq for op in oplog.read("boards", epoch=None, after=3, limit=10).ops] == [4]


# -- manage.py syncapp_expire_idempotency ----------------------------------------------


def apply_board(user, name: str) -> uuid.UUID:
    m = mutation(
        stream="boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": name},
    )
    result = mutations.apply_one(m, user=user, client_id=None, source="test")
    assert result.status == "applied"
    return m.id


def test_expire_idempotency_deletes_records_older_than_the_ttl(user):
    old = apply_board(user, "old")
    new = apply_board(user, "new")
    IdempotencyRecord.objects.filter(key=old).update(
        created_at=timezone.now() - timedelta(hours=25)
    )
    run("syncapp_expire_idempotency")
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == [new]


def test_expire_idempotency_prints_the_count(user):
    old = apply_board(user, "old")
    IdempotencyRecord.objects.filter(key=old).update(
        created_at=timezone.now() - timedelta(hours=25)
    )
    out, _ = run("syncapp_expire_idempotency")
    assert out == "Deleted 1 idempotency record(s) older than 1 day, 0:00:00.\n"


def test_expire_idempotency_keeps_records_within_the_ttl(user):
    key = apply_board(user, "recent")
    IdempotencyRecord.objects.filter(key=key).update(
        created_at=timezone.now() - timedelta(hours=23)
    )
    out, _ = run("syncapp_expire_idempotency")
    assert IdempotencyRecord.objects.filter(key=key).exists()
    assert out.startswith("Deleted 0 idempotency record(s)")


@override_settings(SYNCAPP={"IDEMPOTENCY_TTL": 3600})
def test_expire_idempotency_uses_the_ttl_setting(user):
    old = apply_board(user, "old")
    new = apply_board(user, "new")
    IdempotencyRecord.objects.filter(key=old).update(created_at=timezone.now() - timedelta(hours=2))
    out, _ = run("syncapp_expire_idempotency")
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == [new]
    assert "older than 1:00:00" in out


def test_expire_idempotency_leaves_the_op_log_alone(user):
    key = apply_board(user, "old")
    IdempotencyRecord.objects.filter(key=key).update(created_at=timezone.now() - timedelta(days=2))
    run("syncapp_expire_idempotency")
    assert seqs("boards") == [1]


# -- manage.py syncapp_reset_stream ----------------------------------------------------


def test_reset_stream_starts_a_new_epoch():
    make_boards(3)
    old_epoch = stream_row("boards").epoch
    out, _ = run("syncapp_reset_stream", "boards")
    stream = stream_row("boards")
    assert stream.epoch != old_epoch
    assert out == f"boards is now at epoch {stream.epoch}.\n"


def test_reset_stream_empties_the_log():
    make_boards(3)
    run("syncapp_reset_stream", "boards")
    stream = stream_row("boards")
    assert (stream.head, stream.oldest_seq) == (0, 1)
    assert seqs("boards") == []


def test_reset_stream_old_position_resets_epoch_changed():
    make_boards(3)
    old_epoch = stream_row("boards").epoch
    run("syncapp_reset_stream", "boards")
    with pytest.raises(ResetRequired) as excinfo:
        oplog.read("boards", epoch=old_epoch, after=3, limit=10)
    assert excinfo.value.reason == "epoch_changed"
    assert excinfo.value.epoch == stream_row("boards").epoch


def test_reset_stream_old_position_at_zero_also_resets():
    make_boards(3)
    old_epoch = stream_row("boards").epoch
    run("syncapp_reset_stream", "boards")
    with pytest.raises(ResetRequired) as excinfo:
        oplog.read("boards", epoch=old_epoch, after=0, limit=10)
    assert excinfo.value.reason == "epoch_changed"


def test_reset_stream_keeps_the_objects():
    boards = make_boards(3)
    run("syncapp_reset_stream", "boards")
    snap = oplog.snapshot("boards")
    assert (snap.epoch, snap.seq) == (stream_row("boards").epoch, 0)
    assert sorted(o["pk"] for o in snap.objects) == sorted(str(b.pk) for b in boards)


def test_reset_stream_new_writes_start_at_seq_one():
    board = make_boards(3)[0]
    run("syncapp_reset_stream", "boards")
    board.name = "after reset"
    board.save()
    epoch = stream_row("boards").epoch
    page = oplog.read("boards", epoch=epoch, after=0, limit=10)
    assert [(op.seq, op.kind, op.version) for op in page.ops] == [(1, "update", 2)]


def test_reset_stream_leaves_other_streams_alone():
    make_boards(2)
    make_docs(2)
    docs_epoch = stream_row("docs").epoch
    run("syncapp_reset_stream", "boards")
    assert seqs("docs") == [1, 2]
    assert stream_row("docs").epoch == docs_epoch


def test_reset_stream_unknown_stream_is_an_error():
    with pytest.raises(CommandError, match="nope"):
        run("syncapp_reset_stream", "nope")
    assert not Stream.objects.filter(name="nope").exists()
