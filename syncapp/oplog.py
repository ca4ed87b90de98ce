"""The op log: append in the writer's transaction, read history, take snapshots.

This is the only module that assigns seqs and the only one that reads history; the
transports call :func:`read` and :func:`snapshot`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from django.db import connections, router, transaction
from django.utils import timezone

from syncapp import broadcast, context, registry
from syncapp.exceptions import InvalidInput, ResetRequired
from syncapp.models import Op, OpKind, Stream, new_epoch


@dataclass(frozen=True, slots=True)
class OpDraft:
    """An op before it has a seq. ``attribution`` is where it came from, when not from the
    attribution current at :func:`append` (a batch appends many mutations' ops at once)."""

    stream: str
    model: str
    object_pk: str
    kind: OpKind
    fields: dict[str, Any]
    version: int
    attribution: context.Attribution | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Ops of one stream after a position: ``{stream, epoch, head, ops}``."""

    stream: str
    epoch: str
    head: int
    ops: list[Op]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every object of a stream as of ``seq``."""

    stream: str
    epoch: str
    seq: int
    objects: list[dict[str, Any]]


def validate_stream_name(name: str) -> str:
    """Return ``name`` if it is a valid stream name, else raise :class:`InvalidInput`."""
    if not isinstance(name, str) or not registry.STREAM_NAME.match(name):
        raise InvalidInput(
            f"Invalid stream name {name!r}: 1 to 200 characters of A-Z a-z 0-9 _ . : -",
            code="invalid_stream",
        )
    return name


def db_alias() -> str:
    """The database that holds the op log."""
    return router.db_for_write(Op) or "default"


def genesis_epoch(name: str) -> str:
    """The first epoch of a stream: derived from its name, so a stream that nobody has
    written yet has the same epoch before and after its first write, and reads need not
    create it. Resets move to random epochs (:func:`syncapp.models.new_epoch`)."""
    return hashlib.blake2s(name.encode(), digest_size=8).hexdigest()


def head_of(name: str, using: str | None = None) -> Stream:
    """The stream's head row; an unsaved empty one if nobody has written to it yet."""
    using = using or db_alias()
    stream = Stream.objects.using(using).filter(name=name).first()
    return stream or Stream(name=name, epoch=genesis_epoch(name))


def ensure_stream(name: str, using: str | None = None, *, lock: bool = False) -> Stream:
    """The stream's head row, created if missing (safe against concurrent creators);
    with ``lock``, locked until the transaction ends."""
    using = using or db_alias()
    rows = Stream.objects.using(using)
    if lock:
        rows = rows.select_for_update()
    stream = rows.filter(name=name).first()
    if stream is None:
        Stream.objects.using(using).bulk_create(
            [Stream(name=name, epoch=genesis_epoch(name))], ignore_conflicts=True
        )
        stream = rows.get(name=name)
    return stream


def _lock_stream(name: str, using: str) -> Stream:
    # The row lock is held until commit: it serializes the writers of one stream, so
    # seqs are taken and committed in the same order. Other streams are not touched.
    return ensure_stream(name, using, lock=True)


def append(drafts: Sequence[OpDraft], using: str | None = None) -> list[Op]:
    """Record ``drafts`` in the current transaction; broadcast them after it commits.

    Must run inside ``transaction.atomic``: the ops commit or roll back with the change.
    """
    using = using or db_alias()
    if not drafts:
        return []
    if not connections[using].in_atomic_block:
        raise RuntimeError("oplog.append() must run inside transaction.atomic().")
    current = context.current()
    now = timezone.now()
    appended: list[tuple[int, Op]] = []
    # Streams are locked in name order, so two bulk writes cannot deadlock on them; within
    # a stream the drafts keep their order.
    indexed = sorted(enumerate(drafts), key=lambda item: (item[1].stream, item[0]))
    for name, group in groupby(indexed, key=lambda item: item[1].stream):
        batch = list(group)
        stream = _lock_stream(validate_stream_name(name), using)
        first = stream.head + 1
        stream.head += len(batch)
        stream.save(update_fields=["head"])
        ops = [
            _op(stream, first + i, d, d.attribution or current, now)
            for i, (_, d) in enumerate(batch)
        ]
        Op.objects.using(using).bulk_create(ops)
        broadcast.after_commit(stream.name, stream.epoch, ops, using)
        appended.extend((index, op) for (index, _), op in zip(batch, ops, strict=True))
    result = [op for _, op in sorted(appended, key=lambda item: item[0])]
    context.note_appended(result)
    return result


def _op(stream: Stream, seq: int, d: OpDraft, by: context.Attribution, now: Any) -> Op:
    return Op(
        stream=stream,
        seq=seq,
        model=d.model,
        object_pk=d.object_pk,
        kind=d.kind,
        fields=d.fields,
        version=d.version,
        mutation_id=by.mutation_id,
        actor_id=by.actor_id,
        client_id=by.client_id,
        source=by.source,
        created_at=now,
    )


def _check_position(stream: Stream, epoch: str | None, after: int) -> None:
    if epoch is not None and epoch != stream.epoch:
        raise ResetRequired(stream.name, stream.epoch, "epoch_changed")
    if after > stream.head:
        raise ResetRequired(stream.name, stream.epoch, "ahead_of_head")
    if after < stream.oldest_seq - 1:
        raise ResetRequired(stream.name, stream.epoch, "trimmed")


def read(name: str, *, epoch: str | None, after: int, limit: int) -> Page:
    """The ops of stream ``name`` after seq ``after``, oldest first, at most ``limit``.

    Raises :class:`ResetRequired` when the position is from another epoch, beyond the
    head, or older than the retained history.
    """
    using = db_alias()
    stream = head_of(validate_stream_name(name), using)
    if after < 0:
        raise InvalidInput("`after` must be >= 0.", code="invalid_position")
    _check_position(stream, epoch, after)
    if stream._state.adding:  # nobody has written to it yet
        return Page(stream.name, stream.epoch, 0, [])
    ops = list(Op.objects.using(using).filter(stream=stream, seq__gt=after).order_by("seq")[:limit])
    head = max(stream.head, ops[-1].seq if ops else 0)
    if ops and ops[0].seq != after + 1:
        # Trimmed between the check above and the read.
        raise ResetRequired(stream.name, stream.epoch, "trimmed")
    return Page(stream.name, stream.epoch, head, ops)


def snapshot(name: str) -> Snapshot:
    """Every object of stream ``name`` exactly as of one seq (invariant 6)."""
    using = db_alias()
    validate_stream_name(name)
    connection = connections[using]
    outermost = not connection.in_atomic_block
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql" and not outermost:
            # Inside someone's transaction (ATOMIC_REQUESTS, say): hold the stream's
            # writers off until it ends instead. A lock needs the row to exist.
            stream = ensure_stream(name, using, lock=True)
        else:
            if connection.vendor == "postgresql":
                # One MVCC snapshot for the head and every object query.
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # SQLite transactions are serializable: writers wait for this one.
            stream = head_of(name, using)
        objects: list[dict[str, Any]] = []
        for model in registry.synced_models():
            spec = registry.spec_for(model)
            queryset = model._base_manager.using(using).filter(sync_stream=name).order_by("pk")
            objects.extend(spec.object_dict(obj) for obj in queryset)
    return Snapshot(stream.name, stream.epoch, stream.head, objects)


def reset(name: str) -> Stream:
    """Start a new epoch for stream ``name``: its history is dropped, old positions reset."""
    using = db_alias()
    with transaction.atomic(using=using):
        stream = _lock_stream(validate_stream_name(name), using)
        Op.objects.using(using).filter(stream=stream).delete()
        stream.epoch = new_epoch()
        stream.head = 0
        stream.oldest_seq = 1
        stream.save(update_fields=["epoch", "head", "oldest_seq"])
    return stream


ROW_COLUMNS = (
    "seq",
    "model",
    "object_pk",
    "kind",
    "version",
    "mutation_id",
    "created_at",
    "fields",
)


@dataclass(frozen=True, slots=True)
class RowPage:
    """Ops of one stream after a position as the database driver returns them: tuples of
    :data:`ROW_COLUMNS`, ``mutation_id``, ``created_at`` and ``fields`` as the database
    writes them as text (a UUID with or without dashes, a timestamp in UTC or with its
    offset, JSON); ``head`` is the stream's head, read after the rows."""

    stream: str
    epoch: str
    head: int
    rows: list[tuple[Any, ...]]


def read_rows(name: str, *, epoch: str, after: int, limit: int) -> RowPage:
    """The ops of stream ``name`` after seq ``after``, oldest first, at most ``limit``, as
    rows rather than model instances: for readers that encode thousands at a time (the
    SSE catch-up). One query for the rows, then one for the head row.

    Raises :class:`ResetRequired` as :func:`read` does. The head row is read after the
    rows, and epochs never come back, so rows of another epoch are never returned.
    """
    using = db_alias()
    validate_stream_name(name)
    if after < 0:
        raise InvalidInput("`after` must be >= 0.", code="invalid_position")
    from django.db.models import Subquery, TextField
    from django.db.models.functions import Cast

    # The stream's id in a subquery rather than a join: the rows can come in the order of
    # the (stream, seq) index.
    stream_id = Subquery(Stream.objects.using(using).filter(name=name).values("pk")[:1])
    queryset = (
        Op.objects.using(using)
        # Seqs have no gaps: the page is a range, which the planner sees without statistics.
        .filter(stream_id=stream_id, seq__gt=after, seq__lte=after + limit)
        .annotate(
            mutation_text=Cast("mutation_id", TextField()),
            created_text=Cast("created_at", TextField()),
            fields_text=Cast("fields", TextField()),
        )
        .order_by("seq")
        .values_list(*ROW_COLUMNS[:-3], "mutation_text", "created_text", "fields_text")[:limit]
    )
    sql, params = queryset.query.sql_with_params()
    with connections[using].cursor() as cursor:
        # Straight from the driver: the ORM's per-row converters cost more than the read.
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    stream = head_of(name, using)
    if stream.epoch != epoch:
        raise ResetRequired(stream.name, stream.epoch, "epoch_changed")
    if rows and rows[0][0] != after + 1:
        raise ResetRequired(stream.name, stream.epoch, "trimmed")  # trimmed meanwhile
    if not rows:
        _check_position(stream, epoch, after)
    return RowPage(stream.name, stream.epoch, max(stream.head, rows[-1][0] if rows else 0), rows)
