"""Invariant 1: every ORM write path records its op in the writer's transaction."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from syncapp import context
from syncapp.exceptions import InvalidInput, UnsupportedWrite
from syncapp.models import Op, Stream
from tests.helpers import kinds, ops
from tests.testapp.models import Board, Card, Doc, Tag

pytestmark = pytest.mark.django_db


def card_stream(board: Board) -> str:
    return f"board:{board.pk}"


def test_save_create_records_all_synced_fields(board):
    card = Card.objects.create(board=board, title="Write tests")
    [op] = ops(card_stream(board))
    assert (op.seq, op.kind, op.model, op.object_pk, op.version) == (
        1,
        "create",
        "testapp.card",
        str(card.pk),
        1,
    )
    assert set(op.fields) == {"board", "title", "body", "done", "likes", "rank", "updated_at"}
    assert op.fields["title"] == "Write tests"
    assert op.fields["board"] == str(board.pk)


def test_a_forced_insert_reads_no_prior_row(board):
    """``create()`` (a forced insert) has no row to diff against: no read of it."""
    with CaptureQueriesContext(connection) as queries:
        card = Card.objects.create(board=board, title="new")
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert not [sql for sql in reads if Card._meta.db_table in sql], reads
    assert kinds(card_stream(board)) == [(1, "create")]
    assert ops(card_stream(board))[0].object_pk == str(card.pk)


def test_a_forced_insert_of_an_existing_pk_fails_and_records_nothing(board):
    card = Card.objects.create(board=board, title="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Card.objects.create(pk=card.pk, board=board, title="again")
    assert kinds(card_stream(board)) == [(1, "create")]
    assert Stream.objects.get(name=card_stream(board)).head == 1
    card.refresh_from_db()
    assert (card.title, card.sync_version) == ("a", 1)


def test_save_update_records_only_changed_fields(board):
    card = Card.objects.create(board=board, title="a")
    card.title = "b"
    card.save()
    op = ops(card_stream(board))[-1]
    assert op.kind == "update"
    assert set(op.fields) == {"title", "updated_at"}  # auto_now changes on every save
    assert op.fields["title"] == "b"
    assert op.version == 2
    card.refresh_from_db()
    assert card.sync_version == 2
    assert card.sync_field_versions["title"] == 2
    assert card.sync_field_versions["body"] == 1


def test_save_without_changes_records_nothing(board):
    doc = Doc.objects.create(text="x")
    doc.save()
    assert kinds("docs") == [(1, "create")]
    doc.refresh_from_db()
    assert doc.sync_version == 1


def test_save_of_unsynced_field_records_nothing():
    doc = Doc.objects.create(text="x")
    doc.secret = "hidden"
    doc.save()
    assert kinds("docs") == [(1, "create")]
    assert "secret" not in ops("docs")[0].fields


def test_save_diffs_against_database_not_the_stale_instance(board):
    card = Card.objects.create(board=board, title="a")
    stale = Card.objects.get(pk=card.pk)
    Card.objects.filter(pk=card.pk).update(title="b")
    stale.body = "new body"
    stale.save()  # writes title "a" back over "b": the op must say so
    op = ops(card_stream(board))[-1]
    assert op.fields["title"] == "a"
    assert op.fields["body"] == "new body"
    assert op.version == 3


def test_save_update_fields_records_those_fields(board):
    card = Card.objects.create(board=board, title="a")
    card.title = "b"
    card.body = "unsaved"
    card.save(update_fields=["title"])
    op = ops(card_stream(board))[-1]
    assert set(op.fields) == {"title"}
    card.refresh_from_db()
    assert card.body == ""
    assert card.sync_version == 2


def test_queryset_update_records_each_changed_row(board):
    first = Card.objects.create(board=board, title="a")
    second = Card.objects.create(board=board, title="b", done=True)
    count = Card.objects.filter(board=board).update(done=True)
    assert count == 2
    updates = [op for op in ops(card_stream(board)) if op.kind == "update"]
    assert [(op.object_pk, op.fields) for op in updates] == [(str(first.pk), {"done": True})]
    second.refresh_from_db()
    assert second.sync_version == 1


def test_queryset_update_with_expressions(board):
    from django.db.models import F

    card = Card.objects.create(board=board, title="a", likes=2)
    Card.objects.filter(pk=card.pk).update(likes=F("likes") + 3)
    assert ops(card_stream(board))[-1].fields == {"likes": 5}


def test_queryset_update_of_sync_metadata_is_refused(board):
    with pytest.raises(UnsupportedWrite):
        Card.objects.update(sync_version=7)


def test_bulk_create_records_a_create_per_object(board):
    cards = Card.objects.bulk_create([Card(board=board, title=f"t{i}") for i in range(3)])
    assert kinds(card_stream(board)) == [(1, "create"), (2, "create"), (3, "create")]
    assert [op.object_pk for op in ops(card_stream(board))] == [str(c.pk) for c in cards]
    assert all(c.sync_version == 1 and c.sync_stream == card_stream(board) for c in cards)


def test_bulk_create_with_conflict_handling_is_refused(board):
    with pytest.raises(UnsupportedWrite, match="ignore_conflicts"):
        Card.objects.bulk_create([Card(board=board, title="x")], ignore_conflicts=True)
    assert Op.objects.count() == 1  # the board's create only


def test_bulk_update_records_changed_objects(board):
    cards = Card.objects.bulk_create([Card(board=board, title=f"t{i}") for i in range(3)])
    cards[0].title = "changed"
    cards[2].body = "also"
    Card.objects.bulk_update(cards, ["title", "body"])
    updates = [(op.object_pk, op.fields) for op in ops(card_stream(board)) if op.kind == "update"]
    assert updates == [
        (str(cards[0].pk), {"title": "changed"}),
        (str(cards[2].pk), {"body": "also"}),
    ]


def test_delete_records_delete_with_next_version(board):
    card = Card.objects.create(board=board, title="a")
    card.delete()
    op = ops(card_stream(board))[-1]
    assert (op.kind, op.fields, op.version) == ("delete", {}, 2)


def test_delete_of_stale_instance_uses_current_version(board):
    card = Card.objects.create(board=board, title="a")
    Card.objects.filter(pk=card.pk).update(title="b")
    card.delete()
    assert ops(card_stream(board))[-1].version == 3


def test_queryset_delete_records_each_row(board):
    Card.objects.bulk_create([Card(board=board, title=f"t{i}") for i in range(3)])
    deleted, _ = Card.objects.filter(board=board).delete()
    assert deleted == 3
    assert [k for _, k in kinds(card_stream(board))].count("delete") == 3


def test_cascading_delete_records_children_and_set_null(board):
    card = Card.objects.create(board=board, title="a")
    tag = Tag.objects.create(card=card, label="x")
    stream = card_stream(board)
    board.delete()
    assert kinds(stream)[-1] == (2, "delete")
    assert kinds("boards")[-1] == (2, "delete")
    tag_op = ops("tags")[-1]
    assert (tag_op.kind, tag_op.object_pk, tag_op.fields) == ("update", str(tag.pk), {"card": None})


def test_set_constant_on_delete_is_recorded(board):
    card = Card.objects.create(board=board, title="a")
    tag = Tag.objects.create(pinned=card, label="x")
    card.delete()
    assert (ops("tags")[-1].object_pk, ops("tags")[-1].fields) == (str(tag.pk), {"pinned": None})


def test_moving_to_another_stream_deletes_there_and_creates_here(board):
    other = Board.objects.create(name="Other")
    card = Card.objects.create(board=board, title="a")
    card.board = other
    card.save()
    assert kinds(card_stream(board))[-1] == (2, "delete")
    moved = ops(card_stream(other))[-1]
    assert moved.kind == "create"
    assert moved.fields["title"] == "a"
    assert moved.version == 2


def test_rollback_leaves_no_op_no_broadcast_and_no_used_seq(
    board, django_capture_on_commit_callbacks
):
    Card.objects.create(board=board, title="kept")
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        Card.objects.create(board=board, title="rolled back")
        raise RuntimeError
    assert callbacks == []
    assert [op.fields["title"] for op in ops(card_stream(board))] == ["kept"]
    Card.objects.create(board=board, title="next")
    assert kinds(card_stream(board)) == [(1, "create"), (2, "create")]


def test_op_and_change_share_the_transaction(board):
    with transaction.atomic():
        Card.objects.create(board=board, title="a")
        assert Stream.objects.get(name=card_stream(board)).head == 1
        transaction.set_rollback(True)
    assert not Card.objects.exists()
    assert not Op.objects.filter(stream__name=card_stream(board)).exists()


def test_ops_carry_attribution(board, user):
    with context.attribute(actor=user, client_id="tab-1", source="command"):
        Card.objects.create(board=board, title="a")
    op = ops(card_stream(board))[-1]
    assert (op.actor_id, op.client_id, op.source) == (user.pk, "tab-1", "command")


def test_invalid_stream_name_fails_the_write(monkeypatch):
    monkeypatch.setattr(Board, "get_sync_stream", lambda self: "has spaces")
    with pytest.raises(InvalidInput, match="Invalid stream name"), transaction.atomic():
        Board.objects.create(name="x")
    assert not Board.objects.exists()


def test_raw_sql_is_not_captured(board):
    """Documented limitation (docs/data-model.md): raw SQL bypasses the ORM."""
    card = Card.objects.create(board=board, title="a")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Card._meta.db_table} SET title = 'raw' WHERE id = %s",
            [card.pk.hex if connection.vendor == "sqlite" else card.pk],
        )
    assert len(ops(card_stream(board))) == 1


# Regressions found in review.


def test_queryset_update_of_rows_matched_through_a_join_counts_each_row_once(board):
    card = Card.objects.create(board=board, title="a")
    Tag.objects.bulk_create([Tag(card=card, label="x") for _ in range(501)])
    count = Card.objects.filter(tag__label="x").update(likes=F("likes") + 1)
    card.refresh_from_db()
    assert (count, card.likes) == (1, 1)
    assert [op.fields for op in ops(card_stream(board)) if op.kind == "update"] == [{"likes": 1}]


def test_partial_save_of_a_stale_instance_keeps_the_row_in_its_stream(board):
    other = Board.objects.create(name="other")
    card = Card.objects.create(board=board, title="a")
    stale = Card.objects.get(pk=card.pk)
    card.board = other
    card.save()
    stale.title = "renamed"
    stale.save(update_fields=["title"])
    stale.refresh_from_db()
    assert (stale.board_id, stale.sync_stream) == (other.pk, card_stream(other))
    assert ops(card_stream(other))[-1].fields == {"title": "renamed"}
    assert ops(card_stream(board))[-1].kind == "delete"


def test_bulk_update_of_stale_instances_keeps_rows_in_their_streams(board):
    other = Board.objects.create(name="other")
    card = Card.objects.create(board=board, title="a")
    stale = Card.objects.get(pk=card.pk)
    Card.objects.filter(pk=card.pk).update(board=other)
    stale.title = "renamed"
    Card.objects.bulk_update([stale], ["title"])
    card.refresh_from_db()
    assert card.sync_stream == card_stream(other)
    assert ops(card_stream(other))[-1].fields == {"title": "renamed"}


def test_deleting_through_a_proxy_records_the_delete(board):
    from tests.testapp.models import CardProxy

    card = Card.objects.create(board=board, title="a")
    CardProxy.objects.get(pk=card.pk).delete()
    assert kinds(card_stream(board)) == [(1, "create"), (2, "delete")]


def test_deleting_an_already_deleted_instance_records_nothing_more(board):
    card = Card.objects.create(board=board, title="a")
    stale = Card.objects.get(pk=card.pk)
    card.delete()
    stale.delete()
    assert kinds(card_stream(board)) == [(1, "create"), (2, "delete")]


def test_cascade_refreshes_a_child_moved_after_it_was_loaded(board):
    from syncapp import deletes

    other = Board.objects.create(name="other")
    card = Card.objects.create(board=board, title="a")
    loaded = Card.objects.get(pk=card.pk)  # as Django's collector would have it
    Card.objects.filter(pk=card.pk).update(board=other)
    deletes.refresh_before_delete(Card, loaded, "default")
    assert (loaded.sync_stream, loaded.sync_version) == (card_stream(other), 2)
