"""The op log: append in the writer's transaction, read history, take snapshots.

This is the only module that assigns seqs and the only one that reads history; the
transports call :func:`read` and :func:`snapshot`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from syncapp import broadcast, context, registry
from syncapp.encoding import encode_op
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


@contextlib.contextmanager
def server_binding(using: str) -> Iterator[None]:
    """Statements run in this block bind their parameters on the server (PostgreSQL with
    psycopg 3), arrays in binary: the values go apart from the SQL text instead of being
    quoted into it one by one on the client (Django's default cursor), and a text array
    is not escaped element by element. For the few large statements syncapp writes
    itself, whose values go as one array per column (a batch's rows, its ops, its
    results): quoting thousands of values client-side cost more than the statement.
    Prepared statements stay as the settings have them (``prepare_threshold``; Django's
    default is none, for connection poolers). Anywhere else, nothing changes."""
    connection = connections[using]
    factory = _binding_cursor() if connection.vendor == "postgresql" else None
    if factory is None:
        yield
        return
    connection.ensure_connection()
    raw = connection.connection
    if raw is None or not hasattr(raw, "cursor_factory"):
        yield
        return
    before = raw.cursor_factory
    raw.cursor_factory = factory
    try:
        yield
    finally:
        raw.cursor_factory = before


_binding: list[Any] = []


def _binding_cursor() -> Any:
    """The cursor class of :func:`server_binding`; None without psycopg 3."""
    if not _binding:
        try:
            from django.db.backends.postgresql.base import ServerBindingCursor
            from psycopg.types.array import ListBinaryDumper
        except ImportError:
            _binding.append(None)
        else:
            parent: Any = ServerBindingCursor

            class BindingCursor(parent):  # type: ignore[misc]
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    # Registered last, so ``%s`` dumps a list in binary (arrays are the
                    # point: a text array is escaped element by element).
                    self.adapters.register_dumper(list, ListBinaryDumper)

            _binding.append(BindingCursor)
    return _binding[0]


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


def _make_stream(name: str, using: str) -> None:
    """Insert the stream's head row at its genesis epoch, unless someone already has."""
    Stream.objects.using(using).bulk_create(
        [Stream(name=name, epoch=genesis_epoch(name))], ignore_conflicts=True
    )


def ensure_stream(name: str, using: str | None = None, *, lock: bool = False) -> Stream:
    """The stream's head row, created if missing (safe against concurrent creators);
    with ``lock``, locked until the transaction ends."""
    using = using or db_alias()
    rows = Stream.objects.using(using)
    if lock:
        rows = rows.select_for_update()
    stream = rows.filter(name=name).first()
    if stream is None:
        _make_stream(name, using)
        stream = rows.get(name=name)
    return stream


def _lock_stream(name: str, using: str) -> Stream:
    # The row lock is held until commit: it serializes the writers of one stream, so
    # seqs are taken and committed in the same order. Other streams are not touched.
    return ensure_stream(name, using, lock=True)


def _updates_returning(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``UPDATE ... RETURNING`` works on ``connection``: PostgreSQL, and SQLite
    from 3.35, the version that brought ``RETURNING`` to inserts and updates alike."""
    if connection.vendor == "postgresql":
        return True
    return bool(
        connection.vendor == "sqlite" and connection.features.can_return_columns_from_insert
    )


def _converted(
    connection: BaseDatabaseWrapper, fields: Sequence[Any], row: Sequence[Any]
) -> list[Any]:
    """A raw row's values as the ORM would read them (SQLite returns datetimes as text)."""
    values = []
    for field, value in zip(fields, row, strict=True):
        col = field.get_col(field.model._meta.db_table)
        for convert in connection.ops.get_db_converters(col) + col.get_db_converters(connection):
            value = convert(value, col, connection)
        values.append(value)
    return values


def _move_head(name: str, count: int, using: str) -> Stream | None:
    """``UPDATE ... RETURNING`` the stream's head ``count`` seqs on; None if it has no row."""
    connection = connections[using]
    fields = Stream._meta.concrete_fields
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(Stream._meta.db_table)} SET head = head + %s WHERE name = %s "
            f"RETURNING {', '.join(quote(str(f.column)) for f in fields)}",
            [count, name],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return Stream.from_db(using, [f.attname for f in fields], _converted(connection, fields, row))


def _take_seqs(name: str, count: int, using: str) -> Stream:
    """Lock the stream's head row and move its head ``count`` seqs on; the row as it now
    is (the seqs taken end at its head). Where the database has ``UPDATE ... RETURNING``
    (PostgreSQL, SQLite 3.35+) one statement, which holds the row lock (PostgreSQL) or
    the write lock (SQLite) until commit as :func:`_lock_stream` does (for a stream
    nobody has written yet, its row is made between two such); elsewhere lock, read,
    then write."""
    connection = connections[using]
    if _updates_returning(connection):
        stream = _move_head(name, count, using)
        if stream is None:  # nobody has written it yet: make its row, then move its head
            _make_stream(name, using)
            stream = _move_head(name, count, using)
        if stream is None:
            raise RuntimeError(f"The head row of stream {name!r} could not be made.")
        return stream
    stream = _lock_stream(name, using)
    stream.head += count
    stream.save(update_fields=["head"])
    return stream


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
        stream = _take_seqs(validate_stream_name(name), len(batch), using)
        first = stream.head - len(batch) + 1
        ops = [
            _op(stream, first + i, d, d.attribution or current, now)
            for i, (_, d) in enumerate(batch)
        ]
        _insert_ops(ops, using)
        broadcast.after_commit(stream.name, stream.epoch, ops, using)
        appended.extend((index, op) for (index, _), op in zip(batch, ops, strict=True))
    result = [op for _, op in sorted(appended, key=lambda item: item[0])]
    context.note_appended(result)
    return result


# Every column of an op; ``id`` comes back from the database.
_OP_FIELDS = (
    "stream",
    "seq",
    "model",
    "object_pk",
    "kind",
    "fields",
    "version",
    "mutation_id",
    "actor",
    "client_id",
    "source",
    "created_at",
    "encoded",
)
# Columns whose values the driver takes as they are (ints and strings); the others go
# through their field's ``get_db_prep_save``, as ``bulk_create`` would send them.
_OP_PLAIN = frozenset(
    {"stream", "seq", "model", "object_pk", "kind", "version", "client_id", "source", "encoded"}
)


def _insert_ops(ops: list[Op], using: str) -> None:
    """Insert ``ops`` (of one stream) as ``bulk_create`` would; on PostgreSQL with one
    ``INSERT ... SELECT ... FROM unnest(...)``, bound on the server
    (:func:`server_binding`), without the ORM's per-value compilation: one array per
    column whose values differ, one value for a column that is the same for every op
    (its stream, model, kind, time, attribution: most columns of a batch's ops)."""
    connection = connections[using]
    if len(ops) < 2 or connection.vendor != "postgresql" or _binding_cursor() is None:
        Op.objects.using(using).bulk_create(ops)
        return
    by_name = {field.name: field for field in Op._meta.concrete_fields}
    fields = [by_name[name] for name in _OP_FIELDS]
    quote = connection.ops.quote_name
    selected: list[str] = []
    scalars: list[Any] = []
    unnested: list[str] = []
    arrays: list[list[Any]] = []
    for field in fields:
        values = [getattr(op, field.attname) for op in ops]
        if field.name == "fields":
            # The JSON text Django's adapter would write (``json.dumps(value,
            # cls=encoder)``), made by one encoder for all; the column's cast parses it.
            encode = (field.encoder or json.JSONEncoder)().encode  # type: ignore[attr-defined]
            values = [None if v is None else encode(field.get_prep_value(v)) for v in values]
        elif field.name not in _OP_PLAIN:
            # Once per distinct object: the ops of a write share their timestamp.
            prepared: dict[int, Any] = {}
            for value in values:
                if id(value) not in prepared:
                    prepared[id(value)] = field.get_db_prep_save(value, connection)
            values = [prepared[id(value)] for value in values]
        cast = str(field.db_type(connection)).split("(")[0]
        first = values[0]
        if field.name != "seq" and all(v is first or v == first for v in values):
            selected.append(f"%s::{cast}")
            scalars.append(first)
        else:
            column = f"c{len(arrays)}"
            selected.append(f"v.{column}")
            unnested.append(f"%s::{cast}[]")
            arrays.append(values)
    names = ", ".join(quote(str(field.column)) for field in fields)
    columns = ", ".join(f"c{i}" for i in range(len(arrays)))
    pk = Op._meta.pk
    assert pk is not None
    with server_binding(using), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(Op._meta.db_table)} ({names}) "
            f"SELECT {', '.join(selected)} FROM unnest({', '.join(unnested)}) AS v({columns}) "
            f"RETURNING {quote(str(pk.column))}, seq",
            [*scalars, *arrays],
        )
        ids = {seq: id_ for id_, seq in cursor.fetchall()}
    for op in ops:
        op.pk = ids[op.seq]
        op._state.adding = False
        op._state.db = using


@functools.cache
def _op_columns() -> tuple[str, ...]:
    """The attnames of an op's columns, in the order ``Op()`` takes them positionally."""
    return tuple(field.attname for field in Op._meta.concrete_fields)


def _op(stream: Stream, seq: int, d: OpDraft, by: context.Attribution, now: Any) -> Op:
    values = {
        "id": None,
        "stream_id": stream.pk,
        "seq": seq,
        "model": d.model,
        "object_pk": d.object_pk,
        "kind": d.kind,
        "fields": d.fields,
        "version": d.version,
        "mutation_id": by.mutation_id,
        "actor_id": by.actor_id,
        "client_id": by.client_id,
        "source": by.source,
        "created_at": now,
        "encoded": "",
    }
    # Positional values: Model.__init__ then skips its keyword handling, which cost more
    # than the rest of making an op (an op per mutation, a hundred per batch).
    positional: Any = [values[name] for name in _op_columns()]
    op = Op(*positional)
    Op.stream.field.set_cached_value(op, stream)
    # Encoded once, here: the broadcast after commit and every later read send this text.
    op.encoded = encode_op(op, stream.name, stream.epoch)
    return op


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


@dataclass(frozen=True, slots=True)
class RowPage:
    """Ops of one stream after a position as the database driver returns them: one-tuples
    of the op's JSON text (``Op.encoded``; on SQLite its UTF-8 bytes, which the driver
    returns without decoding them), the first of seq ``first``, the others in seq order
    after it (seqs have no gaps); ``head`` is the stream's head, read after the rows."""

    stream: str
    epoch: str
    head: int
    first: int
    rows: list[tuple[str | bytes]]


def read_rows(name: str, *, epoch: str, after: int, limit: int) -> RowPage:
    """The ops of stream ``name`` after seq ``after``, oldest first, at most ``limit``, as
    their JSON text rather than model instances: for readers that send thousands at a time
    (the SSE catch-up). One query for the rows, then one for the head row.

    Raises :class:`ResetRequired` as :func:`read` does. The head row is read after the
    rows, and epochs never come back, so rows of another epoch are never returned.
    """
    using = db_alias()
    validate_stream_name(name)
    if after < 0:
        raise InvalidInput("`after` must be >= 0.", code="invalid_position")
    statements = _row_statements(using)
    head: tuple[str, int] | None = None  # (epoch, head) of the stream
    if statements is None:
        rows = _orm_rows(name, after, limit, using)
    else:
        # The two statements written once per database: building them through the ORM
        # cost more than reading a thousand rows.
        with connections[using].cursor() as cursor:
            cursor.execute(statements[0], (name, after, after + limit))
            rows = cursor.fetchall()
            cursor.execute(statements[1], (name,))
            head = cursor.fetchone()
    if not rows or head is None:
        # Without rows the position itself is checked, on the head row as read() has it
        # (an unsaved empty one for a stream nobody wrote to).
        stream = head_of(name, using)
        if not rows:
            _check_position(stream, epoch, after)
        head = (stream.epoch, stream.head)
    current, last = head
    if current != epoch:
        raise ResetRequired(name, current, "epoch_changed")
    # Seqs are unique: a first and a last that span as many seqs as there are rows mean no
    # gap. Anything else was trimmed meanwhile.
    if rows and (_seq_of(rows[0][0]), _seq_of(rows[-1][0])) != (after + 1, after + len(rows)):
        raise ResetRequired(name, current, "trimmed")
    return RowPage(name, current, max(last, after + len(rows)), after + 1, rows)


def _seq_of(encoded: str | bytes) -> int:
    """The seq of an op from its JSON text (or its bytes). The first ``"seq":`` is the
    op's own: the stream's name and epoch before it hold no quotes."""
    text = encoded.decode() if isinstance(encoded, bytes) else encoded
    try:
        start = text.index('"seq":') + 6
        return int(text[start : text.index(",", start)])
    except ValueError as exc:
        raise RuntimeError(
            f"An op holds no encoded JSON ({text[:60]!r}): ops are written by "
            "syncapp.oplog.append, never as Op rows by hand."
        ) from exc


def _orm_rows(name: str, after: int, limit: int, using: str) -> list[tuple[str | bytes]]:
    """:func:`read_rows`' rows through the ORM, on a database without
    :func:`_row_statements`."""
    from django.db.models import Subquery

    # The stream's id in a subquery rather than a join: the rows can come in the order of
    # the (stream, seq) index.
    stream_id = Subquery(Stream.objects.using(using).filter(name=name).values("pk")[:1])
    queryset = (
        Op.objects.using(using)
        # Seqs have no gaps: the page is a range, which the planner sees without statistics.
        .filter(stream_id=stream_id, seq__gt=after, seq__lte=after + limit)
        .order_by("seq")
        .values_list("encoded")[:limit]
    )
    return list(queryset)


@functools.lru_cache(maxsize=8)
def _row_statements(alias: str) -> tuple[str, str] | None:
    """The SQL of :func:`read_rows` on database ``alias``: the rows of a seq range
    (parameters: the stream's name, after, the range's end), then the head row
    (parameter: the name); None on a database other than SQLite and PostgreSQL (the
    rows then come through :func:`_orm_rows`)."""
    connection = connections[alias]
    if connection.vendor not in ("sqlite", "postgresql"):
        return None
    name = connection.ops.quote_name

    def op(field: str) -> str:
        return name(_column(Op, field))

    def head(field: str) -> str:
        return name(_column(Stream, field))

    # The JSON text alone: the seqs follow from the position (read_rows checks the first
    # and the last), and a column of ints cost a fifth of the read. SQLite hands the text
    # over as the bytes it stores (a BLOB), which are what the page is sent as: decoding
    # each op and encoding the page again cost a quarter of reading and formatting it.
    # (PostgreSQL's text protocol sends a bytea as hex: slower than the text.)
    seq, streams = op("seq"), name(Stream._meta.db_table)
    encoded = f"CAST({op('encoded')} AS BLOB)" if connection.vendor == "sqlite" else op("encoded")
    rows = (
        f"SELECT {encoded} "
        f"FROM {name(Op._meta.db_table)} WHERE {op('stream')} = "
        f"(SELECT {head('id')} FROM {streams} WHERE {head('name')} = %s) "
        f"AND {seq} > %s AND {seq} <= %s ORDER BY {seq}"
    )
    stream = f"SELECT {head('epoch')}, {head('head')} FROM {streams} WHERE {head('name')} = %s"
    return rows, stream


def _column(model: Any, field: str) -> str:
    column = model._meta.get_field(field).column
    assert isinstance(column, str)
    return column
