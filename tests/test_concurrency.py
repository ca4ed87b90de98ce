"""Invariants 2 and 6 under real concurrent writers on PostgreSQL.

Each writer is a thread with its own database connection. Nothing here sleeps and hopes:
the slow transaction holds its seq until PostgreSQL reports the other writers waiting on
its lock, and "does not wait" is shown by a writer finishing while a lock is still held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction

from syncapp import oplog
from tests.testapp.models import Board, Card

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

WRITERS = 6
WRITES_EACH = 20
TIMEOUT = 30.0


def in_thread(target: Callable[[], Any], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def test_reader_never_skips_an_op_with_concurrent_writers_and_a_slow_transaction():
    board = Board.objects.create(name="b")
    stream = f"board:{board.pk}"
    Card.objects.create(board=board, title="first")  # the stream exists, seq 1
    errors: list[BaseException] = []
    holding = threading.Event()
    release = threading.Event()
    writers_done = threading.Event()
    seen: list[int] = []

    def slow_writer() -> None:
        with transaction.atomic():
            Card.objects.create(board=board, title="slow")  # takes a seq, holds the lock
            holding.set()
            assert release.wait(TIMEOUT)

    def writer(n: int) -> None:
        for i in range(WRITES_EACH):
            Card.objects.create(board=board, title=f"w{n}-{i}")

    def reader() -> None:
        epoch = oplog.ensure_stream(stream).epoch
        last = 0
        while True:
            finished = writers_done.is_set()
            page = oplog.read(stream, epoch=epoch, after=last, limit=1000)
            for op in page.ops:
                assert op.seq == last + 1, f"reader skipped from {last} to {op.seq}"
                seen.append(op.seq)
                last = op.seq
            if finished and not page.ops:
                return

    reader_thread = in_thread(reader, errors)
    slow = in_thread(slow_writer, errors)
    assert holding.wait(TIMEOUT)
    threads = [in_thread(lambda n=n: writer(n), errors) for n in range(WRITERS)]
    # The other writers queue behind the slow transaction's lock on the stream's head.
    wait_until(lambda: waiting_on_locks() >= WRITERS or bool(errors), "writers wait for the lock")
    release.set()
    for thread in [slow, *threads]:
        thread.join(TIMEOUT)
    writers_done.set()
    reader_thread.join(TIMEOUT)
    assert errors == []
    total = 2 + WRITERS * WRITES_EACH
    assert seen == list(range(1, total + 1))
    assert [op.seq for op in oplog.read(stream, epoch=None, after=0, limit=10_000).ops] == seen


def test_writers_to_different_streams_do_not_wait_for_each_other():
    slow_board = Board.objects.create(name="slow")
    fast_board = Board.objects.create(name="fast")
    Card.objects.create(board=slow_board, title="exists")
    errors: list[BaseException] = []
    holding = threading.Event()
    fast_done = threading.Event()

    def slow_writer() -> None:
        with transaction.atomic():
            Card.objects.create(board=slow_board, title="held")
            holding.set()
            # Commits only after the other stream's writer has committed: if that writer
            # waited for this transaction's locks, neither would finish.
            assert fast_done.wait(TIMEOUT), "the other stream's writer was blocked"

    def fast_writer() -> None:
        for i in range(5):
            Card.objects.create(board=fast_board, title=f"fast {i}")
        fast_done.set()

    slow = in_thread(slow_writer, errors)
    assert holding.wait(TIMEOUT)
    fast = in_thread(fast_writer, errors)
    fast.join(TIMEOUT)
    slow.join(TIMEOUT)
    assert errors == []
    assert oplog.ensure_stream(f"board:{fast_board.pk}").head == 5
    assert oplog.ensure_stream(f"board:{slow_board.pk}").head == 2


def replay(stream: str, upto: int) -> dict[str, tuple[int, dict[str, Any]]]:
    """The state of ``stream`` at seq ``upto``, rebuilt from the log alone."""
    state: dict[str, tuple[int, dict[str, Any]]] = {}
    for op in oplog.read(stream, epoch=None, after=0, limit=100_000).ops:
        if op.seq > upto:
            break
        key = f"{op.model}:{op.object_pk}"
        if op.kind == "delete":
            state.pop(key, None)
        elif op.kind == "create":
            state[key] = (op.version, dict(op.fields))
        else:
            state[key] = (op.version, {**state[key][1], **op.fields})
    return state


def test_snapshots_are_consistent_with_one_seq_under_concurrent_writes():
    board = Board.objects.create(name="b")
    stream = f"board:{board.pk}"
    cards = [Card.objects.create(board=board, title=f"c{i}") for i in range(5)]
    errors: list[BaseException] = []
    stop = threading.Event()
    snapshots: list[oplog.Snapshot] = []

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            card = cards[(n + i) % len(cards)]
            Card.objects.filter(pk=card.pk).update(body=f"{n}-{i}", likes=i)
            if i % 7 == 0:
                Card.objects.create(board=board, title=f"new {n}-{i}")
            if i % 11 == 5:
                victim = Card.objects.filter(board=board, title__startswith=f"new {n}-").first()
                if victim is not None:
                    victim.delete()
            i += 1

    threads = [in_thread(lambda n=n: writer(n), errors) for n in range(3)]
    try:
        while len(snapshots) < 25 and not errors:
            snapshots.append(oplog.snapshot(stream))
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert errors == []
    assert len({snap.seq for snap in snapshots}) > 1, "writers never overlapped the snapshots"
    for snap in snapshots:
        taken = {
            f"{obj['model']}:{obj['pk']}": (obj["version"], obj["fields"]) for obj in snap.objects
        }
        assert taken == replay(stream, snap.seq), f"snapshot at seq {snap.seq} is torn"


def test_queryset_update_rechecks_its_filter_once_the_rows_are_locked():
    """The "claim a row" pattern: of two concurrent claims, exactly one gets the row."""
    board = Board.objects.create(name="b")
    card = Card.objects.create(board=board, title="job")
    errors: list[BaseException] = []
    claimed: dict[str, int] = {}
    first_holds = threading.Event()
    release = threading.Event()

    def claim(name: str, hold: bool) -> None:
        with transaction.atomic():
            claimed[name] = Card.objects.filter(pk=card.pk, done=False).update(done=True)
            if hold:
                first_holds.set()
                assert release.wait(TIMEOUT)

    first = in_thread(lambda: claim("first", True), errors)
    assert first_holds.wait(TIMEOUT)
    second = in_thread(lambda: claim("second", False), errors)
    wait_until(lambda: waiting_on_locks() >= 1 or bool(errors), "the second claim waits")
    release.set()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert errors == []
    assert claimed == {"first": 1, "second": 0}
    assert [op.fields for op in oplog.read(card.sync_stream, epoch=None, after=1, limit=9).ops] == [
        {"done": True}
    ]


def test_large_queryset_update_and_a_save_of_one_of_its_rows_do_not_deadlock():
    """Rows are locked before streams on every path, so these two queue, not deadlock."""
    board = Board.objects.create(name="b")
    Card.objects.bulk_create([Card(board=board, title=str(i)) for i in range(600)])
    last = Card.objects.order_by().values_list("pk", flat=True)[599]  # in the last chunk
    errors: list[BaseException] = []
    holding = threading.Event()
    release = threading.Event()

    def single() -> None:
        with transaction.atomic():
            card = Card.objects.select_for_update().get(pk=last)
            holding.set()
            assert release.wait(TIMEOUT)
            card.title = "single"
            card.save()

    def bulk() -> None:
        Card.objects.filter(board=board).update(body="bulk")

    one = in_thread(single, errors)
    assert holding.wait(TIMEOUT)
    many = in_thread(bulk, errors)
    wait_until(lambda: waiting_on_locks() >= 1 or bool(errors), "the update waits for the row")
    release.set()
    one.join(TIMEOUT)
    many.join(TIMEOUT)
    assert errors == []
    assert Card.objects.filter(body="bulk").count() == 600
    assert Card.objects.get(pk=last).title == "single"
