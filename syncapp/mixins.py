"""``SyncModel``: the abstract model that makes a Django model live.

Every write through the ORM records its op in the same transaction: ``save()``,
``delete()`` (and cascades), ``QuerySet.update()``, ``QuerySet.delete()``,
``bulk_create()`` and ``bulk_update()``. Raw SQL is not captured (docs/data-model.md).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, TypeVar

from django.db import models, router

from syncapp import capture, deletes
from syncapp.exceptions import UnsupportedWrite

M = TypeVar("M", bound="SyncModel")


class SyncQuerySet(models.QuerySet[M]):
    """A QuerySet whose bulk writes record ops. A synced model's managers must use it."""

    def update(self, **kwargs: Any) -> int:
        return capture.update_queryset(self, kwargs)

    def bulk_create(
        self,
        objs: Iterable[M],
        batch_size: int | None = None,
        ignore_conflicts: bool = False,
        update_conflicts: bool = False,
        update_fields: Collection[str] | None = None,
        unique_fields: Collection[str] | None = None,
    ) -> list[M]:
        if ignore_conflicts or update_conflicts:
            raise UnsupportedWrite(
                "bulk_create(ignore_conflicts/update_conflicts) on a synced model cannot tell "
                "which rows it wrote, so it cannot record their ops. Save them one by one."
            )
        return capture.bulk_create(self, list(objs), batch_size)

    def bulk_update(
        self, objs: Iterable[M], fields: Iterable[str], batch_size: int | None = None
    ) -> int:
        return capture.bulk_update(self, list(objs), list(fields), batch_size)

    def delete(self) -> tuple[int, dict[str, int]]:
        return deletes.delete_queryset(self)


class SyncManager(models.Manager.from_queryset(SyncQuerySet)):  # type: ignore[misc]
    """The default manager of synced models."""


class SyncModel(models.Model):
    """Inherit from this, implement :meth:`get_sync_stream`, optionally declare ``Sync``."""

    sync_stream = models.CharField(max_length=200, default="", editable=False, db_index=True)
    sync_version = models.PositiveBigIntegerField(default=0, editable=False)
    sync_clocks = models.JSONField(default=dict, editable=False)
    sync_field_versions = models.JSONField(default=dict, editable=False)

    objects = SyncManager()
    # The unfiltered base manager: related-object updates (on_delete=SET_NULL) go through it.
    sync_objects = SyncManager()

    class Meta:
        abstract = True
        base_manager_name = "sync_objects"

    def save(self, *args: Any, **kwargs: Any) -> None:
        capture.save(self, super().save, args, kwargs)

    def delete(self, using: Any = None, keep_parents: bool = False) -> tuple[int, dict[str, int]]:
        using = using or router.db_for_write(type(self), instance=self)
        return deletes.delete_instance(self, using, keep_parents)

    def get_sync_stream(self) -> str:
        """The name of the stream this object belongs to."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_sync_stream() to name its stream."
        )
