"""syncapp's data migrations, run forwards over rows written before them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from syncapp import encoding
from syncapp.models import Op

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("syncapp", "0003_idempotency_fillfactor")]
AFTER = [("syncapp", "0004_op_encoded")]


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


@pytest.fixture
def before_encoded():
    """The database as of 0003, migrated back to the latest afterwards."""
    executor = migrate(BEFORE)
    yield executor.loader.project_state(BEFORE).apps
    migrate(executor.loader.graph.leaf_nodes("syncapp"))


def test_ops_written_before_0004_are_encoded_as_encode_op_does(before_encoded, monkeypatch):
    monkeypatch.setattr("syncapp.migrations.0004_op_encoded.BATCH", 2)  # several batches
    old_stream = before_encoded.get_model("syncapp", "Stream")
    old_op = before_encoded.get_model("syncapp", "Op")
    stream = old_stream.objects.create(name="public:old", epoch="e0", head=5)
    moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    for seq in range(1, 6):
        old_op.objects.create(
            stream=stream,
            seq=seq,
            model="testapp.board" if seq != 3 else "testapp.doc",
            object_pk=str(uuid.uuid4()) if seq != 3 else "42",
            kind="create",
            fields={"name": f"old {seq}", "é": [1, {"b": 2, "a": 1}]},
            version=1,
            mutation_id=uuid.uuid4() if seq != 4 else None,
            created_at=moment,
        )
    migrate(AFTER)
    ops = list(Op.objects.filter(stream__name="public:old").select_related("stream"))
    assert [op.seq for op in ops] == [1, 2, 3, 4, 5]
    for op in ops:
        assert op.encoded == encoding.encode_op(op, "public:old", "e0")
        assert '"epoch":"e0"' in op.encoded


def stream_indexes() -> dict[str, list[str]]:
    """The indexes of the op table (unique ones included) whose first column is
    ``stream_id``: name -> columns."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Op._meta.db_table)
    return {
        name: info["columns"]
        for name, info in constraints.items()
        if (info["index"] or info["unique"])
        and info["columns"]
        and info["columns"][0] == "stream_id"
    }


def test_0005_drops_the_stream_index_the_unique_constraint_makes_redundant():
    assert list(stream_indexes().values()) == [["stream_id", "seq"]]
    executor = migrate([("syncapp", "0004_op_encoded")])
    try:
        before = stream_indexes()
        assert sorted(before.values()) == [["stream_id"], ["stream_id", "seq"]]
        # Rows written before it stay, and so does reading them by stream.
        old_apps = executor.loader.project_state([("syncapp", "0004_op_encoded")]).apps
        stream = old_apps.get_model("syncapp", "Stream").objects.create(name="public:kept")
        old_apps.get_model("syncapp", "Op").objects.create(
            stream=stream,
            seq=1,
            model="testapp.doc",
            object_pk="1",
            kind="create",
            fields={},
            version=1,
            created_at=datetime(2024, 5, 6, tzinfo=UTC),
            encoded="{}",
        )
    finally:
        executor = migrate(executor.loader.graph.leaf_nodes("syncapp"))
    assert list(stream_indexes().values()) == [["stream_id", "seq"]]
    assert list(Op.objects.filter(stream__name="public:kept").values_list("seq", flat=True)) == [1]
