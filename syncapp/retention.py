"""Trimming the op log: move a stream's retained floor, then delete what is below it.

The floor moves first, in a short transaction on the stream's row, so a client whose
position is below it gets a ``reset`` even while the old ops are still being deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from syncapp import oplog
from syncapp.models import Op, Stream


@dataclass(frozen=True, slots=True)
class Trimmed:
    """What one stream's trim did."""

    stream: str
    oldest_seq: int
    deleted: int


def floor_for(
    stream: Stream, *, max_age: timedelta | None, max_ops: int | None, now: datetime
) -> int:
    """The new oldest retained seq of ``stream`` under the given limits."""
    floor = stream.oldest_seq
    if max_ops is not None:
        floor = max(floor, stream.head - max_ops + 1)
    if max_age is not None:
        last_old = Op.objects.filter(stream=stream, created_at__lt=now - max_age).aggregate(
            last=Max("seq")
        )["last"]
        if last_old is not None:
            floor = max(floor, last_old + 1)
    return min(floor, stream.head + 1)


def trim(
    name: str,
    *,
    max_age: timedelta | None,
    max_ops: int | None,
    batch: int = 5000,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> Trimmed:
    """Trim stream ``name`` by age and/or count; ``progress`` hears the running total."""
    using = oplog.db_alias()
    now = now or timezone.now()
    with transaction.atomic(using=using):
        stream = Stream.objects.using(using).select_for_update().get(name=name)
        floor = floor_for(stream, max_age=max_age, max_ops=max_ops, now=now)
        if floor > stream.oldest_seq:
            stream.oldest_seq = floor
            stream.save(update_fields=["oldest_seq"])
    deleted = 0
    while True:
        with transaction.atomic(using=using):
            ids = list(
                Op.objects.using(using)
                .filter(stream=stream, seq__lt=stream.oldest_seq)
                .order_by("seq")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                break
            deleted += Op.objects.using(using).filter(pk__in=ids).delete()[0]
        if progress is not None:
            progress(deleted)
    return Trimmed(stream.name, stream.oldest_seq, deleted)
