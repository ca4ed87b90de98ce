"""What each synced model declares, read once from its ``Sync`` inner class.

```python
class Todo(SyncModel):
    ...
    class Sync:
        fields = "__all__"                  # or a list; internals are never synced
        exclude = []
        conflict = "lww"                    # the model's policy
        conflict_fields = {"title": "manual", "likes": "counter"}
        serializer = None                   # a ModelSerializer or its dotted path
        delete_wins = True                  # a delete beats concurrent edits

    def get_sync_stream(self) -> str:
        return f"todos.list:{self.list_id}"
```
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import msgspec
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection, models
from django.utils.module_loading import import_string
from rest_framework import serializers

from syncapp.exceptions import MutationRejected
from syncapp.protocol import STREAM_PATTERN

if TYPE_CHECKING:
    from syncapp.mixins import SyncModel

STREAM_NAME = re.compile(STREAM_PATTERN)
BUILTIN_POLICIES = frozenset({"lww", "version", "manual"})
FIELD_POLICIES = BUILTIN_POLICIES | {"counter"}
INTERNAL_FIELDS = ("sync_stream", "sync_version", "sync_clocks", "sync_field_versions")
INTEGER_FIELDS = (models.IntegerField, models.BigIntegerField, models.SmallIntegerField)

_json = msgspec.json.Encoder()


def _normalize(value: Any) -> Any:
    """A JSON round-trip, so a value looks the same live and when read back from the log."""
    return msgspec.json.decode(_json.encode(value))


class SyncDeclarationError(ImproperlyConfigured):
    """A model's ``Sync`` declaration is invalid."""


@dataclass
class SyncSpec:
    """The resolved declaration of one synced model."""

    model: type[SyncModel]
    label: str
    fields: tuple[str, ...]
    policy: str
    field_policies: dict[str, str]
    serializer_class: type[serializers.Serializer[Any]]
    delete_wins: bool
    concrete: dict[str, models.Field[Any, Any]] = field(default_factory=dict)

    def policy_for(self, name: str) -> str:
        """The conflict policy of one synced field."""
        return self.field_policies.get(name, self.policy)

    def is_field_scoped(self, name: str) -> bool:
        """Whether ``version``/``manual`` on this field checks the field alone."""
        return name in self.field_policies

    @cached_property
    def counter_fields(self) -> frozenset[str]:
        return frozenset(n for n, p in self.field_policies.items() if p == "counter")

    @cached_property
    def auto_now_fields(self) -> tuple[str, ...]:
        return tuple(n for n in self.fields if getattr(self.concrete[n], "auto_now", False))

    @cached_property
    def _representer(self) -> serializers.Serializer[Any]:
        # One serializer instance per model: its bound fields are built once and only read.
        return self.serializer_class()

    def represent(self, instance: models.Model) -> dict[str, Any]:
        """The synced fields of ``instance`` as JSON-ready values."""
        data = self._representer.to_representation(instance)
        return {name: _normalize(data[name]) for name in self.fields}

    def parse_pk(self, value: Any) -> Any:
        """``value`` as this model's primary key; :class:`MutationRejected` if it is not one."""
        pk_field = self.model._meta.pk
        assert pk_field is not None
        try:
            pk = pk_field.to_python(value)
        except ValidationError as exc:
            raise MutationRejected(
                f"Invalid pk {value!r}: {' '.join(exc.messages)}", code="invalid_pk"
            ) from exc
        if isinstance(pk, int):
            low, high = connection.ops.integer_field_range(pk_field.get_internal_type())
            if (low is not None and pk < low) or (high is not None and pk > high):
                raise MutationRejected(f"Invalid pk {value!r}: out of range.", code="invalid_pk")
        return pk

    def pk_value(self, pk: Any) -> Any:
        """``pk`` as the protocol carries it: an int for integer keys, a string otherwise."""
        pk_field = self.model._meta.pk
        assert pk_field is not None
        value = pk_field.to_python(pk)
        return value if isinstance(value, int) else str(value)

    def object_dict(self, instance: SyncModel) -> dict[str, Any]:
        """The ``{model, pk, version, fields}`` shape of snapshots and mutation results."""
        return {
            "model": self.label,
            "pk": self.pk_value(instance.pk),
            "version": instance.sync_version,
            "fields": self.represent(instance),
        }


def _synced_field_names(model: type[models.Model], declared: Any, exclude: list[str]) -> list[str]:
    concrete = {f.name: f for f in model._meta.concrete_fields}
    pk = model._meta.pk
    if declared in (None, "__all__"):
        names = [
            name
            for name, f in concrete.items()
            if name not in INTERNAL_FIELDS and f is not pk and not getattr(f, "parent_link", False)
        ]
    elif isinstance(declared, list | tuple):
        names = list(declared)
    else:
        raise SyncDeclarationError(
            f'{model._meta.label}.Sync.fields must be "__all__" or a list of field names.'
        )
    for name in [*names, *exclude]:
        if name not in concrete:
            raise SyncDeclarationError(
                f"{model._meta.label}.Sync names {name!r}, which is not a concrete field."
            )
        if name in INTERNAL_FIELDS or concrete[name] is pk:
            raise SyncDeclarationError(
                f"{model._meta.label}.Sync names {name!r}, which syncapp manages itself."
            )
    return [n for n in names if n not in exclude]


def _check_policy(model: type[models.Model], name: str, policy: Any, *, field_level: bool) -> None:
    allowed = FIELD_POLICIES if field_level else BUILTIN_POLICIES
    if not isinstance(policy, str):
        raise SyncDeclarationError(f"{model._meta.label}: conflict policy {policy!r} is not a str.")
    if policy in allowed:
        return
    if "." not in policy:
        raise SyncDeclarationError(
            f"{model._meta.label}: unknown conflict policy {policy!r} for {name}; use one of "
            f"{sorted(allowed)} or a dotted path to a resolver."
        )
    try:
        import_string(policy)
    except ImportError as exc:
        raise SyncDeclarationError(
            f"{model._meta.label}: the resolver {policy!r} for {name} cannot be imported: {exc}"
        ) from exc


def build_spec(model: type[SyncModel]) -> SyncSpec:
    """Read and validate ``model.Sync``; raises :class:`SyncDeclarationError`."""
    decl = getattr(model, "Sync", None)
    label = model._meta.label_lower
    exclude = list(getattr(decl, "exclude", []) or [])
    names = _synced_field_names(model, getattr(decl, "fields", "__all__"), exclude)
    policy = getattr(decl, "conflict", "lww")
    _check_policy(model, "the model", policy, field_level=False)
    field_policies = dict(getattr(decl, "conflict_fields", {}) or {})
    concrete = {f.name: f for f in model._meta.concrete_fields}
    for name, fpolicy in field_policies.items():
        if name not in names:
            raise SyncDeclarationError(
                f"{model._meta.label}.Sync.conflict_fields names {name!r}, which is not synced."
            )
        _check_policy(model, name, fpolicy, field_level=True)
        if fpolicy == "counter" and not isinstance(concrete[name], INTEGER_FIELDS):
            raise SyncDeclarationError(
                f"{model._meta.label}.{name}: the counter policy needs an integer field."
            )
    serializer_class = _serializer_class(model, getattr(decl, "serializer", None), names)
    return SyncSpec(
        model=model,
        label=label,
        fields=tuple(names),
        policy=policy,
        field_policies=field_policies,
        serializer_class=serializer_class,
        delete_wins=bool(getattr(decl, "delete_wins", True)),
        concrete={n: concrete[n] for n in names},
    )


def _serializer_class(
    model: type[models.Model], declared: Any, names: list[str]
) -> type[serializers.Serializer[Any]]:
    if declared is None:
        meta = type("Meta", (), {"model": model, "fields": names})
        return type(
            f"{model.__name__}SyncSerializer", (serializers.ModelSerializer,), {"Meta": meta}
        )
    try:
        cls = import_string(declared) if isinstance(declared, str) else declared
    except ImportError as exc:
        raise SyncDeclarationError(
            f"{model._meta.label}.Sync.serializer {declared!r} cannot be imported: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, serializers.Serializer)):
        raise SyncDeclarationError(
            f"{model._meta.label}.Sync.serializer must be a DRF Serializer class, not {cls!r}."
        )
    missing = [n for n in names if n not in cls().fields]
    if missing:
        raise SyncDeclarationError(
            f"{model._meta.label}.Sync.serializer {cls.__name__} lacks synced fields {missing}."
        )
    return cls


_specs: dict[type[models.Model], SyncSpec] = {}


def is_synced(model: type[models.Model]) -> bool:
    """Whether ``model`` is a concrete synced model."""
    from syncapp.mixins import SyncModel

    return issubclass(model, SyncModel) and not model._meta.abstract and not model._meta.proxy


def spec_for(model: type[models.Model]) -> SyncSpec:
    """The declaration of a synced model (built on first use, after apps are ready)."""
    spec = _specs.get(model)
    if spec is None:
        if model._meta.proxy and model._meta.concrete_model is not None:
            return spec_for(model._meta.concrete_model)
        if not is_synced(model):
            raise SyncDeclarationError(f"{model._meta.label} is not a synced model.")
        spec = _specs[model] = build_spec(model)  # type: ignore[arg-type]
    return spec


def synced_models() -> Iterator[type[SyncModel]]:
    """Every concrete synced model of the installed apps."""
    for model in apps.get_models():
        if is_synced(model):
            yield model  # type: ignore[misc]


def synced_senders() -> Iterator[type[models.Model]]:
    """Every model whose writes are a synced model's: the synced models and their proxies."""
    for model in apps.get_models():
        concrete = model._meta.concrete_model
        if concrete is not None and is_synced(concrete):
            yield model


def by_label(label: str) -> SyncSpec | None:
    """The spec of the synced model named ``label`` (``app_label.modelname``), or None."""
    spec = _by_label.get(label)
    if spec is not None:
        return spec
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        return None
    if not is_synced(model) or model._meta.label_lower != label:
        return None
    # Remembered once found (a mutation and its op each look their model up); a label
    # that names no synced model is not, so clients cannot grow this.
    spec = _by_label[label] = spec_for(model)
    return spec


_by_label: dict[str, SyncSpec] = {}


def clear() -> None:
    """Forget built specs (tests that change declarations call it)."""
    _specs.clear()
    _by_label.clear()
