"""The one mutation path. REST, WebSocket, the viewsets and the admin's conflict
resolution all call :func:`apply`; nothing else applies client mutations.

For each mutation: idempotency claim, model and stream checks, permission, validation
through the model's serializer, the conflict policy per field, the write and its op,
the stored result. A batch's results come back in order.

Group commit: a batch claims all its ids in one transaction, then applies every mutation
in one transaction, each under a savepoint of its own, so that each stands or falls
alone (a rejected or failed mutation rolls back its savepoint: its writes, its ops and
their broadcast) while the batch pays for two commits instead of two per mutation, and
rings each stream's channel-layer group once. A mutation that fails unexpectedly inside
the batch (a bug, a deadlock) ends the batch there: what came before commits, and it and
everything after it are applied one by one afterwards, in order; so are a repeated id
and every mutation of a batch whose commit failed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, transaction

from syncapp import broadcast, context, idempotency, oplog, registry
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
    if len(mutations) == 1:
        return [apply_one(mutations[0], user=user, client_id=client_id, source=source)]
    return _apply_batch(mutations, user=user, client_id=client_id, source=source)


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


def _apply_batch(
    mutations: Sequence[Mutation], *, user: Any, client_id: str | None, source: str
) -> list[MutationResult]:
    using = oplog.db_alias()
    results: list[MutationResult | None] = [None] * len(mutations)
    try:
        owner = idempotency.owner_for(user, client_id)
    except MutationRejected as exc:
        return [rejected(m, exc) for m in mutations]

    # 1. Claim every id, one commit. A repeated id waits for its first occurrence.
    claims: dict[int, idempotency.Claim] = {}
    alone: list[int] = []
    seen: set[Any] = set()
    try:
        with transaction.atomic(using=using):
            for i, mutation in enumerate(mutations):
                if mutation.id in seen:
                    alone.append(i)
                    continue
                seen.add(mutation.id)
                try:
                    claimed = idempotency.claim(owner, mutation.id, fingerprint(mutation), using)
                except InProgress as exc:
                    results[i] = rejected(mutation, exc, retry=True)
                    continue
                except (IdempotencyMismatch, MutationRejected) as exc:
                    results[i] = rejected(mutation, exc)
                    continue
                if isinstance(claimed, MutationResult):
                    results[i] = claimed
                else:
                    claims[i] = claimed
    except DatabaseError:
        logger.warning("Could not claim a batch; applying it one by one", exc_info=True)
        return [apply_one(m, user=user, client_id=client_id, source=source) for m in mutations]

    # 2. Apply every claimed mutation under its own savepoint, one commit.
    failed: list[int] = []
    in_order = list(claims.items())
    try:
        with transaction.atomic(using=using), broadcast.coalesced(using):
            for position, (i, claim) in enumerate(in_order):
                mutation = mutations[i]
                try:
                    with transaction.atomic(using=using):
                        idempotency.hold(claim, using)
                        result = _execute(mutation, user, client_id, source, using)
                        idempotency.finish(claim, result, using)
                    results[i] = result
                except idempotency.LeaseLost:
                    results[i] = rejected(mutation, InProgress(), retry=True)
                except Exception:
                    # This one and every later one go alone after the batch, in order: a
                    # later mutation may build on this one, and a deadlock's victim (the
                    # batch holds its streams' locks in mutation order) must not be
                    # overtaken by what followed it.
                    logger.warning(
                        "Mutation %s failed in a batch; it and the %s after it run alone",
                        mutation.id,
                        len(in_order) - position - 1,
                        exc_info=True,
                    )
                    for later, later_claim in in_order[position:]:
                        idempotency.release(later_claim, using)
                        failed.append(later)
                    break
    except Exception:
        # The batch did not commit: none of its writes or results stand.
        logger.warning("A batch failed to commit; applying it one by one", exc_info=True)
        failed = list(claims)
        for i in failed:
            results[i] = None
            with contextlib.suppress(DatabaseError):
                idempotency.release(claims[i], using)

    # 3. What could not go with the batch goes alone, in order.
    for i in sorted(alone + failed):
        results[i] = apply_one(mutations[i], user=user, client_id=client_id, source=source)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


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
