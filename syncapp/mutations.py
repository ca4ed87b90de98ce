"""The one mutation path. REST, WebSocket, the viewsets and the admin's conflict
resolution all call :func:`apply`; nothing else applies client mutations.

For each mutation: idempotency claim, model and stream checks, permission, validation
through the model's serializer, the conflict policy per field, the write and its op,
the stored result. Each mutation commits (or not) on its own; a batch's results come
back in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, transaction

from syncapp import context, idempotency, oplog, registry
from syncapp.conf import conf
from syncapp.exceptions import (
    IdempotencyMismatch,
    InProgress,
    MutationRejected,
    PayloadTooLarge,
    SyncError,
)
from syncapp.protocol import ErrorInfo, Mutation, MutationResult, fingerprint
from syncapp.writer import Writer

logger = logging.getLogger("syncapp.mutations")


def apply(
    mutations: Sequence[Mutation], *, user: Any, client_id: str | None, source: str
) -> list[MutationResult]:
    """Apply a batch of mutations for ``user`` on ``client_id``; one result per mutation."""
    if len(mutations) > conf.MAX_BATCH:
        raise PayloadTooLarge(
            f"A batch holds at most {conf.MAX_BATCH} mutations.", code="batch_too_large"
        )
    return [apply_one(m, user=user, client_id=client_id, source=source) for m in mutations]


def rejected(mutation: Mutation, error: SyncError, *, retry: bool = False) -> MutationResult:
    """A ``rejected`` result carrying ``error``; ``retry`` marks errors worth retrying."""
    info = ErrorInfo(code=error.error_code, message=error.message, fields=error.fields, retry=retry)
    return MutationResult(id=mutation.id, status="rejected", error=info)


def apply_one(
    mutation: Mutation, *, user: Any, client_id: str | None, source: str
) -> MutationResult:
    """Apply one mutation exactly once, however often it is sent."""
    using = oplog.db_alias()
    try:
        owner = idempotency.owner_for(user, client_id)
        claimed = idempotency.claim(owner, mutation.id, fingerprint(mutation), using)
    except InProgress as exc:
        return rejected(mutation, exc, retry=True)
    except (IdempotencyMismatch, MutationRejected) as exc:
        return rejected(mutation, exc)
    except DatabaseError:
        logger.exception("Could not claim mutation %s", mutation.id)
        return rejected(mutation, _internal_error(), retry=True)
    if isinstance(claimed, MutationResult):
        return claimed
    try:
        with transaction.atomic(using=using):
            idempotency.hold(claimed, using)
            result = _execute(mutation, user, client_id, source, using)
            idempotency.finish(claimed, result, using)
        return result
    except idempotency.LeaseLost:
        return rejected(mutation, InProgress(), retry=True)
    except Exception:
        logger.exception("Mutation %s failed", mutation.id)
        idempotency.release(claimed, using)
        return rejected(mutation, _internal_error(), retry=True)


def _internal_error() -> SyncError:
    return SyncError("The server failed to apply this mutation.", code="internal_error")


def _execute(
    mutation: Mutation, user: Any, client_id: str | None, source: str, using: str
) -> MutationResult:
    spec = registry.by_label(mutation.model)
    actor = user if user is not None and user.is_authenticated else None
    with (
        context.attribute(
            actor=actor, client_id=client_id or "", mutation_id=mutation.id, source=source
        ),
        context.collect_ops() as ops,
    ):
        try:
            if spec is None:
                raise MutationRejected(
                    f"Unknown model {mutation.model!r}: not a synced model.", code="unknown_model"
                )
            with transaction.atomic(using=using):
                result = Writer(spec, mutation, user, client_id, using).run()
        except SyncError as exc:
            return rejected(mutation, exc)
        except IntegrityError as exc:
            # The database's own message names tables and constraints: keep it in the log.
            logger.info("Mutation %s refused by the database: %s", mutation.id, exc)
            error = MutationRejected(
                "The database refused the write (a uniqueness or reference constraint).",
                code="integrity_error",
            )
            return rejected(mutation, error)
        except DataError as exc:
            logger.info("Mutation %s refused by the database: %s", mutation.id, exc)
            error = MutationRejected(
                "A value does not fit its database column.", code="validation_failed"
            )
            return rejected(mutation, error)
        except ValidationError as exc:
            fields = exc.message_dict if hasattr(exc, "error_dict") else None
            return rejected(
                mutation,
                MutationRejected("; ".join(exc.messages), code="validation_failed", fields=fields),
            )
    # The seq in the mutation's own stream (a move also writes a create elsewhere).
    seqs = [op.seq for op in ops if op.stream.name == mutation.stream]
    if result.status in ("applied", "conflict") and seqs:
        result.seq = seqs[-1]
    return result
