"""Each op keeps its encoded JSON: made once when the op is written, then sent as is by
every transport, live or replayed, instead of being encoded again on each read.

Ops written before this migration are encoded here, a thousand at a time, as
``syncapp.encoding.encode_op`` encodes them.
"""

from typing import Any

from django.db import migrations, models

BATCH = 1000


def encode_existing(apps: Any, schema_editor: Any) -> None:
    from syncapp.encoding import encode_op

    op_model = apps.get_model("syncapp", "Op")
    alias = schema_editor.connection.alias
    ops = op_model.objects.using(alias).select_related("stream").order_by("pk")
    last = 0
    while batch := list(ops.filter(pk__gt=last)[:BATCH]):
        for op in batch:
            op.encoded = encode_op(op, op.stream.name, op.stream.epoch)
        op_model.objects.using(alias).bulk_update(batch, ["encoded"])
        last = batch[-1].pk


class Migration(migrations.Migration):
    dependencies = [
        ("syncapp", "0003_idempotency_fillfactor"),
    ]

    operations = [
        migrations.AddField(
            model_name="op",
            name="encoded",
            field=models.TextField(
                default="",
                editable=False,
                help_text="The op as the protocol's JSON, made once when it was written: what "
                "every transport sends for it, live or replayed.",
            ),
            preserve_default=False,
        ),
        migrations.RunPython(encode_existing, migrations.RunPython.noop, elidable=True),
    ]
