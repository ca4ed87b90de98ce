"""Group commit: a batch of mutations is two transactions, yet each mutation stands or
falls alone, and each stream's group hears of the batch once."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from syncapp import broadcast, mutations, writer
from syncapp.models import IdempotencyRecord, Op
from tests.helpers import mutation, ops
from tests.test_broadcast import nothing_waiting, receive, subscribe
from tests.testapp.models import Card

pytestmark = pytest.mark.django_db(transaction=True)


def new_card(board: Any, title: str, **extra: Any) -> Any:
    return mutation(
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"board": str(board.pk), "title": title, **extra},
    )


def apply(batch: list[Any], user: Any) -> list[Any]:
    return mutations.apply(batch, user=user, client_id="c1", source="test")


def commits(queries: CaptureQueriesContext) -> int:
    """COMMITs issued (SQLite and PostgreSQL both show them as queries to Django)."""
    return sum(1 for q in queries.captured_queries if q["sql"].upper().startswith("COMMIT"))


def test_a_batch_commits_twice_and_rings_the_group_once(user, board):
    layer, channel = subscribe(f"board:{board.pk}")
    batch = [new_card(board, f"t{i}") for i in range(10)]
    with CaptureQueriesContext(connection) as queries:
        results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * 10
    assert [r.seq for r in results] == list(range(1, 11))
    stored = ops(f"board:{board.pk}")
    assert [op.mutation_id for op in stored] == [m.id for m in batch]
    message = receive(layer, channel)
    assert (message["first"], message["last"], len(message["ops"])) == (1, 10, 10)
    assert nothing_waiting(layer, channel)
    if connection.vendor == "postgresql":
        assert commits(queries) == 2  # the claims, then the mutations


def test_a_rejected_mutation_leaves_no_op_no_broadcast_and_no_hole(user, board):
    layer, channel = subscribe(f"board:{board.pk}")
    batch = [new_card(board, "a"), new_card(board, "x" * 500), new_card(board, "c")]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied", "rejected", "applied"]
    assert results[1].error.code == "validation_failed"
    assert [op.seq for op in ops(f"board:{board.pk}")] == [1, 2]
    assert [r.seq for r in (results[0], results[2])] == [1, 2]
    message = receive(layer, channel)
    assert (message["first"], message["last"]) == (1, 2)
    assert [op.mutation_id for op in ops(f"board:{board.pk}")] == [batch[0].id, batch[2].id]
    assert nothing_waiting(layer, channel)
    # The rejection is stored like any result: a retry gets it, and writes nothing.
    again = apply([batch[1]], user)
    assert (again[0].status, again[0].error.code) == ("rejected", "validation_failed")


def test_a_mutation_that_crashes_ends_the_batch_and_the_rest_run_alone_in_order(
    user, board, monkeypatch, caplog
):
    """An unexpected error inside the batch rolls back only that mutation's savepoint;
    what came before commits, and it and the ones after it are applied one by one, in
    order (here it succeeds the second time)."""
    run = writer.Writer.run
    crashed: list[str] = []

    def flaky(self: writer.Writer) -> Any:
        if self.mutation.fields.get("title") == "flaky" and not crashed:
            # Write first, so that the rollback has something to undo.
            Card.objects.create(board_id=self.mutation.fields["board"], title="half")
            crashed.append("once")
            raise RuntimeError("boom")
        return run(self)

    monkeypatch.setattr(writer.Writer, "run", flaky)
    layer, channel = subscribe(f"board:{board.pk}")
    batch = [new_card(board, "a"), new_card(board, "flaky"), new_card(board, "c")]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * 3
    assert "and the 1 after it run alone" in caplog.text
    assert not Card.objects.filter(title="half").exists()
    stored = ops(f"board:{board.pk}")
    assert [op.seq for op in stored] == [1, 2, 3]
    assert [op.mutation_id for op in stored] == [m.id for m in batch]
    assert [r.seq for r in results] == [1, 2, 3]
    messages = [receive(layer, channel) for _ in range(3)]
    assert [(m["first"], m["last"]) for m in messages] == [(1, 1), (2, 2), (3, 3)]
    assert IdempotencyRecord.objects.filter(status="done").count() == 3


def test_a_later_mutation_that_builds_on_a_failed_one_is_not_applied_before_it(
    user, board, monkeypatch
):
    """[create T, update T] where the create fails once inside the batch: the update must
    not run first (it would find no T), and both end applied."""
    run = writer.Writer.run
    crashed: list[str] = []

    def flaky(self: writer.Writer) -> Any:
        if self.mutation.op == "create" and not crashed:
            crashed.append("once")
            raise RuntimeError("deadlock detected")
        return run(self)

    monkeypatch.setattr(writer.Writer, "run", flaky)
    create = new_card(board, "first")
    update = mutation(
        stream=create.stream,
        model="testapp.card",
        pk=create.pk,
        op="update",
        fields={"title": "second"},
        base_version=1,
    )
    results = apply([create, update], user)
    assert [r.status for r in results] == ["applied", "applied"], results
    assert Card.objects.get(pk=create.pk).title == "second"


def test_a_repeated_id_in_one_batch_is_applied_once(user, board):
    card = new_card(board, "once")
    results = apply([card, card, new_card(board, "b")], user)
    assert [r.status for r in results] == ["applied"] * 3
    assert results[0] == results[1]
    assert Op.objects.filter(mutation_id=card.id).count() == 1


def test_a_batch_that_cannot_commit_is_applied_one_by_one(user, board, monkeypatch, caplog):
    calls: list[int] = []
    coalesced = broadcast.coalesced

    def failing_once(using: str) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the batch transaction failed")
        return coalesced(using)

    monkeypatch.setattr(broadcast, "coalesced", failing_once)
    batch = [new_card(board, f"t{i}") for i in range(3)]
    results = apply(batch, user)
    assert [r.status for r in results] == ["applied"] * 3
    assert "applying it one by one" in caplog.text
    assert [op.mutation_id for op in ops(f"board:{board.pk}")] == [m.id for m in batch]
    assert IdempotencyRecord.objects.filter(status="in_progress").count() == 0


def test_a_batch_retried_whole_gets_the_stored_results(user, board):
    batch = [new_card(board, f"t{i}") for i in range(5)]
    first = apply(batch, user)
    again = apply(batch, user)
    assert again == first
    assert len(ops(f"board:{board.pk}")) == 5


def test_a_batch_of_big_ops_goes_out_in_messages_a_connection_can_be_paced_by(
    user, board, settings
):
    """Runs are at most OUTBOX_BYTES / 4 of encoded ops: a connection that stopped
    reading meets its bound between them (tests/live/test_slow_consumer.py)."""
    settings.SYNCAPP = {**settings.SYNCAPP, "OUTBOX_BYTES": 16 * 1024}
    layer, channel = subscribe(f"board:{board.pk}")
    batch = [new_card(board, "t", body="x" * 1500) for _ in range(6)]
    assert [r.status for r in apply(batch, user)] == ["applied"] * 6
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1]["last"] < 6:
        messages.append(receive(layer, channel))
    assert nothing_waiting(layer, channel)
    assert len(messages) > 1
    assert all(sum(len(text) for text in m["ops"]) <= 4 * 1024 for m in messages)
    bounds = [(m["first"], m["last"]) for m in messages]
    assert bounds[0][0] == 1
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(bounds))
