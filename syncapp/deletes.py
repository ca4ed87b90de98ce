"""Record the op of every deleted synced object: ``delete()``, ``QuerySet.delete()`` and
the cascades Django's collector runs, in the deleting transaction.

Before Django deletes a synced row (``pre_delete``), its current stream and version are
read under a row lock, so a concurrent move or edit cannot leave the delete op in the
wrong stream; after (``post_delete``), the op is recorded. The ops of one ``delete()``
call are appended together at its end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import models, transaction

from syncapp import oplog, registry
from syncapp.capture import Prior, lock_priors

if TYPE_CHECKING:
    from syncapp.mixins import SyncModel


@dataclass
class _Batch:
    drafts: list[oplog.OpDraft] = field(default_factory=list)
    # Rows this delete() call already locked and read, by (label, pk).
    locked: dict[tuple[str, Any], Prior] = field(default_factory=dict)


_batch: ContextVar[_Batch | None] = ContextVar("syncapp_delete_batch", default=None)


@contextmanager
def _batched(using: str) -> Iterator[_Batch]:
    current = _batch.get()
    if current is not None:
        yield current
        return
    batch = _Batch()
    token = _batch.set(batch)
    try:
        with transaction.atomic(using=using, savepoint=False):
            yield batch
            oplog.append(batch.drafts, using)
    finally:
        _batch.reset(token)


def _remember(batch: _Batch, model: type[models.Model], priors: dict[Any, Prior]) -> None:
    label = registry.spec_for(model).label
    for pk, prior in priors.items():
        batch.locked[(label, pk)] = prior


def delete_queryset(qs: models.QuerySet[Any]) -> tuple[int, dict[str, int]]:
    """``SyncQuerySet.delete()``: lock the matching rows, then let Django delete."""
    with _batched(qs.db) as batch:
        pks = list(qs.order_by().values_list("pk", flat=True))
        _remember(batch, qs.model, lock_priors(qs.model, qs.db, pks, within=qs))
        return models.QuerySet.delete(qs)


def delete_instance(obj: SyncModel, using: str, keep_parents: bool) -> tuple[int, dict[str, int]]:
    """``SyncModel.delete()``: lock the row, then let Django delete (cascades included)."""
    with _batched(using) as batch:
        if obj.pk is not None:
            _remember(batch, type(obj), lock_priors(type(obj), using, [obj.pk]))
        return models.Model.delete(obj, using=using, keep_parents=keep_parents)


def refresh_before_delete(
    sender: type[SyncModel], instance: SyncModel, using: str, **_: Any
) -> None:
    """``pre_delete`` receiver: the row's current stream and version, read under a lock.

    A row that is already gone gets no stream, so its delete records nothing.
    """
    spec = registry.spec_for(sender)
    pk = spec.parse_pk(instance.pk)
    batch = _batch.get()
    prior = batch.locked.get((spec.label, pk)) if batch is not None else None
    if prior is None:
        prior = lock_priors(sender, using, [pk]).get(pk)
    instance.sync_stream = prior.stream if prior is not None else ""
    instance.sync_version = prior.version if prior is not None else instance.sync_version


def record_delete(sender: type[SyncModel], instance: SyncModel, using: str, **_: Any) -> None:
    """``post_delete`` receiver: the op of a deleted synced object."""
    if not instance.sync_stream:
        return  # never recorded as created, or already deleted: clients never see it again
    spec = registry.spec_for(sender)
    draft = oplog.OpDraft(
        instance.sync_stream, spec.label, str(instance.pk), "delete", {}, instance.sync_version + 1
    )
    batch = _batch.get()
    if batch is not None:
        batch.drafts.append(draft)
    else:
        oplog.append([draft], using)
