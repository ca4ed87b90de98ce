"""Applying one mutation to its object, inside the mutation's transaction: the checks,
the serializer's validation, the conflict policy per field, the write.

Only :mod:`syncapp.mutations` calls :class:`Writer`; :func:`stream_for_create` lets a
transport name the stream of an object it is about to create, with the same validation.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import connections
from rest_framework import exceptions as drf

from syncapp import clocks, conflicts, context, idempotency, permissions
from syncapp.clocks import Stamp
from syncapp.exceptions import MutationRejected, flatten_errors
from syncapp.mixins import SyncModel
from syncapp.models import Conflict, Op
from syncapp.protocol import ErrorInfo, Mutation, MutationResult, ObjectState
from syncapp.registry import SyncSpec


def object_state(
    spec: SyncSpec, instance: SyncModel, fields: dict[str, Any] | None = None
) -> ObjectState:
    """An object as results and snapshots carry it; ``fields``, when given, is
    ``spec.represent(instance)`` already made (by the op of its create, say)."""
    if fields is not None:
        return ObjectState(
            model=spec.label,
            pk=spec.pk_value(instance.pk),
            version=instance.sync_version,
            fields=dict(fields),
        )
    data = spec.object_dict(instance)
    return ObjectState(
        model=data["model"], pk=data["pk"], version=data["version"], fields=data["fields"]
    )


def _check_fields(spec: SyncSpec, fields: dict[str, Any]) -> None:
    unknown = [name for name in fields if name not in spec.fields]
    if unknown:
        raise MutationRejected(
            f"Unknown or unsynced fields: {', '.join(sorted(unknown))}.",
            code="unknown_field",
            fields={name: ["Not a synced field of this model."] for name in unknown},
        )


_serializers = threading.local()


def _serializer(
    spec: SyncSpec, data: Any = None, instance: SyncModel | None = None, partial: bool = False
) -> Any:
    """A serializer of ``spec`` bound to ``data`` and ``instance``.

    The serializer syncapp generates for a model (no ``Sync.serializer``) is built once per
    thread and rebound for each use: building a ModelSerializer's fields costs more than
    validating a mutation with them, and they depend on nothing but the model. A declared
    serializer may depend on anything, so it is built anew each time, as DRF expects.
    """
    cls = spec.serializer_class
    if getattr(getattr(spec.model, "Sync", None), "serializer", None) is not None:
        return cls(instance=instance, data=data, partial=partial)
    cache: dict[type[Any], Any] = _serializers.__dict__.setdefault("by_class", {})
    serializer = cache.get(cls)
    if serializer is None:
        serializer = cache[cls] = cls()
    for attr in ("_validated_data", "_errors", "_data"):
        serializer.__dict__.pop(attr, None)
    serializer.instance = instance
    serializer.initial_data = data
    serializer.partial = partial
    return serializer


def _validate(spec: SyncSpec, data: dict[str, Any], instance: SyncModel | None) -> dict[str, Any]:
    serializer = _serializer(spec, data, instance, partial=instance is not None)
    read_only = [n for n in data if serializer.fields[n].read_only]
    if read_only:
        raise MutationRejected(
            f"Read-only fields: {', '.join(sorted(read_only))}.",
            code="read_only_field",
            fields={name: ["This field is read-only."] for name in read_only},
        )
    if not serializer.is_valid():
        raise MutationRejected(
            "Validation failed.", code="validation_failed", fields=flatten_errors(serializer.errors)
        )
    return {k: v for k, v in serializer.validated_data.items() if k in data}


def _delta(name: str, value: Any, *, allow_plain: bool = False) -> int:
    if allow_plain and isinstance(value, int) and not isinstance(value, bool):
        return value
    delta = value.get("delta") if isinstance(value, dict) and value.keys() == {"delta"} else None
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise MutationRejected(
            f'{name} is a counter: send {{"delta": <integer>}}.',
            code="invalid_delta",
            fields={name: ['Expected {"delta": <integer>}.']},
        )
    return delta


def _counter_value(spec: SyncSpec, name: str, value: int) -> Any:
    """A counter's new value, through the serializer field's validators (ranges, ...)."""
    try:
        return _serializer(spec).fields[name].run_validation(value)
    except drf.ValidationError as exc:
        raise MutationRejected(
            "Validation failed.",
            code="validation_failed",
            fields=flatten_errors({name: exc.detail}),
        ) from exc


def build_new(spec: SyncSpec, fields: dict[str, Any], pk: Any) -> SyncModel:
    """An unsaved object from a create's fields, validated by the model's serializer."""
    _check_fields(spec, fields)
    data = dict(fields)
    counters = {
        n: _delta(n, data.pop(n), allow_plain=True) for n in spec.counter_fields & data.keys()
    }
    values = _validate(spec, data, None)
    values.update({n: _counter_value(spec, n, v) for n, v in counters.items()})
    key = spec.model._meta.pk
    assert key is not None
    # The key as an argument: the model's default key is not made only to be replaced.
    instance = spec.model(**{key.attname: pk})
    instance.pk = pk
    for name, value in values.items():
        setattr(instance, name, value)
    return instance


def stream_for_create(spec: SyncSpec, fields: dict[str, Any]) -> str:
    """The stream an object created with ``fields`` would belong to."""
    return build_new(spec, fields, None).get_sync_stream()


class Writer:
    """Applies one mutation inside its transaction."""

    def __init__(
        self, spec: SyncSpec, mutation: Mutation, user: Any, client_id: str | None, using: str
    ) -> None:
        self.spec = spec
        self.mutation = mutation
        self.user = user
        self.using = using
        self.node = client_id or idempotency.owner_for(user, client_id)

    def run(self) -> MutationResult:
        m = self.mutation
        pk = self.spec.parse_pk(m.pk)
        rows = self.spec.model._base_manager.db_manager(self.using).filter(pk=pk)
        if connections[self.using].features.has_select_for_update:
            rows = rows.select_for_update()
        instance = rows.first()
        if instance is not None:
            # Nothing about an existing object is said to someone who may not read it.
            permissions.check_read(self.user, instance.sync_stream)
        if m.op == "create":
            if instance is not None:
                error = ErrorInfo(code="exists", message="An object with this pk already exists.")
                return self.result("conflict", instance, error)
            return self._create(pk)
        if instance is None:
            return MutationResult(id=m.id, status="gone")
        if instance.sync_stream != m.stream:
            raise MutationRejected(
                f"The object belongs to another stream than {m.stream!r}.", code="wrong_stream"
            )
        permissions.check_write(self.user, m.stream, instance, m)
        if m.op == "delete":
            return self._delete(instance)
        return self._update(instance)

    def _client_clock(self) -> Stamp | None:
        if self.mutation.clock is None:
            return None
        server = clocks.server_clock()
        stamp = server.clamp(
            clocks.parse_wire(self.mutation.clock, self.node), clocks.max_skew_ms()
        )
        server.observe(stamp)
        return stamp

    def prepare_create(self, pk: Any) -> SyncModel:
        """The object a create makes, validated and allowed, not yet saved: everything
        :meth:`run` does for a create of an absent ``pk`` before it writes, and nothing
        that writes (the batch path inserts many such objects at once)."""
        m = self.mutation
        instance = build_new(self.spec, dict(m.fields), pk)
        stream = instance.get_sync_stream()
        if stream != m.stream:
            raise MutationRejected(
                f"This object would belong to {stream!r}, not {m.stream!r}.", code="wrong_stream"
            )
        permissions.check_write(self.user, m.stream, None, m)
        clock = self._client_clock()
        if clock is not None:
            instance.sync_clocks = {name: clock.encode() for name in self.spec.fields}
        return instance

    def _create(self, pk: Any) -> MutationResult:
        instance = self.prepare_create(pk)
        instance.save(using=self.using, force_insert=True)
        return self.result("applied", instance)

    def _delete(self, instance: SyncModel) -> MutationResult:
        m = self.mutation
        if not self.spec.delete_wins:
            if m.base_version is None:
                raise MutationRejected(
                    "Deletes of this model need base_version.", code="base_version_required"
                )
            if instance.sync_version > m.base_version:
                error = ErrorInfo(code="stale", message="The object changed after base_version.")
                return self.result("conflict", instance, error)
        version = instance.sync_version + 1
        instance.delete(using=self.using)
        return MutationResult(id=m.id, status="applied", version=version)

    def _update(self, instance: SyncModel) -> MutationResult:
        m = self.mutation
        _check_fields(self.spec, m.fields)
        counters = self.spec.counter_fields & m.fields.keys()
        values = _validate(
            self.spec, {k: v for k, v in m.fields.items() if k not in counters}, instance
        )
        for name in counters:
            current = getattr(instance, self.spec.concrete[name].attname) or 0
            values[name] = _counter_value(self.spec, name, current + _delta(name, m.fields[name]))
        clock = self._client_clock()
        stored_clocks = dict(instance.sync_clocks or {})
        kept: dict[str, list[str]] = {}
        queued: list[str] = []
        applied: list[str] = []
        changed = False
        for name, value in values.items():
            ctx = self._context(instance, name, value, clock, stored_clocks)
            outcome = conflicts.decide(ctx)
            if isinstance(outcome, conflicts.Apply):
                changed = changed or outcome.value != ctx.server_value
                setattr(instance, name, outcome.value)
                applied.append(name)
                if outcome.clock is not None:
                    instance.sync_clocks[name] = outcome.clock.encode()
            else:
                kept[name] = [outcome.reason]
                if isinstance(outcome, conflicts.Queue):
                    queued.append(name)
        new_stream = instance.get_sync_stream()
        if new_stream != m.stream:
            permissions.check_write(self.user, new_stream, instance, m)
        if applied:
            # Only what was applied is written: a field that kept the server's value must not
            # bump auto_now fields or emit an op. A winning write equal to the stored value
            # still saves its newer clock.
            touched = self.spec.auto_now_fields if changed else ()
            instance.save(using=self.using, update_fields=[*applied, *touched])
        for name in queued:
            self._queue_conflict(instance, name)
        if kept:
            error = ErrorInfo(
                code="conflict", message="The server kept its value for some fields.", fields=kept
            )
            return self.result("conflict", instance, error)
        return self.result("applied", instance)

    def _context(
        self,
        instance: SyncModel,
        name: str,
        value: Any,
        clock: Stamp | None,
        stored_clocks: dict[str, str],
    ) -> conflicts.FieldContext:
        stored = stored_clocks.get(name)
        return conflicts.FieldContext(
            name=name,
            policy=self.spec.policy_for(name),
            field_scoped=self.spec.is_field_scoped(name),
            client_value=value,
            server_value=getattr(instance, name),
            base_version=self.mutation.base_version,
            object_version=instance.sync_version,
            field_version=int((instance.sync_field_versions or {}).get(name, 0)),
            client_clock=clock,
            stored_clock=Stamp.decode(stored) if stored else None,
            user=self.user,
        )

    def _queue_conflict(self, instance: SyncModel, name: str) -> None:
        m = self.mutation
        Conflict.objects.using(self.using).create(
            stream=instance.sync_stream,
            model=self.spec.label,
            object_pk=str(instance.pk),
            field=name,
            base_version=m.base_version,
            base_value=self._base_value(instance, name),
            server_version=instance.sync_version,
            server_value=self.spec.represent(instance)[name],
            client_value=m.fields[name],
            mutation_id=m.id,
            user=self.user if self.user is not None and self.user.is_authenticated else None,
            client_id=context.current().client_id,
        )

    def _base_value(self, instance: SyncModel, name: str) -> Any:
        """The field's value at ``base_version``, from the op log while it is retained."""
        base = self.mutation.base_version
        if base is None:
            return None
        op = (
            Op.objects.using(self.using)
            .filter(
                model=self.spec.label,
                object_pk=str(instance.pk),
                version__lte=base,
                fields__has_key=name,
            )
            .order_by("-version")
            .only("fields")
            .first()
        )
        return op.fields.get(name) if op is not None else None

    def result(
        self, status: Any, instance: SyncModel, error: ErrorInfo | None = None
    ) -> MutationResult:
        """The mutation's result, with ``instance`` as it now stands."""
        return MutationResult(
            id=self.mutation.id,
            status=status,
            version=instance.sync_version,
            object=object_state(self.spec, instance),
            error=error,
        )
