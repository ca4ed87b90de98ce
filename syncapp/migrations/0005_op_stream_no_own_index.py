"""An op's stream needs no index of its own: the ``(stream, seq)`` unique constraint's
index leads with it and serves every query by stream (reads, retention, cascades). Each
op written maintained both.

The index is dropped by name, found by introspection, rather than by ``AlterField``,
which on SQLite copies the whole op table into a new one.
"""

from typing import Any

import django.db.models.deletion
from django.db import migrations, models


def _stream_index_names(op_model: Any, schema_editor: Any) -> list[str]:
    column = op_model._meta.get_field("stream").column
    return list(schema_editor._constraint_names(op_model, [column], index=True, unique=False))


def drop_stream_index(apps: Any, schema_editor: Any) -> None:
    op_model = apps.get_model("syncapp", "Op")
    for name in _stream_index_names(op_model, schema_editor):
        schema_editor.execute(schema_editor._delete_index_sql(op_model, name))


def create_stream_index(apps: Any, schema_editor: Any) -> None:
    op_model = apps.get_model("syncapp", "Op")
    if not _stream_index_names(op_model, schema_editor):
        field = op_model._meta.get_field("stream")
        schema_editor.execute(schema_editor._create_index_sql(op_model, fields=[field]))


class Migration(migrations.Migration):
    dependencies = [
        ("syncapp", "0004_op_encoded"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_stream_index, create_stream_index)],
            state_operations=[
                migrations.AlterField(
                    model_name="op",
                    name="stream",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="ops",
                        to="syncapp.stream",
                    ),
                ),
            ],
        ),
    ]
