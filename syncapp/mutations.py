"""The one mutation path. REST, WebSocket, the viewsets and the admin's conflict
resolution all call :func:`apply`; nothing else applies client mutations.

For each mutation: idempotency claim, model and stream checks, permission, validation
through the model's serializer, the conflict policy per field, the write and its op,
the stored result. A batch's results come back in order.

Group commit: a batch claims all its ids in one transaction (one insert), then applies
every mutation in one transaction and stores every result with one update. Creates of
new objects are checked one by one and inserted together (:class:`_Batch`); every
other mutation runs under a savepoint of its own, so that each stands or falls alone (a
rejected or failed mutation rolls back its savepoint: its writes, its ops and their
broadcast). The batch rings each stream's channel-layer group once. A mutation that fails
unexpectedly inside the batch (a bug, a deadlock) ends the batch there: what came before
commits, and it and everything after it are applied one by one afterwards, in order; so
are a repeated id and every mutation of a batch whose commit failed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, connections, transaction

from syncapp import broadcast, capture, context, idempotency, oplog, registry
from syncapp.conf import conf
from syncapp.exceptions import (
    IdempotencyMismatch,
    InProgress,
    MutationRejected,
    PayloadTooLarge,
    SyncError,
)
from syncapp.protocol import ErrorInfo, Mutation, MutationResult, fingerprint
from syncapp.writer import Writer, object_state

if TYPE_CHECKING:
    from syncapp.mixins import SyncModel
    from syncapp.registry import SyncSpec

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

    # 1. Claim every id: one transaction, one insert and one read. A repeated id waits for
    # its first occurrence.
    firsts: dict[Any, int] = {}
    alone: list[int] = []
    for i, mutation in enumerate(mutations):
        if mutation.id in firsts:
            alone.append(i)
        else:
            firsts[mutation.id] = i
    try:
        answers = idempotency.claim_many(
            owner, [(mutations[i].id, fingerprint(mutations[i])) for i in firsts.values()], using
        )
    except DatabaseError:
        logger.warning("Could not claim a batch; applying it one by one", exc_info=True)
        return [apply_one(m, user=user, client_id=client_id, source=source) for m in mutations]
    claims: dict[int, idempotency.Claim] = {}
    for i, answer in zip(firsts.values(), answers, strict=True):
        if isinstance(answer, idempotency.Claim):
            claims[i] = answer
        elif isinstance(answer, MutationResult):
            results[i] = answer
        else:
            results[i] = rejected(mutations[i], answer, retry=isinstance(answer, InProgress))

    # 2. Apply every claimed mutation, one commit; set-wise where it can, else under a
    # savepoint each. Should the set-wise path meet what it cannot undo alone, the batch
    # rolls back and runs again without it.
    failed: list[int] = []
    for fast in (True, False):
        if not claims:
            break
        run = _Batch(mutations, claims, user, client_id, source, using, fast=fast)
        try:
            with transaction.atomic(using=using), broadcast.coalesced(using):
                run.apply()
        except _Unsafe as exc:
            logger.info("Running a batch again without its set-wise path: %s", exc)
            continue
        except Exception:
            # The batch did not commit: none of its writes or results stand.
            logger.warning("A batch failed to commit; applying it one by one", exc_info=True)
            failed = list(claims)
            for i in failed:
                with contextlib.suppress(DatabaseError):
                    idempotency.release(claims[i], using)
            break
        for i, result in run.results.items():
            results[i] = result
        failed = run.failed
        break

    # 3. What could not go with the batch goes alone, in order.
    for i in sorted(alone + failed):
        results[i] = apply_one(mutations[i], user=user, client_id=client_id, source=source)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


class _Unsafe(Exception):
    """The set-wise path met something a savepoint would have to undo (a statement that
    writes, or an unexpected error, while checking a create) or an idempotency record that
    is no longer this attempt's: the batch rolls back and runs again with a savepoint per
    mutation, its records held first."""


@dataclass(slots=True)
class _Pending:
    """A create that passed its checks, waiting to be inserted with others."""

    index: int
    spec: SyncSpec
    instance: SyncModel
    attribution: context.Attribution


class _Batch:
    """Applies the claimed mutations of one batch inside its transaction.

    With ``fast``, creates of a :func:`~syncapp.capture.bulk_insertable` model are checked
    one by one, exactly as :class:`~syncapp.writer.Writer` checks them,
    but written together: consecutive such creates are inserted with one INSERT per model
    and their ops appended with one lock of each stream, when the next mutation that is
    not such a create comes, or at the end. Everything else runs as before, one mutation
    at a time under its savepoint, after the creates before it are written, so every
    mutation sees what came before it, and seqs follow the batch's order. The checks run
    no savepoint: they write nothing (a check that does, or fails unexpectedly, sends the
    whole batch back to run without this path). A create refused while others wait to be
    written is checked again once they are, in case it needed them, and runs alone if its
    pk is taken. Should the INSERT fail (a pk that is taken, or a constraint the checks
    cannot see), the waiting creates run one by one.

    The results are stored together last (:func:`idempotency.finish_many`), which checks
    that every record is still this attempt's; without ``fast`` the records are first
    locked together (:func:`idempotency.hold_many`).
    """

    def __init__(
        self,
        mutations: Sequence[Mutation],
        claims: dict[int, idempotency.Claim],
        user: Any,
        client_id: str | None,
        source: str,
        using: str,
        *,
        fast: bool,
    ) -> None:
        self.mutations = mutations
        self.claims = claims
        self.user = user
        self.client_id = client_id
        self.source = source
        self.using = using
        self.fast = fast
        self.results: dict[int, MutationResult] = {}
        self.failed: list[int] = []
        self.live: list[int] = []
        self.position = 0  # the place in ``live`` of the mutation being applied
        self.pending: list[_Pending] = []
        self.touched: set[tuple[str, Any]] = set()  # (model, pk) written in this batch
        self.stopped = False
        self.wrote = False

    def apply(self) -> None:
        # The set-wise path locks the records only when it stores the results, checking
        # that they are still this attempt's; should one not be, the batch rolls back and
        # runs again, holding them first.
        held = not (self.fast and idempotency.finish_checks_leases(self.using))
        lost = idempotency.hold_many(self.claims.values(), self.using) if held else set()
        for i in sorted(self.claims):
            if self.claims[i] in lost:
                self.results[i] = rejected(self.mutations[i], InProgress(), retry=True)
            else:
                self.live.append(i)
        candidates = self._candidates() if self.fast else {}
        watch = (
            connections[self.using].execute_wrapper(self._watch)
            if candidates
            else contextlib.nullcontext()
        )
        with watch:
            for position, i in enumerate(self.live):
                self.position = position
                if not self.stopped and i in candidates and self._fast(i, *candidates[i]):
                    continue
                self._flush()
                if self.stopped:
                    self._fail(i)
                else:
                    self._general(i, later=len(self.live) - position - 1)
            self.position = len(self.live)
            self._flush()
        done = [(self.claims[i], self.results[i]) for i in self.live if i in self.results]
        if not idempotency.finish_many(done, self.using):
            raise _Unsafe("an idempotency record was taken over meanwhile")

    def _candidates(self) -> dict[int, tuple[SyncSpec, Any]]:
        """The creates that may go set-wise: of a bulk-insertable model, with a valid pk.
        Whether the pk is taken is not read first: a taken one fails the INSERT, and the
        creates waiting with it then run one by one (exactly); one refused by its checks
        is looked up then (:meth:`_fast`)."""
        wanted: dict[int, tuple[SyncSpec, Any]] = {}
        for i in self.live:
            m = self.mutations[i]
            spec = registry.by_label(m.model) if m.op == "create" else None
            if spec is None or not capture.bulk_insertable(spec.model):
                continue
            try:
                pk = spec.parse_pk(m.pk)
            except MutationRejected:
                continue
            if pk is not None:
                wanted[i] = (spec, pk)
        return wanted

    def _watch(self, execute: Any, sql: str, params: Any, many: bool, ctx: Any) -> Any:
        if sql.lstrip()[:6].upper() != "SELECT":
            self.wrote = True
        return execute(sql, params, many, ctx)

    def _fast(self, i: int, spec: SyncSpec, pk: Any) -> bool:
        """Check create ``i``; queue it to be inserted, or store its rejection. False if it
        must run on its own instead."""
        key = (spec.label, pk)
        if key in self.touched:
            return False  # an earlier mutation of this batch wrote it: it may exist now
        while True:
            outcome = self._check(i, spec, pk)
            if isinstance(outcome, _Pending):
                self.pending.append(outcome)
                self.touched.add(key)
                return True
            if not self.pending:
                if self._taken(spec, pk):
                    # Alone, a create of a taken pk answers `exists` (or that the object
                    # may not be read) before any check of its fields: it runs alone.
                    return False
                self.results[i] = outcome
                return True
            # Refused while earlier creates wait: they may be what it missed (a reference
            # to one of them, say). Write them, then check it again.
            self._flush()
            if self.stopped:
                return False

    def _taken(self, spec: SyncSpec, pk: Any) -> bool:
        """Whether a row of ``spec``'s model has primary key ``pk`` (a read, no lock)."""
        return bool(spec.model._base_manager.db_manager(self.using).filter(pk=pk).exists())

    def _check(self, i: int, spec: SyncSpec, pk: Any) -> _Pending | MutationResult:
        m = self.mutations[i]
        actor = self.user if self.user is not None and self.user.is_authenticated else None
        with context.attribute(
            actor=actor, client_id=self.client_id or "", mutation_id=m.id, source=self.source
        ) as attribution:
            self.wrote = False
            try:
                instance = Writer(spec, m, self.user, self.client_id, self.using).prepare_create(pk)
            except Exception as exc:
                # Without a savepoint, a database error ends the transaction (PostgreSQL).
                unsafe = self.wrote or isinstance(exc, DatabaseError)
                refusal = None if unsafe else _refusal(m, exc)
                if refusal is None:
                    raise _Unsafe(f"checking mutation {m.id} failed: {exc!r}") from exc
                return refusal
        if self.wrote:
            raise _Unsafe(f"checking mutation {m.id} wrote to the database")
        return _Pending(i, spec, instance, attribution)

    def _flush(self) -> None:
        """Insert the waiting creates and append their ops; one by one if that fails."""
        if not self.pending:
            return
        items, self.pending = self.pending, []
        try:
            with transaction.atomic(using=self.using):
                drafts: dict[int, list[oplog.OpDraft]] = {}
                for spec, group in _by_model(items):
                    made = capture.insert_new(spec, [item.instance for item in group], self.using)
                    for item, made_drafts in zip(group, made, strict=True):
                        drafts[item.index] = [
                            replace(d, attribution=item.attribution) for d in made_drafts
                        ]
                ops = iter(oplog.append([d for it in items for d in drafts[it.index]], self.using))
        except Exception:
            logger.info(
                "A batch's creates failed together; applying them one by one", exc_info=True
            )
            for n, item in enumerate(items):
                if self.stopped:
                    self._fail(item.index)
                else:
                    later = len(items) - n - 1 + len(self.live) - self.position
                    self._general(item.index, later=later)
            return
        for item in items:
            m = self.mutations[item.index]
            appended = [next(ops) for _ in drafts[item.index]]
            seqs = [op.seq for op in appended if op.stream.name == m.stream]
            # The object as its create op describes it (the same representation).
            described = [d.fields for d in drafts[item.index] if d.kind == "create"]
            self.results[item.index] = MutationResult(
                id=m.id,
                status="applied",
                seq=seqs[-1] if seqs else None,
                version=item.instance.sync_version,
                object=object_state(item.spec, item.instance, described[-1] if described else None),
            )

    def _general(self, i: int, *, later: int) -> None:
        """Apply mutation ``i`` alone, under its savepoint. An unexpected failure ends the
        batch there: it and the ``later`` mutations after it go alone after the batch, in
        order: a later mutation may build on this one, and a deadlock's victim must not be
        overtaken by what followed it."""
        m = self.mutations[i]
        try:
            self.results[i] = _execute(m, self.user, self.client_id, self.source, self.using)
        except Exception:
            logger.warning(
                "Mutation %s failed in a batch; it and the %s after it run alone",
                m.id,
                later,
                exc_info=True,
            )
            self.stopped = True
            self._fail(i)
            return
        spec = registry.by_label(m.model)
        if spec is not None:
            with contextlib.suppress(MutationRejected):
                self.touched.add((spec.label, spec.parse_pk(m.pk)))

    def _fail(self, i: int) -> None:
        idempotency.release(self.claims[i], self.using)
        self.failed.append(i)


def _by_model(items: list[_Pending]) -> list[tuple[SyncSpec, list[_Pending]]]:
    groups: dict[str, tuple[SyncSpec, list[_Pending]]] = {}
    for item in items:
        groups.setdefault(item.spec.label, (item.spec, []))[1].append(item)
    return list(groups.values())


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
        except (SyncError, DatabaseError, ValidationError) as exc:
            refusal = _refusal(mutation, exc)
            if refusal is None:
                raise
            return refusal
    # The seq in the mutation's own stream (a move also writes a create elsewhere).
    seqs = [op.seq for op in ops if op.stream.name == mutation.stream]
    if result.status in ("applied", "conflict") and seqs:
        result.seq = seqs[-1]
    return result


def _refusal(mutation: Mutation, exc: Exception) -> MutationResult | None:
    """The ``rejected`` result for an error that refuses a mutation (its checks, or the
    database's constraints); None for any other error."""
    if isinstance(exc, SyncError):
        return rejected(mutation, exc)
    if isinstance(exc, IntegrityError):
        # The database's own message names tables and constraints: keep it in the log.
        logger.info("Mutation %s refused by the database: %s", mutation.id, exc)
        return rejected(
            mutation,
            MutationRejected(
                "The database refused the write (a uniqueness or reference constraint).",
                code="integrity_error",
            ),
        )
    if isinstance(exc, DataError):
        logger.info("Mutation %s refused by the database: %s", mutation.id, exc)
        return rejected(
            mutation,
            MutationRejected("A value does not fit its database column.", code="validation_failed"),
        )
    if isinstance(exc, ValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else None
        return rejected(
            mutation,
            MutationRejected("; ".join(exc.messages), code="validation_failed", fields=fields),
        )
    return None
