"""Idempotency keys, with the semantics of the IETF Idempotency-Key draft (invariant 7).

Per owner (the user, or the client for anonymous writes) and mutation id the server
keeps the payload's fingerprint and, once done, the result:

1. :func:`claim` (its own short transaction) records the id as in progress, or answers
   with the stored result, :class:`IdempotencyMismatch` or :class:`InProgress`.
2. The mutation's transaction calls :func:`finish` last, so the result is stored if and
   only if the mutation's writes commit.

A claim whose process died is taken over once its lease (``IDEMPOTENCY_LEASE``) runs out.
:func:`finish` stores the result only while the record is still this attempt's, and
locks it until commit; an attempt whose lease was taken over raises :class:`LeaseLost`
there and rolls back, so two attempts can never both commit.

A batch does the same set-wise, a few statements whatever its size: :func:`claim_many`
(one insert and one read), then in the batch's transaction :func:`hold_many` first and
:func:`finish_many` last.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from syncapp import oplog
from syncapp.conf import conf
from syncapp.exceptions import IdempotencyMismatch, InProgress, MutationRejected, SyncError
from syncapp.models import IdempotencyRecord
from syncapp.protocol import CLIENT_ID_PATTERN, MutationResult

CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
_json = msgspec.json.Encoder()


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
                record = _in_progress(owner, key, fingerprint, lease, now)
                record.save(using=using, force_insert=True)
            return Claim(record.pk, lease)
        except IntegrityError:
            pass
        existing = records.filter(owner=owner, key=key).first()
        if existing is None:
            continue  # released between our insert and our read: try again
        return _existing(existing, fingerprint, now, using)
    raise InProgress()


def claim_many(
    owner: str, items: Sequence[tuple[uuid.UUID, str]], using: str
) -> list[Claim | MutationResult | SyncError]:
    """:func:`claim` for each ``(key, fingerprint)`` (distinct keys), in one transaction of
    two statements: insert every record that is missing, read them all back. A record that
    carries this call's lease is claimed; one found from an earlier attempt answers as
    :func:`claim` would: the stored result, or the error (:class:`IdempotencyMismatch`,
    :class:`InProgress`) to reject the mutation with."""
    if not items:
        return []
    records = IdempotencyRecord.objects.using(using)
    now = timezone.now()
    lease = uuid.uuid4()
    keys = [key for key, _ in items]
    with transaction.atomic(using=using):
        if connections[using].vendor == "postgresql":
            ours = _insert_returning(owner, items, lease, now, using)
            others = [key for key in keys if key not in ours]
        else:
            records.bulk_create(
                [_in_progress(owner, key, print_, lease, now) for key, print_ in items],
                ignore_conflicts=True,
            )
            ours, others = {}, keys
        found = {r.key: r for r in records.filter(owner=owner, key__in=others)} if others else {}
    out: list[Claim | MutationResult | SyncError] = []
    for key, print_ in items:
        if key in ours:
            out.append(Claim(ours[key], lease))
            continue
        record = found.get(key)
        try:
            if record is None:
                out.append(claim(owner, key, print_, using))  # released in between
            elif record.lease == lease and record.status == IdempotencyRecord.Status.IN_PROGRESS:
                out.append(Claim(record.pk, lease))
            else:
                out.append(_existing(record, print_, now, using))
        except (IdempotencyMismatch, InProgress, MutationRejected) as exc:
            out.append(exc)
    return out


def _insert_returning(
    owner: str, items: Sequence[tuple[uuid.UUID, str]], lease: uuid.UUID, now: datetime, using: str
) -> dict[uuid.UUID, int]:
    """PostgreSQL: insert the missing records in one statement; the ids of those inserted,
    by key (a key already there is not returned)."""
    connection = connections[using]
    table = connection.ops.quote_name(IdempotencyRecord._meta.db_table)
    with oplog.server_binding(using), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} "
            "(owner, key, fingerprint, status, lease, created_at, started_at) "
            "SELECT %s, v.key, v.fingerprint, %s, %s, %s, %s "
            "FROM unnest(%s::uuid[], %s::text[]) AS v(key, fingerprint) "
            "ON CONFLICT (owner, key) DO NOTHING RETURNING key, id",
            [
                owner,
                IdempotencyRecord.Status.IN_PROGRESS.value,
                lease,
                now,
                now,
                [key for key, _ in items],
                [print_ for _, print_ in items],
            ],
        )
        return {
            key if isinstance(key, uuid.UUID) else uuid.UUID(str(key)): pk
            for key, pk in cursor.fetchall()
        }


def _in_progress(
    owner: str, key: uuid.UUID, fingerprint: str, lease: uuid.UUID, now: datetime
) -> IdempotencyRecord:
    """A new record of an attempt that has just started."""
    return IdempotencyRecord(
        owner=owner,
        key=key,
        fingerprint=fingerprint,
        status=IdempotencyRecord.Status.IN_PROGRESS,
        lease=lease,
        created_at=now,
        started_at=now,
    )


def _existing(
    record: IdempotencyRecord, fingerprint: str, now: datetime, using: str
) -> Claim | MutationResult:
    """What an earlier attempt's record answers: the stored result, this attempt's claim
    if the earlier one's lease ran out, or the error to reject the mutation with."""
    if record.fingerprint != fingerprint:
        raise IdempotencyMismatch()
    if record.status == IdempotencyRecord.Status.DONE:
        return msgspec.convert(record.result, MutationResult)
    if _expired(record.started_at, now):
        lease = uuid.uuid4()
        taken = (
            IdempotencyRecord.objects.using(using)
            .filter(pk=record.pk, status=IdempotencyRecord.Status.IN_PROGRESS, lease=record.lease)
            .update(lease=lease, started_at=now)
        )
        if taken:
            return Claim(record.pk, lease)
    raise InProgress()


def _expired(started_at: datetime, now: datetime) -> bool:
    return bool(started_at < now - conf.IDEMPOTENCY_LEASE)


def finish(claim: Claim, result: MutationResult, using: str) -> None:
    """Store the final result, last in the mutation's transaction; raise
    :class:`LeaseLost` if the record is no longer this attempt's (then the transaction
    must roll back). The update locks the record until commit: an attempt that would
    take it over waits, then finds it done."""
    stored = (
        IdempotencyRecord.objects.using(using)
        .filter(pk=claim.record_id, lease=claim.lease, status=IdempotencyRecord.Status.IN_PROGRESS)
        .update(status=IdempotencyRecord.Status.DONE, result=msgspec.to_builtins(result))
    )
    if not stored:
        raise LeaseLost()


def hold_many(claims: Iterable[Claim], using: str) -> set[Claim]:
    """Lock many claims' records in one statement, first in a batch's transaction;
    returns those that are no longer ours (their mutations must not run:
    :class:`LeaseLost`)."""
    wanted = list(claims)
    if not wanted:
        return set()
    held = set(
        IdempotencyRecord.objects.using(using)
        .select_for_update()
        .filter(
            pk__in=[c.record_id for c in wanted],
            lease__in={c.lease for c in wanted},
            status=IdempotencyRecord.Status.IN_PROGRESS,
        )
        .order_by("pk")
        .values_list("pk", "lease")
    )
    return {c for c in wanted if (c.record_id, c.lease) not in held}


def finish_many(done: Sequence[tuple[Claim, MutationResult]], using: str) -> bool:
    """:func:`finish` for many claims, in one statement; False if some record was no
    longer this attempt's (taken over after its lease ran out): then the transaction
    must not commit. After :func:`hold_many` it is always True.

    On PostgreSQL one ``UPDATE ... FROM unnest(...)`` with three array parameters; on
    SQLite one ``executemany`` (no round trips to save there); elsewhere ``bulk_update``
    after :func:`hold_many` (:func:`finish_checks_leases`). Django's ``bulk_update``
    builds a ``CASE`` expression per row, which costs more than the write.
    """
    if not done:
        return True
    connection = connections[using]
    table = connection.ops.quote_name(IdempotencyRecord._meta.db_table)
    status = IdempotencyRecord.Status.DONE.value
    running = IdempotencyRecord.Status.IN_PROGRESS.value
    ids = [c.record_id for c, _ in done]
    leases = [c.lease for c, _ in done]
    texts = [_json.encode(result).decode() for _, result in done]
    if connection.vendor == "postgresql":
        with oplog.server_binding(using), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS r SET status = %s, result = v.result::jsonb "
                "FROM unnest(%s::bigint[], %s::uuid[], %s::text[]) AS v(id, lease, result) "
                "WHERE r.id = v.id AND r.lease = v.lease AND r.status = %s",
                [status, ids, leases, texts, running],
            )
            return bool(cursor.rowcount == len(done))
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {table} SET status = %s, result = %s "
                "WHERE id = %s AND lease = %s AND status = %s",
                [
                    (status, text, pk, lease.hex, running)
                    for pk, lease, text in zip(ids, leases, texts, strict=True)
                ],
            )
            return bool(cursor.rowcount == len(done))
    IdempotencyRecord.objects.using(using).bulk_update(
        [
            IdempotencyRecord(pk=c.record_id, status=status, result=msgspec.to_builtins(r))
            for c, r in done
        ],
        ["status", "result"],
    )
    return True


def finish_checks_leases(using: str) -> bool:
    """Whether :func:`finish_many` itself tells a lost lease, so that a batch may skip
    :func:`hold_many` (and roll back in the rare case one was lost)."""
    return connections[using].vendor in ("postgresql", "sqlite")


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
