"""Invariant 7: idempotency keys per owner, with stored results, mismatch and in-progress."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import msgspec
import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connections, transaction
from django.utils import timezone

from syncapp import idempotency, mutations
from syncapp.models import IdempotencyRecord, Op
from syncapp.protocol import MutationResult, fingerprint
from tests.helpers import in_progress_record, mutation
from tests.testapp.models import Board

pytestmark = pytest.mark.django_db


def board_create(name="b", pk=None, **kwargs):
    return mutation(
        stream="boards",
        model="testapp.board",
        pk=pk or str(uuid.uuid4()),
        op="create",
        fields={"name": name},
        **kwargs,
    )


def apply(m, user, client_id="c1"):
    return mutations.apply_one(m, user=user, client_id=client_id, source="test")


def assert_in_progress(result: MutationResult) -> None:
    """Rejected as ``in_progress``, to be retried."""
    assert result.error is not None
    assert (result.status, result.error.code, result.error.retry) == (
        "rejected",
        "in_progress",
        True,
    )


def test_retry_gets_the_stored_result_and_makes_no_second_op(user):
    m = board_create()
    first = apply(m, user)
    again = apply(m, user)
    assert again == first
    assert Op.objects.count() == 1


def test_retry_with_reordered_fields_is_the_same_payload(user):
    m = mutation(
        stream="boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "x", "public": False},
    )
    reordered = msgspec.structs.replace(m, fields={"public": False, "name": "x"})
    assert fingerprint(m) == fingerprint(reordered)
    apply(m, user)
    assert apply(reordered, user).status == "applied"
    assert Op.objects.count() == 1


def test_rejections_are_stored_too(user):
    m = mutation(
        stream="boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "x" * 101},
    )
    first = apply(m, user)
    assert first.error.code == "validation_failed"
    assert apply(m, user) == first


def test_same_id_with_another_payload_is_a_mismatch(user):
    m = board_create("one")
    apply(m, user)
    other = msgspec.structs.replace(m, fields={"name": "two"})
    result = apply(other, user)
    assert (result.status, result.error.code, result.error.retry) == (
        "rejected",
        "idempotency_mismatch",
        False,
    )
    assert Op.objects.count() == 1


def test_another_users_id_reveals_nothing(user, other_user):
    m = board_create("mine")
    apply(m, user)
    theirs = msgspec.structs.replace(m, pk=str(uuid.uuid4()), fields={"name": "theirs"})
    result = apply(theirs, other_user)
    assert result.status == "applied"
    assert result.object.fields["name"] == "theirs"
    assert IdempotencyRecord.objects.filter(key=m.id).count() == 2


def test_anonymous_owners_are_their_clients():
    anonymous = AnonymousUser()
    m = mutation(
        stream="public:boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "a", "public": True},
    )
    apply(m, anonymous, "tab-a")
    other = msgspec.structs.replace(m, pk=str(uuid.uuid4()))
    assert apply(other, anonymous, "tab-b").status == "applied"
    assert set(IdempotencyRecord.objects.values_list("owner", flat=True)) == {
        "client:tab-a",
        "client:tab-b",
    }


def test_retry_while_the_first_attempt_runs_is_in_progress(user):
    m = board_create()
    in_progress_record(user, m, timezone.now())
    result = apply(m, user)
    assert_in_progress(result)
    assert not Op.objects.exists()


def test_attempt_whose_lease_ran_out_is_taken_over(user):
    m = board_create()
    in_progress_record(user, m, timezone.now() - timedelta(minutes=5))
    result = apply(m, user)
    assert result.status == "applied"
    record = IdempotencyRecord.objects.get()
    assert record.status == "done"


def test_an_attempt_that_lost_its_lease_cannot_finish(user):
    m = board_create()
    claim = idempotency.claim(f"user:{user.pk}", m.id, fingerprint(m), "default")
    taken = uuid.uuid4()
    IdempotencyRecord.objects.update(lease=taken)  # taken over by another attempt
    with pytest.raises(idempotency.LeaseLost), transaction.atomic():
        idempotency.finish(claim, MutationResult(id=m.id, status="gone"), "default")
    record = IdempotencyRecord.objects.get()
    assert (record.status, record.lease, record.result) == ("in_progress", taken, None)


def test_a_mutation_whose_lease_is_taken_over_while_it_runs_rolls_back(user, monkeypatch):
    """The take-over happens inside the mutation's transaction here (one connection);
    on PostgreSQL the test below has another attempt commit it, as in life."""
    m = board_create()
    execute = mutations._execute

    def taken_over(*args, **kwargs):
        result = execute(*args, **kwargs)
        IdempotencyRecord.objects.update(lease=uuid.uuid4())
        return result

    monkeypatch.setattr(mutations, "_execute", taken_over)
    result = apply(m, user)
    assert_in_progress(result)
    assert not Op.objects.exists()
    assert not Board.objects.exists()


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_an_attempt_overtaken_by_a_retry_rolls_back_and_the_retry_commits(
    user, settings, monkeypatch
):
    """A slow attempt's lease runs out (at once, here); a retry takes the record over and
    commits while the slow one still runs. The slow one rolls back at its finish, which
    lets the retry's insert of the same board go on: one board, one op, the retry's."""
    settings.SYNCAPP = {**settings.SYNCAPP, "IDEMPOTENCY_LEASE": 0}
    m = board_create()
    execute = mutations._execute
    retried: list[MutationResult] = []
    errors: list[BaseException] = []

    def retry() -> None:
        try:
            retried.append(apply(m, user))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=retry)

    def slow(*args, **kwargs):
        result = execute(*args, **kwargs)
        if threading.current_thread() is thread:
            return result  # the retry runs at its speed
        claim = IdempotencyRecord.objects.values_list("lease", flat=True)
        ours = claim.get()
        thread.start()
        # The retry takes the record over (its own transaction, committed) and then
        # waits for this one's uncommitted board; read committed shows the take-over.
        deadline = time.monotonic() + 10
        while claim.get() == ours:
            assert time.monotonic() < deadline, "the retry did not take the record over"
            time.sleep(0.01)
        return result

    monkeypatch.setattr(mutations, "_execute", slow)
    slowest = apply(m, user)
    monkeypatch.setattr(mutations, "_execute", execute)
    thread.join(30)
    assert errors == []
    assert_in_progress(slowest)
    assert [r.status for r in retried] == ["applied"]
    assert Board.objects.count() == 1
    assert [op.mutation_id for op in Op.objects.all()] == [m.id]
    assert apply(m, user) == retried[0]


def test_expire_deletes_records_past_the_ttl(user, settings):
    settings.SYNCAPP = {**settings.SYNCAPP, "IDEMPOTENCY_TTL": 3600}
    apply(board_create("old"), user)
    apply(board_create("new"), user)
    IdempotencyRecord.objects.filter(result__object__fields__name="old").update(
        created_at=timezone.now() - timedelta(hours=2)
    )
    assert idempotency.expire() == 1
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_apply_exactly_once(django_user_model):
    user = django_user_model.objects.create_user("racer")
    m = board_create()
    barrier = threading.Barrier(6)
    results = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            barrier.wait(10)
            results.append(apply(m, user))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert Op.objects.count() == 1
    applied = [r for r in results if r.status == "applied"]
    waiting = [r for r in results if r.status == "rejected"]
    assert applied
    assert all(r == applied[0] for r in applied)
    assert all(r.error.code == "in_progress" and r.error.retry for r in waiting)
    assert apply(m, user) == applied[0]
