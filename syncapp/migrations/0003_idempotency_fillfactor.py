"""Room on each page of the idempotency records for their one update (PostgreSQL).

Every record is inserted small (in progress) and updated once, soon after, with its
result, several times its size. With the default fillfactor (100) the page is full, so
the update goes to another page and adds an entry to each of the table's indexes (not a
HOT update). Filling pages to 30% on insert (about 13 records of ~180 bytes) leaves room
for results of up to ~400 bytes each: the updates stay on the page and touch no index
(larger results: as many as fit). Once the old versions are pruned, a page of done
records is about as full as before. Other databases have no fillfactor: nothing to do.
"""

from typing import Any

from django.db import migrations

FILLFACTOR = 30


def _alter(apps: Any, schema_editor: Any, setting: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("syncapp", "IdempotencyRecord")
    table = schema_editor.quote_name(model._meta.db_table)
    schema_editor.execute(f"ALTER TABLE {table} {setting}")


def forwards(apps: Any, schema_editor: Any) -> None:
    _alter(apps, schema_editor, f"SET (fillfactor = {FILLFACTOR})")


def backwards(apps: Any, schema_editor: Any) -> None:
    _alter(apps, schema_editor, "RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("syncapp", "0002_op_mutation_index"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
