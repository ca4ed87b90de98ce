"""Idempotency keys, with the semantics of the IETF Idempotency-Key draft (invariant 7).

Per owner (the user, or the client for anonymous writes) and mutation id the server
keeps the payload's fingerprint and, once done, the result:

1. :func:`claim` (its own short transaction) records the id as in progress, or answers
   with the stored result, :class:`IdempotencyMismatch` or :class:`InProgress`.
2. The mutation's transaction calls :func:`hold` first and :func:`finish` last, so the
   result is stored if and only if the mutation's writes commit.

A claim whose process died is taken over once its lease (``IDEMPOTENCY_LEASE``) runs out;
:func:`hold` locks the record, so two attempts can never both commit.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from django.db import IntegrityError, transaction
from django.utils import timezone

from syncapp.conf import conf
from syncapp.exceptions import IdempotencyMismatch, InProgress, MutationRejected
from syncapp.models import IdempotencyRecord
from syncapp.protocol import CLIENT_ID_PATTERN, MutationResult

CLIENT_ID = re.compile(CLIENT_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to run one mutation id, until the lease is taken over."""

    record_id: int
    lease: uuid.UUID


class LeaseLost(Exception):
    """Another attempt took this mutation id over; this attempt must not commit."""


def owner_for(user: Any, client_id: str | None) -> str:
    """Whose ids these are: the user's, or for anonymous writes the client's."""
    if client_id is not None and not CLIENT_ID.match(client_id):
        raise MutationRejected(
            "A client_id is 1 to 100 characters of A-Z a-z 0-9 _ . : -", code="invalid_client_id"
        )
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    if client_id:
        return f"client:{client_id}"
    raise MutationRejected(
        "Anonymous mutations need a client_id to scope their idempotency keys.",
        code="client_id_required",
    )


def claim(owner: str, key: uuid.UUID, fingerprint: str, using: str) -> Claim | MutationResult:
    """Claim ``key`` for this attempt, or return the result a previous attempt stored."""
    records = IdempotencyRecord.objects.using(using)
    for _ in range(3):
        now = timezone.now()
        lease = uuid.uuid4()
        try:
            with transaction.atomic(using=using):
                record = records.create(
                    owner=owner,
                    key=key,
                    fingerprint=fingerprint,
                    status=IdempotencyRecord.Status.IN_PROGRESS,
                    lease=lease,
                    created_at=now,
                    started_at=now,
                )
            return Claim(record.pk, lease)
        except IntegrityError:
            pass
        existing = records.filter(owner=owner, key=key).first()
        if existing is None:
            continue  # released between our insert and our read: try again
        if existing.fingerprint != fingerprint:
            raise IdempotencyMismatch()
        if existing.status == IdempotencyRecord.Status.DONE:
            return msgspec.convert(existing.result, MutationResult)
        if _expired(existing.started_at, now):
            taken = records.filter(
                pk=existing.pk, status=IdempotencyRecord.Status.IN_PROGRESS, lease=existing.lease
            ).update(lease=lease, started_at=now)
            if taken:
                return Claim(existing.pk, lease)
        raise InProgress()
    raise InProgress()


def _expired(started_at: datetime, now: datetime) -> bool:
    return bool(started_at < now - conf.IDEMPOTENCY_LEASE)


def hold(claim: Claim, using: str) -> None:
    """Lock the record in the mutation's transaction; raise :class:`LeaseLost` if not ours."""
    record = (
        IdempotencyRecord.objects.using(using)
        .select_for_update()
        .filter(pk=claim.record_id, lease=claim.lease, status=IdempotencyRecord.Status.IN_PROGRESS)
        .first()
    )
    if record is None:
        raise LeaseLost()


def finish(claim: Claim, result: MutationResult, using: str) -> None:
    """Store the final result, in the mutation's transaction."""
    IdempotencyRecord.objects.using(using).filter(pk=claim.record_id).update(
        status=IdempotencyRecord.Status.DONE, result=msgspec.to_builtins(result)
    )


def release(claim: Claim, using: str) -> None:
    """Forget an attempt that failed without a result, so a retry need not wait."""
    IdempotencyRecord.objects.using(using).filter(
        pk=claim.record_id, lease=claim.lease, status=IdempotencyRecord.Status.IN_PROGRESS
    ).delete()


def expire(now: datetime | None = None, using: str | None = None) -> int:
    """Delete records older than ``IDEMPOTENCY_TTL``; returns how many."""
    cutoff = (now or timezone.now()) - conf.IDEMPOTENCY_TTL
    manager = IdempotencyRecord.objects.using(using) if using else IdempotencyRecord.objects
    deleted, _ = manager.filter(created_at__lt=cutoff).delete()
    return deleted
