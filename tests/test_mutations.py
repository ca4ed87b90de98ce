"""The one mutation path: every outcome, every rejection, and what it leaves behind."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import AnonymousUser

from syncapp import mutations, registry, writer
from syncapp.exceptions import PayloadTooLarge
from syncapp.models import IdempotencyRecord, Op
from tests.helpers import mutation, ops
from tests.testapp.models import Board, Card, Doc

pytestmark = pytest.mark.django_db


def apply(user, client_id="c1", **kwargs):
    return mutations.apply_one(mutation(**kwargs), user=user, client_id=client_id, source="test")


def create_card(user, board, **fields):
    pk = str(uuid.uuid4())
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=pk,
        op="create",
        fields={"board": str(board.pk), "title": "t", **fields},
    )
    assert result.status == "applied", result
    return Card.objects.get(pk=pk)


def test_create_applies_and_answers_with_the_authoritative_object(user, board):
    pk = str(uuid.uuid4())
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=pk,
        op="create",
        fields={"board": str(board.pk), "title": "Hello"},
    )
    assert result.status == "applied"
    assert result.version == 1
    assert result.object.pk == pk
    assert result.object.fields["title"] == "Hello"
    assert result.object.fields["likes"] == 0
    [op] = ops(f"board:{board.pk}")
    assert result.seq == op.seq
    assert op.mutation_id == result.id
    assert (op.actor_id, op.client_id, op.source) == (user.pk, "c1", "test")


def test_create_with_an_existing_pk_is_a_conflict(user, board):
    card = create_card(user, board)
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="create",
        fields={"board": str(board.pk), "title": "again"},
    )
    assert result.status == "conflict"
    assert result.error.code == "exists"
    assert result.object.fields["title"] == "t"


def test_create_in_the_wrong_stream_is_rejected(user, board):
    result = apply(
        user,
        stream="board:elsewhere",
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": str(board.pk), "title": "x"},
    )
    assert (result.status, result.error.code) == ("rejected", "wrong_stream")
    assert not Card.objects.exists()


def test_update_applies_changed_fields(user, board):
    card = create_card(user, board)
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"body": "more", "done": True},
    )
    assert result.status == "applied"
    assert result.version == 2
    op = ops(f"board:{board.pk}")[-1]
    assert op.fields == {"body": "more", "done": True, "updated_at": op.fields["updated_at"]}


def test_update_of_a_deleted_object_is_gone(user, board):
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="update",
        fields={"body": "x"},
    )
    assert result.status == "gone"
    assert result.seq is None


def test_update_naming_another_stream_is_rejected(user, board):
    card = create_card(user, board)
    result = apply(
        user, stream="boards", model="testapp.card", pk=str(card.pk), op="update", fields={}
    )
    assert (result.status, result.error.code) == ("rejected", "wrong_stream")


def test_update_moving_the_object_needs_write_permission_on_the_new_stream(user, board):
    card = create_card(user, board)
    other = Board.objects.create(name="other")
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"board": str(other.pk)},
    )
    assert result.status == "applied"
    assert ops(f"board:{board.pk}")[-1].kind == "delete"
    assert ops(f"board:{other.pk}")[-1].kind == "create"


def test_delete_applies_and_records_a_delete(user, board):
    card = create_card(user, board)
    result = apply(
        user, stream=f"board:{board.pk}", model="testapp.card", pk=str(card.pk), op="delete"
    )
    assert (result.status, result.version, result.object) == ("applied", 2, None)
    assert ops(f"board:{board.pk}")[-1].kind == "delete"
    assert result.seq == ops(f"board:{board.pk}")[-1].seq


def test_delete_of_a_missing_object_is_gone(user, board):
    result = apply(
        user, stream=f"board:{board.pk}", model="testapp.card", pk=str(uuid.uuid4()), op="delete"
    )
    assert result.status == "gone"


def test_unknown_model_is_rejected(user):
    result = apply(user, stream="s", model="testapp.nothing", pk="1", op="delete")
    assert (result.status, result.error.code) == ("rejected", "unknown_model")


def test_unsynced_model_is_rejected(user):
    result = apply(user, stream="s", model="auth.user", pk="1", op="delete")
    assert (result.status, result.error.code) == ("rejected", "unknown_model")


def test_invalid_pk_is_rejected(user):
    result = apply(user, stream="docs", model="testapp.doc", pk="not-a-number", op="delete")
    assert (result.status, result.error.code) == ("rejected", "invalid_pk")


def test_unknown_and_unsynced_fields_are_rejected(user, board):
    card = create_card(user, board)
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"nope": 1, "sync_version": 9},
    )
    assert (result.status, result.error.code) == ("rejected", "unknown_field")
    assert set(result.error.fields) == {"nope", "sync_version"}


def test_excluded_field_is_rejected(user):
    doc = Doc.objects.create(text="x")
    result = apply(
        user,
        stream="docs",
        model="testapp.doc",
        pk=doc.pk,
        op="update",
        fields={"secret": "s"},
        base_version=1,
    )
    assert (result.status, result.error.code) == ("rejected", "unknown_field")


def test_read_only_field_is_rejected(user, board):
    card = create_card(user, board)
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"updated_at": "2020-01-01T00:00:00Z"},
    )
    assert (result.status, result.error.code) == ("rejected", "read_only_field")


def test_invalid_values_are_rejected_with_field_messages(user, board):
    card = create_card(user, board)
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"title": "x" * 201, "done": "maybe"},
        base_version=1,
    )
    assert (result.status, result.error.code) == ("rejected", "validation_failed")
    assert set(result.error.fields) == {"title", "done"}
    assert len(ops(f"board:{board.pk}")) == 1


def test_create_missing_required_fields_is_rejected(user, board):
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": str(board.pk)},
    )
    assert (result.status, result.error.code) == ("rejected", "validation_failed")
    assert "title" in result.error.fields


def test_create_pointing_at_a_missing_object_is_rejected(user):
    missing = str(uuid.uuid4())
    result = apply(
        user,
        stream=f"board:{missing}",
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": missing, "title": "x"},
    )
    assert (result.status, result.error.code) == ("rejected", "validation_failed")
    assert "board" in result.error.fields


def test_readonly_user_may_not_write(django_user_model, board):
    readonly = django_user_model.objects.create_user("readonly")
    result = apply(
        readonly,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": str(board.pk), "title": "x"},
    )
    assert (result.status, result.error.code) == ("rejected", "permission_denied")
    assert not Card.objects.exists()


def test_anonymous_user_may_not_write_private_streams(board):
    result = apply(
        AnonymousUser(),
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": str(board.pk), "title": "x"},
    )
    assert (result.status, result.error.code) == ("rejected", "not_authenticated")


def test_anonymous_user_writes_public_streams_with_a_client_id():
    result = apply(
        AnonymousUser(),
        client_id="anon-tab",
        stream="public:boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "open", "public": True},
    )
    assert result.status == "applied"
    assert IdempotencyRecord.objects.get().owner == "client:anon-tab"


def test_anonymous_write_without_a_client_id_is_rejected():
    result = apply(
        AnonymousUser(),
        client_id=None,
        stream="public:boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "open", "public": True},
    )
    assert (result.status, result.error.code) == ("rejected", "client_id_required")


def test_rejection_in_a_batch_does_not_stop_the_others(user, board):
    good = mutation(
        stream="boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "ok"},
    )
    bad = mutation(stream="boards", model="testapp.nothing", pk="1", op="delete")
    results = mutations.apply([bad, good], user=user, client_id="c1", source="test")
    assert [r.status for r in results] == ["rejected", "applied"]
    assert [r.id for r in results] == [bad.id, good.id]


def test_batch_over_the_limit_is_refused(user, settings):
    settings.SYNCAPP = {**settings.SYNCAPP, "MAX_BATCH": 2}
    batch = [mutation(stream="docs", model="testapp.doc", pk="1", op="delete") for _ in range(3)]
    with pytest.raises(PayloadTooLarge) as info:
        mutations.apply(batch, user=user, client_id="c1", source="test")
    assert info.value.error_code == "batch_too_large"
    assert not Op.objects.exists()


def test_unexpected_failure_is_a_retryable_rejection_and_frees_the_id(user, monkeypatch):
    def explode(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(writer.Writer, "run", explode)
    m = mutation(
        stream="boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "x"},
    )
    result = mutations.apply_one(m, user=user, client_id="c1", source="test")
    assert (result.status, result.error.code, result.error.retry) == (
        "rejected",
        "internal_error",
        True,
    )
    assert not IdempotencyRecord.objects.exists()
    monkeypatch.undo()
    assert mutations.apply_one(m, user=user, client_id="c1", source="test").status == "applied"


# Regressions found in review.


def test_create_over_an_object_one_cannot_read_reveals_nothing(board):
    secret = Board.objects.create(name="top secret")
    result = apply(
        AnonymousUser(),
        client_id="anon",
        stream="public:boards",
        model="testapp.board",
        pk=str(secret.pk),
        op="create",
        fields={"name": "mine", "public": True},
    )
    assert (result.status, result.error.code, result.object) == (
        "rejected",
        "not_authenticated",
        None,
    )


def test_counter_overflow_is_a_validation_error_not_a_server_error(user, board):
    card = create_card(user, board)
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"likes": {"delta": 2**70}},
    )
    assert (result.status, result.error.code, result.error.retry) == (
        "rejected",
        "validation_failed",
        False,
    )
    assert "likes" in result.error.fields


def test_seq_of_a_move_is_the_one_in_the_mutations_stream(user, board):
    card = create_card(user, board)
    other = Board.objects.create(name="other")
    for i in range(3):
        Card.objects.create(board=other, title=str(i))  # the other stream runs ahead
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"board": str(other.pk)},
    )
    assert result.seq == ops(f"board:{board.pk}")[-1].seq == 2


def test_database_refusal_is_an_integrity_error_without_database_details(user, board):
    card = create_card(user, board)
    result = apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"likes": {"delta": -5000}},  # passes the serializer, not the CHECK constraint
    )
    assert (result.status, result.error.code) == ("rejected", "integrity_error")
    assert "testapp" not in result.error.message
    assert "likes" not in result.error.message


def test_resolver_validation_error_is_a_rejection(user, monkeypatch):
    from django.core.exceptions import ValidationError

    from syncapp import conflicts
    from tests.testapp.models import Note

    def strict(ctx):
        raise ValidationError({"text": ["No shouting."]})

    monkeypatch.setitem(conflicts.BUILTIN, "strict", strict)
    monkeypatch.setattr(registry.spec_for(Note), "field_policies", {"text": "strict"})
    note = Note.objects.create(text="hi")
    result = apply(
        user,
        stream="notes",
        model="testapp.note",
        pk=str(note.pk),
        op="update",
        fields={"text": "HI"},
    )
    assert (result.status, result.error.code, result.error.fields) == (
        "rejected",
        "validation_failed",
        {"text": ["No shouting."]},
    )


def test_failing_claim_is_a_retryable_internal_error(user, monkeypatch):
    from django.db import OperationalError

    from syncapp import idempotency

    def down(*args):
        raise OperationalError("connection lost")

    monkeypatch.setattr(idempotency, "claim", down)
    m = mutation(
        stream="boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "x"},
    )
    result = mutations.apply_one(m, user=user, client_id="c1", source="test")
    assert (result.status, result.error.code, result.error.retry) == (
        "rejected",
        "internal_error",
        True,
    )


def test_a_nul_in_what_a_rejection_quotes_is_stored_and_answered_alike(user, board):
    """A pk, or a field value, with a NUL: the rejection quotes it, and PostgreSQL's jsonb
    (which keeps the result for retries) cannot hold a NUL. The NUL becomes U+FFFD, so the
    mutation is rejected as invalid, not failed, and a retry gets the same answer."""
    stream = f"board:{board.pk}"
    bad_pk = mutation(
        stream=stream, model="testapp.card", pk="\x00", op="create", fields={"title": "t"}
    )
    bad_field = mutation(
        stream=stream,
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": "\x00x", "title": "t"},
    )
    good = mutation(
        stream=stream,
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": str(board.pk), "title": "t"},
    )
    for batch in ([bad_pk], [bad_field], [good, bad_pk, bad_field]):
        results = mutations.apply(batch, user=user, client_id="c1", source="test")
        assert [r.status for r in results] == [
            "applied" if m is good else "rejected" for m in batch
        ], results
        rejected = [r for r in results if r.status == "rejected"]
        assert {r.error.code for r in rejected} <= {"invalid_pk", "validation_failed"}
        for r in rejected:
            assert "\x00" not in r.error.message
            assert "\ufffd" in r.error.message + repr(r.error.fields)
        # A retry is answered from the stored records, identically.
        assert mutations.apply(batch, user=user, client_id="c1", source="test") == results
    assert Card.objects.filter(pk=good.pk).exists()
    assert IdempotencyRecord.objects.filter(status="done").count() == 3
