"""Set-wise batches: a batch's creates are checked one by one and written together, its
idempotency records claimed, held and finished together, yet every mutation gets the
result it would get alone, in order, and the op log stays gap-free in batch order."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from demo_project.todos.models import Todo, TodoList
from syncapp import capture, idempotency, mutations, writer
from syncapp.models import IdempotencyRecord, Op
from syncapp.permissions import BasePermission
from tests.helpers import in_progress_record, mutation, ops
from tests.test_broadcast import nothing_waiting, receive, subscribe
from tests.testapp.models import Board, Card, Tag

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = "public:boards"


def new_board(name: str, *, public: bool = True, pk: str | None = None) -> Any:
    return mutation(
        stream=PUBLIC if public else "boards",
        model="testapp.board",
        pk=pk or str(uuid.uuid4()),
        op="create",
        fields={"name": name, "public": public},
    )


def apply(batch: list[Any], user: Any) -> list[Any]:
    return mutations.apply(batch, user=user, client_id="c1", source="test")


def statements(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def test_a_batch_of_creates_costs_a_few_statements_not_a_few_per_mutation(user):
    layer, channel = subscribe(PUBLIC)
    batch = [new_board(f"b{i}") for i in range(100)]
    with CaptureQueriesContext(connection) as queries:
        results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * 100
    assert [r.seq for r in results] == list(range(1, 101))
    assert all(r.version == 1 and r.object.fields["name"] == f"b{i}" for i, r in enumerate(results))
    # Claims (an insert; on SQLite also a read), one INSERT of the rows, the stream's head
    # (new: UPDATE, INSERT, UPDATE), one INSERT of the ops (SQLite: two, at 999 parameters
    # a statement), the results; BEGIN/COMMIT twice and a savepoint around the writes: 13
    # statements on PostgreSQL, 15 on SQLite. Per-mutation statements would be hundreds.
    # The rows are not looked up first: a pk that is taken fails the INSERT.
    assert len(queries.captured_queries) <= 15, "\n".join(statements(queries))
    assert not [
        sql for sql in statements(queries) if sql.startswith("SELECT") and "testapp_board" in sql
    ]
    stored = ops(PUBLIC)
    assert [op.seq for op in stored] == list(range(1, 101))
    assert [op.mutation_id for op in stored] == [m.id for m in batch]
    assert {(op.client_id, op.source, op.actor_id) for op in stored} == {("c1", "test", user.pk)}
    assert IdempotencyRecord.objects.filter(status="done").count() == 100
    message = receive(layer, channel)
    assert (message["first"], message["last"], len(message["ops"])) == (1, 100, 100)
    assert nothing_waiting(layer, channel)
    # Retried whole: the stored results, no statement per mutation, no op.
    with CaptureQueriesContext(connection) as queries:
        assert apply(batch, user) == results
    assert len(queries.captured_queries) <= 6, "\n".join(statements(queries))
    assert Op.objects.count() == 100


def test_creates_in_two_streams_lock_each_stream_once(user):
    batch = [new_board(f"b{i}", public=i % 2 == 0) for i in range(100)]
    with CaptureQueriesContext(connection) as queries:
        results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * 100
    assert len(queries.captured_queries) <= 22, "\n".join(statements(queries))
    for stream, share in ((PUBLIC, batch[0::2]), ("boards", batch[1::2])):
        stored = ops(stream)
        assert [op.seq for op in stored] == list(range(1, 51))
        assert [op.mutation_id for op in stored] == [m.id for m in share]
    assert [r.seq for r in results[0::2]] == list(range(1, 51))


def test_a_mixed_batch_gets_in_order_what_each_would_get_alone(user, board):
    retried = new_board("earlier")
    first = apply([retried], user)[0]
    card = Card.objects.create(board=board, title="t")
    card.rank = 5
    card.save()  # version 2: a rank edit based on version 1 is stale
    a, b, c = new_board("a"), new_board("b", public=False), new_board("c")
    batch = [
        a,
        retried,
        new_board("x" * 101),
        b,
        mutation(stream=PUBLIC, model="testapp.board", pk=a.pk, op="update", fields={"name": "a2"}),
        mutation(
            stream=f"board:{board.pk}",
            model="testapp.card",
            pk=str(uuid.uuid4()),
            op="create",
            fields={"board": str(board.pk), "title": "new card"},
        ),
        mutation(
            stream=f"board:{board.pk}",
            model="testapp.card",
            pk=str(card.pk),
            op="update",
            fields={"rank": 9, "done": True},
            base_version=1,
        ),
        c,
    ]
    results = apply(batch, user)
    assert [r.status for r in results] == [
        "applied",
        "applied",
        "rejected",
        "applied",
        "applied",
        "applied",
        "conflict",
        "applied",
    ]
    assert results[1] == first
    assert results[2].error.code == "validation_failed"
    assert results[4].version == 2
    assert results[4].object.fields["name"] == "a2"
    assert set(results[6].error.fields) == {"rank"}
    card.refresh_from_db()
    assert (card.rank, card.done) == (5, True)
    # The public stream: the earlier create, then a, a's update, c, in batch order.
    public = ops(PUBLIC)
    assert [op.seq for op in public] == [1, 2, 3, 4]
    assert [op.mutation_id for op in public] == [retried.id, a.id, batch[4].id, c.id]
    assert [r.seq for r in (results[0], results[4], results[7])] == [2, 3, 4]
    boards = ops("boards")
    assert [op.seq for op in boards] == list(range(1, len(boards) + 1))
    assert boards[-1].mutation_id == b.id
    assert not Board.objects.filter(name="x" * 101).exists()
    # Retried whole, the batch answers the same and writes nothing.
    count = Op.objects.count()
    assert apply(batch, user) == results
    assert Op.objects.count() == count


def test_two_creates_of_one_pk_in_a_batch(user):
    pk = str(uuid.uuid4())
    results = apply([new_board("one", pk=pk), new_board("two", pk=pk), new_board("x")], user)
    assert [r.status for r in results] == ["applied", "conflict", "applied"]
    assert results[1].error.code == "exists"
    assert results[1].object.fields["name"] == "one"
    assert [op.seq for op in ops(PUBLIC)] == [1, 2]


def test_a_create_of_an_existing_pk_is_a_conflict(user):
    existing = Board.objects.create(name="there", public=True)
    results = apply([new_board("a"), new_board("b", pk=str(existing.pk)), new_board("c")], user)
    assert [r.status for r in results] == ["applied", "conflict", "applied"]
    assert results[1].error.code == "exists"
    assert [op.seq for op in ops(PUBLIC)] == [1, 2, 3]


def test_a_refused_create_of_a_taken_pk_answers_as_it_would_alone(user):
    """Its checks refuse it (a name too long), but alone it would be answered `exists`
    before its fields are checked: the batch looks the pk up and runs it alone."""
    existing = Board.objects.create(name="there", public=True)
    taken = new_board("x" * 101, pk=str(existing.pk))
    alone = mutations.apply_one(
        new_board("x" * 101, pk=str(existing.pk)), user=user, client_id="c1", source="test"
    )
    assert (alone.status, alone.error.code) == ("conflict", "exists")
    # The second time, a create waits to be written when it is refused: written first.
    again = msgspec.structs.replace(taken, id=uuid.uuid4())
    results = apply([taken, new_board("a"), again], user)
    assert [r.status for r in results] == ["conflict", "applied", "conflict"]
    assert {r.error.code for r in results if r.error} == {"exists"}
    assert [r.object.fields["name"] for r in (results[0], results[2])] == ["there", "there"]
    assert len(ops(PUBLIC)) == 2  # the earlier create and a


def test_a_create_that_needs_an_earlier_create_of_the_batch_is_checked_again(user):
    """The todo's reference to the list is validated by a query, which cannot see the list
    while it waits to be written: refused, it is checked again once the list is written."""
    lst = str(uuid.uuid4())
    batch = [
        mutation(stream="todos.lists", model="todos.todolist", pk=lst, op="create",
                 fields={"name": "groceries"}),
        mutation(stream=f"todos.list:{lst}", model="todos.todo", pk=str(uuid.uuid4()),
                 op="create", fields={"list": lst, "title": "milk"}),
        mutation(stream=f"todos.list:{lst}", model="todos.todo", pk=str(uuid.uuid4()),
                 op="create", fields={"list": str(uuid.uuid4()), "title": "no such list"}),
        mutation(stream="todos.lists", model="todos.todolist", pk=str(uuid.uuid4()),
                 op="create", fields={"name": "chores"}),
    ]  # fmt: skip
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied", "applied", "rejected", "applied"]
    assert results[2].error.code == "validation_failed"
    assert Todo.objects.get().list_id == uuid.UUID(lst)
    assert TodoList.objects.count() == 2
    assert [op.mutation_id for op in ops("todos.lists")] == [batch[0].id, batch[3].id]
    assert [op.seq for op in ops(f"todos.list:{lst}")] == [1]


def test_creates_that_fail_together_are_applied_one_by_one(user, monkeypatch, caplog):
    """A constraint the checks cannot see fails the one INSERT: its savepoint rolls back
    (with what else the attempt wrote), and the creates run one by one."""
    insert_new = capture.insert_new
    calls: list[int] = []

    def failing_first(spec: Any, objs: Any, using: str) -> Any:
        calls.append(1)
        if len(calls) == 1:
            # A row with the last one's pk: the INSERT then violates the primary key.
            Board.objects.create(pk=objs[-1].pk, name="in the way", public=True)
        return insert_new(spec, objs, using)

    monkeypatch.setattr(capture, "insert_new", failing_first)
    caplog.set_level(logging.INFO, logger="syncapp.mutations")
    batch = [new_board(f"b{i}") for i in range(4)]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * 4
    assert "failed together; applying them one by one" in caplog.text
    assert not Board.objects.filter(name="in the way").exists()
    stored = ops(PUBLIC)
    assert [op.seq for op in stored] == [1, 2, 3, 4]
    assert [op.mutation_id for op in stored] == [m.id for m in batch]
    assert [r.seq for r in results] == [1, 2, 3, 4]


@pytest.mark.postgresql
def test_a_pk_created_concurrently_meets_the_create_alone(user, monkeypatch):
    """Another transaction commits a board with a pk the batch is about to insert: the one
    INSERT fails, and run one by one, that create gets the conflict it would alone."""
    insert_new = capture.insert_new
    taken = str(uuid.uuid4())

    def racing(spec: Any, objs: Any, using: str) -> Any:
        def other() -> None:
            try:
                Board.objects.create(pk=taken, name="theirs", public=True)
            finally:
                connections.close_all()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        return insert_new(spec, objs, using)

    monkeypatch.setattr(capture, "insert_new", racing)
    batch = [new_board("a"), new_board("b", pk=taken), new_board("c")]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied", "conflict", "applied"]
    assert results[1].object.fields["name"] == "theirs"
    stored = ops(PUBLIC)
    assert [op.seq for op in stored] == [1, 2, 3]
    assert [op.mutation_id for op in stored] == [None, batch[0].id, batch[2].id]


class WritingPermission(BasePermission):
    """A hook that writes (an audit row) and refuses boards named "deny"."""

    def can_write(self, user: Any, stream: str, instance: Any, mutation: Any) -> bool:
        Tag.objects.create(label=f"asked {mutation.fields.get('name')}")
        return mutation.fields.get("name") != "deny"


def test_a_check_that_writes_sends_the_batch_back_to_savepoints(user, settings):
    """Without a savepoint, nothing could undo the refused create's audit row: the batch
    runs again with a savepoint per mutation, and the refusal leaves nothing behind."""
    settings.SYNCAPP = {
        **settings.SYNCAPP,
        "PERMISSION_CLASS": "tests.test_mutation_batch.WritingPermission",
    }
    batch = [new_board("a"), new_board("deny"), new_board("c")]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied", "rejected", "applied"]
    assert results[1].error.code == "permission_denied"
    assert sorted(Tag.objects.values_list("label", flat=True)) == ["asked a", "asked c"]
    assert [op.mutation_id for op in ops(PUBLIC)] == [batch[0].id, batch[2].id]


def test_a_crash_while_checking_a_create_ends_the_batch_there(user, monkeypatch, caplog):
    """An unexpected error in a create's checks rolls the batch back; run again with a
    savepoint each, it fails again and ends the batch there; what came before commits,
    and it and what follows run alone, in order (the third time it succeeds)."""
    prepare = writer.Writer.prepare_create
    crashes: list[int] = []

    def flaky(self: writer.Writer, pk: Any) -> Any:
        if self.mutation.fields.get("name") == "flaky" and len(crashes) < 2:
            crashes.append(1)
            raise RuntimeError("boom")
        return prepare(self, pk)

    monkeypatch.setattr(writer.Writer, "prepare_create", flaky)
    batch = [new_board("a"), new_board("flaky"), new_board("c")]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * 3
    assert "and the 1 after it run alone" in caplog.text
    assert [op.mutation_id for op in ops(PUBLIC)] == [m.id for m in batch]
    assert [r.seq for r in results] == [1, 2, 3]
    assert IdempotencyRecord.objects.filter(status="done").count() == 3


def test_a_record_taken_over_meanwhile_is_not_applied_by_this_attempt(user, monkeypatch):
    """Another attempt takes a record over (its lease ran out) while the batch runs: the
    batch notices when it stores the results, rolls back, runs again holding its records
    first, and leaves that mutation to the other attempt."""
    claim_many = idempotency.claim_many

    def then_taken_over(owner: str, items: Any, using: str) -> Any:
        claims = claim_many(owner, items, using)
        IdempotencyRecord.objects.filter(pk=claims[1].record_id).update(lease=uuid.uuid4())
        return claims

    monkeypatch.setattr(idempotency, "claim_many", then_taken_over)
    batch = [new_board("a"), new_board("b"), new_board("c")]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied", "rejected", "applied"]
    assert (results[1].error.code, results[1].error.retry) == ("in_progress", True)
    assert [op.mutation_id for op in ops(PUBLIC)] == [batch[0].id, batch[2].id]
    assert not Board.objects.filter(name="b").exists()
    assert IdempotencyRecord.objects.get(key=batch[1].id).status == "in_progress"


AWKWARD = [
    'a "quoted" name',
    "back\\slash \\\\ and \\N",
    "{braces}, commas, and (parens)",
    "NULL",
    "null",
    "inner  double  spaces",
    "tab\there\nnewline",
    "ünïcödé ✓ 🚀",
    "O'Reilly; DROP TABLE x; --",
    "%s %(x)s $1 ?",
]


def test_a_batch_stores_every_value_exactly_as_sent(user, board):
    """The batch's big statements bind their values apart from the SQL, arrays in binary
    on PostgreSQL (oplog.server_binding): what is stored, logged and replayed is exactly
    what was sent, quotes, backslashes, braces, "NULL" and all."""
    cards = [
        mutation(
            stream=f"board:{board.pk}",
            model="testapp.card",
            pk=str(uuid.uuid4()),
            op="create",
            fields={"board": str(board.pk), "title": name, "body": name * 2, "likes": i - 5},
        )
        for i, name in enumerate(AWKWARD)
    ]
    batch = [new_board(name) for name in AWKWARD] + cards
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * len(batch)
    names = dict(Board.objects.filter(name__in=AWKWARD).values_list("pk", "name"))
    assert [names[uuid.UUID(str(m.pk))] for m in batch[: len(AWKWARD)]] == AWKWARD
    stored = {str(c.pk): c for c in Card.objects.filter(board=board)}
    for i, m in enumerate(cards):
        card = stored[str(m.pk)]
        assert (card.title, card.body, card.likes) == (AWKWARD[i], AWKWARD[i] * 2, i - 5)
        assert card.updated_at is not None
    logged = ops(PUBLIC)
    assert [op.fields["name"] for op in logged] == AWKWARD
    card_ops = ops(f"board:{board.pk}")
    assert [op.fields["title"] for op in card_ops] == AWKWARD
    assert [op.fields["likes"] for op in card_ops] == [i - 5 for i in range(len(AWKWARD))]
    # The op as logged is the object as the result describes it.
    for op, result in zip(card_ops, results[len(AWKWARD) :], strict=True):
        assert result.object.fields == op.fields
        assert result.seq == op.seq
    # The stored results replay byte for byte.
    assert apply(batch, user) == results
    assert IdempotencyRecord.objects.filter(status="done").count() == len(batch)


def test_server_binding_is_scoped_to_its_block(db):
    """oplog.server_binding changes the connection's cursor class for its block only, and
    puts it back after an error too; elsewhere than PostgreSQL it changes nothing."""
    from syncapp import oplog

    connection.ensure_connection()
    raw = connection.connection
    before = getattr(raw, "cursor_factory", None)
    with oplog.server_binding("default"):
        inside = getattr(raw, "cursor_factory", None)
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s, %s", ["a 'quoted' {value}", 2])
            assert cursor.fetchone() == ("a 'quoted' {value}", 2)
    assert getattr(raw, "cursor_factory", None) is before
    with pytest.raises(RuntimeError), oplog.server_binding("default"):
        raise RuntimeError("boom")
    assert getattr(raw, "cursor_factory", None) is before
    if connection.vendor == "postgresql":
        assert inside is not before
    else:
        assert inside is before


def test_ops_appended_together_are_stored_as_one_at_a_time(db):
    """oplog.append writes a stream's ops with one statement of its own on PostgreSQL:
    the rows, their JSON (DjangoJSONEncoder values included) and the Op instances it
    returns are what bulk_create makes of a single op."""
    import datetime
    import decimal

    from django.db import transaction

    from syncapp import context, oplog

    fields = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC),
        "price": decimal.Decimal("12.50"),
        "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "nested": {"list": [1, "two", None, True], "quote": 'say "hi"\\'},
    }
    mutation_id = uuid.uuid4()

    def draft(pk: str) -> oplog.OpDraft:
        return oplog.OpDraft("s.many", "testapp.board", pk, "create", dict(fields), 1)

    with (
        context.attribute(actor=None, client_id="c9", mutation_id=mutation_id, source="test"),
        transaction.atomic(),
    ):
        alone = oplog.append([draft(str(uuid.uuid4()))])
        together = oplog.append([draft(str(uuid.uuid4())) for i in range(3)])
    assert [op.seq for op in alone + together] == [1, 2, 3, 4]
    rows = {op.pk: op for op in Op.objects.filter(stream__name="s.many")}
    assert sorted(rows) == sorted(op.pk for op in alone + together)
    for op in alone + together:
        assert not op._state.adding
        stored = rows[op.pk]
        assert stored.fields == rows[alone[0].pk].fields
        assert (stored.seq, stored.object_pk, stored.kind, stored.version) == (
            op.seq,
            op.object_pk,
            op.kind,
            op.version,
        )
        assert (stored.mutation_id, stored.client_id, stored.source, stored.actor_id) == (
            mutation_id,
            "c9",
            "test",
            None,
        )
        assert stored.created_at == op.created_at
        assert stored.encoded == op.encoded
        assert f'"seq":{op.seq},' in op.encoded
    assert rows[together[0].pk].fields == {
        "when": "2026-01-02T03:04:05.678Z",
        "price": "12.50",
        "ref": "12345678-1234-5678-1234-567812345678",
        "nested": {"list": [1, "two", None, True], "quote": 'say "hi"\\'},
    }
    head = oplog.head_of("s.many")
    assert head.head == 4


def test_a_batch_takes_over_records_whose_lease_ran_out_and_not_live_ones(user):
    stale, live, fresh = new_board("stale"), new_board("live"), new_board("fresh")
    for m, started in ((stale, timezone.now() - timedelta(minutes=5)), (live, timezone.now())):
        in_progress_record(user, m, started)
    results = apply([stale, live, fresh], user)
    assert [r.status for r in results] == ["applied", "rejected", "applied"]
    assert (results[1].error.code, results[1].error.retry) == ("in_progress", True)
    assert IdempotencyRecord.objects.get(key=stale.id).status == "done"
    assert IdempotencyRecord.objects.get(key=live.id).status == "in_progress"
    assert sorted(str(op.mutation_id) for op in Op.objects.all()) == sorted(
        [str(stale.id), str(fresh.id)]
    )
