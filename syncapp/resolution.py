"""Resolving ``manual`` conflicts: keep the server's value, take the client's, or enter
another. A resolution that changes the object is an ordinary mutation, so it goes
through :func:`syncapp.mutations.apply_one` and emits an op like any other write.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec
from django.db import transaction
from django.utils import timezone

from syncapp import mutations, oplog, permissions, registry
from syncapp.exceptions import Gone, MutationRejected, NotFound, SyncError
from syncapp.models import Conflict
from syncapp.protocol import Mutation

ResolutionKind = Literal["server", "client", "value"]

_NAMESPACE = uuid.UUID("8f7c1f0e-5d8b-4d7e-9a43-3f0c2b8e6a51")


class AlreadyResolved(SyncError):
    """The conflict was resolved before."""

    code = "already_resolved"
    http_status = 409
    default_message = "This conflict is already resolved."


def resolve(
    conflict_id: int, resolution: ResolutionKind, value: Any, *, user: Any, source: str
) -> Conflict:
    """Resolve one pending conflict as ``user``; returns it, resolved.

    Keeping the server's side also closes a conflict whose object was deleted since.
    """
    using = oplog.db_alias()
    with transaction.atomic(using=using):
        conflict = Conflict.objects.using(using).select_for_update().filter(pk=conflict_id).first()
        if conflict is None or not permissions.get_permission().can_read(user, conflict.stream):
            raise NotFound(f"No conflict {conflict_id}.")  # the same answer: nothing leaks
        if conflict.status == Conflict.Status.RESOLVED:
            raise AlreadyResolved()
        spec = registry.by_label(conflict.model)
        instance = (
            spec.model._base_manager.using(using).filter(pk=conflict.object_pk).first()
            if spec is not None
            else None
        )
        if resolution == "server":
            chosen = spec.represent(instance)[conflict.field] if spec and instance else None
        elif resolution == "client":
            chosen = conflict.client_value
        else:
            chosen = value
        key = uuid.uuid5(
            _NAMESPACE, f"{conflict.pk}:{resolution}:{msgspec.json.encode(chosen).decode()}"
        )
        mutation = Mutation(
            id=key,
            stream=instance.sync_stream if instance is not None else conflict.stream,
            model=conflict.model,
            pk=spec.pk_value(conflict.object_pk) if spec is not None else conflict.object_pk,
            op="update",
            fields={conflict.field: chosen},
            base_version=instance.sync_version if instance is not None else None,
        )
        permissions.check_write(user, mutation.stream, instance, mutation)
        if instance is None:
            if resolution != "server":
                raise Gone("The object of this conflict no longer exists.")
            return _close(conflict, resolution, None, user, None)
        seq = None
        if resolution != "server":
            result = mutations.apply_one(mutation, user=user, client_id=None, source=source)
            if result.status != "applied":
                error = result.error
                raise MutationRejected(
                    error.message if error else f"The resolution was not applied: {result.status}.",
                    code=error.code if error else result.status,
                    fields=error.fields if error else None,
                )
            seq = result.seq
        return _close(conflict, resolution, chosen, user, seq)


def _close(
    conflict: Conflict, resolution: ResolutionKind, value: Any, user: Any, seq: int | None
) -> Conflict:
    conflict.status = Conflict.Status.RESOLVED
    conflict.resolution = resolution
    conflict.resolved_value = value
    conflict.resolved_by = user if user is not None and user.is_authenticated else None
    conflict.resolved_at = timezone.now()
    conflict.resolution_seq = seq
    conflict.save()
    return conflict
