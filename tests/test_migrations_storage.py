"""Storage settings that migrations give syncapp's tables (PostgreSQL only)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from syncapp import mutations
from syncapp.models import IdempotencyRecord
from tests.helpers import mutation

pytestmark = pytest.mark.django_db


def reloptions(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [table])
        row = cursor.fetchone()
    assert row is not None
    return list(row[0] or [])


def hot_updates(table: str) -> tuple[int, int]:
    """Updates and HOT updates of ``table`` in the current transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s",
            [table],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, 0)


@pytest.mark.postgresql
def test_idempotency_records_leave_room_on_their_page_for_their_result():
    assert "fillfactor=30" in reloptions(IdempotencyRecord._meta.db_table)


@pytest.mark.postgresql
def test_storing_a_batchs_results_is_mostly_hot(user):
    """The results' update stays on the records' pages and adds no index entries."""
    table = IdempotencyRecord._meta.db_table
    before = hot_updates(table)
    batch = [
        mutation(
            stream="boards",
            model="testapp.board",
            pk=str(uuid.uuid4()),
            op="create",
            fields={"name": f"board {i}"},
        )
        for i in range(100)
    ]
    results = mutations.apply(batch, user=user, client_id="c1", source="test")
    assert [r.status for r in results] == ["applied"] * 100
    updated, hot = (after - was for after, was in zip(hot_updates(table), before, strict=True))
    assert updated == 100
    assert hot >= 50, f"{hot} of {updated} updates were HOT"
