"""Record an op for every ORM write to a synced model, in the writer's transaction.

Each write path locks the rows it changes, compares them with what the database holds,
stamps the row's sync metadata (version, per-field clocks and versions, stream) and
appends the ops. Rows are always locked before the streams' head rows (which
``oplog.append`` locks), so writers agree on the order. Deletes are in ``deletes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import connections, models, router, transaction
from django.db.models import signals

from syncapp import clocks, oplog, registry
from syncapp.clocks import Stamp
from syncapp.exceptions import UnsupportedWrite

if TYPE_CHECKING:
    from syncapp.mixins import SyncModel
    from syncapp.registry import SyncSpec

META_FIELDS = registry.INTERNAL_FIELDS
# Keeps "pk IN (...)" under SQLite's bound-parameter limit on large bulk writes.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Prior:
    """A row as the database held it before this write (read under a row lock)."""

    values: dict[str, Any]  # every concrete field, by attname
    stream: str
    version: int
    clocks: dict[str, str]
    field_versions: dict[str, int]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a write to one object will record, decided before the row is written."""

    kind: str  # "create", "update", "move" (delete in the old stream + create in the new)
    changed: frozenset[str]
    old_stream: str


def chunked(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``CHUNK`` (for ``pk IN (...)`` on SQLite)."""
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


_chunks = chunked


def lock_priors(
    model: type[models.Model],
    using: str,
    pks: Sequence[Any],
    within: models.QuerySet[Any] | None = None,
) -> dict[Any, Prior]:
    """Lock the rows ``pks`` and read them; with ``within``, only rows that still match
    that queryset's filter once locked (PostgreSQL re-checks it on a locked row)."""
    concrete = model._meta.concrete_model or model
    attnames = [f.attname for f in concrete._meta.concrete_fields if f.attname not in META_FIELDS]
    # Lock only the synced rows, not rows of tables a filter or an ordering may join.
    of = ("self",) if connections[using].features.has_select_for_update_of else ()
    if within is None:
        base = concrete._base_manager.db_manager(using).all()
    elif within.query.distinct or within.query.combinator:
        base = concrete._base_manager.db_manager(using).filter(pk__in=within.values("pk"))
    else:
        base = within.order_by()
    priors: dict[Any, Prior] = {}
    for chunk in _chunks(list(dict.fromkeys(pks))):
        rows = base.filter(pk__in=chunk).select_for_update(of=of).values(*attnames, *META_FIELDS)
        for row in rows:
            priors[row[concrete._meta.pk.attname]] = Prior(
                values={a: row[a] for a in attnames},
                stream=row["sync_stream"],
                version=row["sync_version"],
                clocks=row["sync_clocks"] or {},
                field_versions=row["sync_field_versions"] or {},
            )
    return priors


def _raw(model: type[models.Model], using: str) -> models.QuerySet[Any]:
    """A plain QuerySet: the writes syncapp makes itself, after it has planned the ops."""
    return models.QuerySet(model=model, using=using)


def _pk(model: type[models.Model], value: Any) -> Any:
    pk_field = model._meta.pk
    assert pk_field is not None
    return pk_field.to_python(value)


def _field_names(spec: SyncSpec, names: Sequence[str]) -> list[str]:
    """Synced field names among ``names``, which may mix names and attnames."""
    wanted = set(names)
    for name in wanted & set(META_FIELDS):
        raise UnsupportedWrite(f"{name} is managed by syncapp and cannot be written directly.")
    return [n for n in spec.fields if n in wanted or spec.concrete[n].attname in wanted]


def _attnames(model: type[models.Model], names: Sequence[str]) -> set[str]:
    """The attnames of the fields ``names`` (names or attnames) name."""
    out = set()
    for name in names:
        field = model._meta.get_field(name)
        out.add(getattr(field, "attname", name))
    return out


def stream_after(obj: SyncModel, prior: Prior | None, written: set[str] | None) -> str:
    """The stream the row will be in once ``obj``'s ``written`` attnames are stored (all of
    them when None). A partial write of a stale instance must not move the object by the
    values it does not write."""
    if prior is None or written is None:
        return oplog.validate_stream_name(obj.get_sync_stream())
    row = type(obj)(**prior.values)
    for attname in written:
        setattr(row, attname, getattr(obj, attname))
    return oplog.validate_stream_name(row.get_sync_stream())


def _changed(
    spec: SyncSpec, obj: models.Model, prior: Prior, names: Sequence[str], before_save: bool
) -> set[str]:
    changed = set()
    for name in names:
        field = spec.concrete[name]
        if before_save and getattr(field, "auto_now", False):
            changed.add(name)  # save() will set it in pre_save()
            continue
        try:
            value = field.to_python(getattr(obj, field.attname))
        except ValidationError:
            changed.add(name)
            continue
        if value != prior.values[field.attname]:
            changed.add(name)
    return changed


def _decode_clocks(raw: Any) -> dict[str, Stamp]:
    out: dict[str, Stamp] = {}
    if isinstance(raw, dict):
        for name, text in raw.items():
            try:
                out[name] = Stamp.decode(text)
            except (ValueError, AttributeError):
                continue
    return out


def plan(
    spec: SyncSpec,
    obj: SyncModel,
    prior: Prior | None,
    names: Sequence[str],
    stream: str,
    *,
    before_save: bool = False,
) -> Plan | None:
    """Stamp ``obj``'s sync metadata for writing ``names`` over ``prior`` so that it lands
    in ``stream``; None if there is no op to record.

    ``before_save`` says ``obj`` is about to be saved (so ``auto_now`` fields will change);
    otherwise it already holds what the database holds.

    A changed field gets a clock newer than the stored one: the clock the caller put on
    ``obj.sync_clocks`` if it is newer (the mutation path does that), else a fresh server
    stamp. A caller's newer clock on an unchanged field is kept too, so that last-writer-
    wins converges even when the winning write repeats the stored value.
    """
    if prior is None or not prior.stream:
        kind, changed, old_stream = "create", set(spec.fields), ""
        base_version, stored, field_versions = (prior.version if prior else 0), {}, {}
    else:
        changed = _changed(spec, obj, prior, names, before_save)
        old_stream = prior.stream
        kind = "move" if prior.stream != stream else "update"
        base_version = prior.version
        stored = _decode_clocks(prior.clocks)
        field_versions = dict(prior.field_versions)
    mine = _decode_clocks(obj.sync_clocks)
    record = bool(changed) or kind != "update"
    version = base_version + 1 if record else base_version
    stamp = None
    if changed:
        latest = max((stored[n] for n in changed if n in stored), default=None)
        stamp = clocks.server_clock().now(after=latest)
    new_clocks: dict[str, str] = {}
    for name in spec.fields:
        old = stored.get(name)
        theirs = mine.get(name)
        newer = theirs if theirs is not None and (old is None or theirs > old) else None
        chosen = (newer or stamp) if name in changed else (newer or old)
        if chosen is not None:
            new_clocks[name] = chosen.encode()
        if name in changed:
            field_versions[name] = version
    obj.sync_stream = stream
    obj.sync_version = version
    obj.sync_clocks = new_clocks
    obj.sync_field_versions = field_versions
    if not record:
        return None
    return Plan(kind=kind, changed=frozenset(changed), old_stream=old_stream)


def drafts(spec: SyncSpec, obj: SyncModel, p: Plan) -> list[oplog.OpDraft]:
    """The ops for a planned write, once the row is written (values as stored)."""
    data = spec.represent(obj)
    pk = str(obj.pk)
    version = obj.sync_version
    if p.kind == "update":
        fields = {n: data[n] for n in spec.fields if n in p.changed}
        return [oplog.OpDraft(obj.sync_stream, spec.label, pk, "update", fields, version)]
    create = oplog.OpDraft(obj.sync_stream, spec.label, pk, "create", data, version)
    if p.kind == "move":
        return [oplog.OpDraft(p.old_stream, spec.label, pk, "delete", {}, version), create]
    return [create]


def save(obj: SyncModel, parent_save: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``SyncModel.save()``: write the row and its op in one transaction."""
    model = type(obj)
    spec = registry.spec_for(model)
    using = kwargs.get("using") or router.db_for_write(model, instance=obj)
    update_fields = kwargs.get("update_fields")
    names = list(spec.fields) if update_fields is None else _field_names(spec, list(update_fields))
    written = None if update_fields is None else _attnames(model, list(update_fields))
    with transaction.atomic(using=using, savepoint=False):
        prior = None
        # A forced insert has no prior row: were there one, the insert fails and rolls back.
        if obj.pk is not None and not kwargs.get("force_insert"):
            prior = lock_priors(model, using, [obj.pk]).get(_pk(model, obj.pk))
        stream = stream_after(obj, prior, written)
        p = plan(spec, obj, prior, names, stream, before_save=True)
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, *META_FIELDS}
        parent_save(*args, **kwargs)
        if p is not None:
            oplog.append(drafts(spec, obj, p), using)


def update_queryset(qs: models.QuerySet[Any], kwargs: dict[str, Any]) -> int:
    """``SyncQuerySet.update()``: update the rows, then record an op for each changed one."""
    model = qs.model
    spec = registry.spec_for(model)
    using = qs.db
    _field_names(spec, list(kwargs))
    if qs.query.is_sliced:
        raise TypeError("Cannot update a query once a slice has been taken.")
    with transaction.atomic(using=using, savepoint=False):
        # Every row is locked before any stream, and only rows that still match count.
        pks = list(qs.order_by().values_list("pk", flat=True))
        priors = lock_priors(model, using, pks, within=qs)
        count = 0
        objs: list[SyncModel] = []
        for chunk in _chunks(list(priors)):
            rows = _raw(model, using).filter(pk__in=chunk)
            count += rows.update(**kwargs)
            objs.extend(rows)
        planned = [
            (obj, plan(spec, obj, priors[obj.pk], spec.fields, stream_after(obj, None, None)))
            for obj in objs
        ]
        recorded = [obj for obj, p in planned if p is not None]
        if recorded:
            _raw(model, using).bulk_update(recorded, list(META_FIELDS))
        oplog.append(
            [d for obj, p in planned if p is not None for d in drafts(spec, obj, p)], using
        )
    return count


def bulk_create(
    qs: models.QuerySet[Any], objs: list[SyncModel], batch_size: int | None
) -> list[Any]:
    """``SyncQuerySet.bulk_create()``: insert the rows and record a create op for each."""
    spec = registry.spec_for(qs.model)
    using = qs.db
    with transaction.atomic(using=using, savepoint=False):
        plans = [plan(spec, obj, None, spec.fields, stream_after(obj, None, None)) for obj in objs]
        created = _raw(qs.model, using).bulk_create(objs, batch_size=batch_size)
        if any(obj.pk is None for obj in objs):
            raise UnsupportedWrite(
                "The database did not return the primary keys of bulk-created rows; "
                "give the model a client-side default primary key (UUIDField(default=uuid4))."
            )
        oplog.append(
            [d for obj, p in zip(objs, plans, strict=True) if p for d in drafts(spec, obj, p)],
            using,
        )
    return created


def bulk_update(
    qs: models.QuerySet[Any], objs: list[SyncModel], fields: list[str], batch_size: int | None
) -> int:
    """``SyncQuerySet.bulk_update()``: update the rows and record an op for each change."""
    model = qs.model
    spec = registry.spec_for(model)
    using = qs.db
    names = _field_names(spec, fields)
    written = _attnames(model, fields)
    with transaction.atomic(using=using, savepoint=False):
        priors = lock_priors(model, using, [obj.pk for obj in objs if obj.pk is not None])
        planned = []
        for obj in objs:
            prior = priors.get(_pk(model, obj.pk)) if obj.pk is not None else None
            if prior is not None:
                stream = stream_after(obj, prior, written)
                planned.append((obj, plan(spec, obj, prior, names, stream)))
        rows = _raw(model, using).bulk_update(objs, [*fields, *META_FIELDS], batch_size=batch_size)
        oplog.append(
            [d for obj, p in planned if p is not None for d in drafts(spec, obj, p)], using
        )
    return rows


def bulk_insertable(model: type[models.Model]) -> bool:
    """Whether :func:`insert_new` does for new objects of ``model`` all that saving each
    one would: the model keeps ``SyncModel.save()``, has no multi-table parents, and
    nothing listens to its ``pre_save`` or ``post_save``."""
    from syncapp.mixins import SyncModel

    return bool(
        getattr(model, "save", None) is SyncModel.save
        and not model._meta.parents
        and not signals.pre_save.has_listeners(model)
        and not signals.post_save.has_listeners(model)
    )


def insert_new(spec: SyncSpec, objs: Sequence[SyncModel], using: str) -> list[list[oplog.OpDraft]]:
    """Insert ``objs``, new objects of one :func:`bulk_insertable` model, with one INSERT;
    return the ops of each, to append in the same transaction. Set-wise what ``save()``
    does for each: stamp the sync metadata of a create, write the row, describe it as
    stored. Nothing is read first (``save()`` would read each row under a lock): a primary
    key that is taken fails the INSERT, and the caller runs its savepoint back."""
    plans = [
        plan(spec, obj, None, spec.fields, stream_after(obj, None, None), before_save=True)
        for obj in objs
    ]
    with oplog.server_binding(using):
        _raw(spec.model, using).bulk_create(list(objs))
    return [drafts(spec, obj, p) if p else [] for obj, p in zip(objs, plans, strict=True)]
