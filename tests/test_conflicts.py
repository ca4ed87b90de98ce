"""Conflict policies, each against the database: lww, version, manual, counter, custom."""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncapp import clocks, mutations
from syncapp.clocks import HybridClock
from syncapp.conflicts import Apply, FieldContext, Keep, decide
from syncapp.models import Conflict
from tests.helpers import mutation, ops
from tests.testapp.models import Card, Doc, Note

pytestmark = pytest.mark.django_db

NOW = 1_800_000_000_000  # ms; the injected server time


@pytest.fixture(autouse=True)
def fixed_clock():
    with clocks.using_clock(HybridClock("~server", lambda: NOW)) as clock:
        yield clock


def apply(user, client_id="c1", **kwargs):
    return mutations.apply_one(mutation(**kwargs), user=user, client_id=client_id, source="test")


@pytest.fixture
def card(board):
    return Card.objects.create(board=board, title="title", body="body")


def update(user, card, client_id="c1", **kwargs):
    kwargs.setdefault("stream", f"board:{card.board_id}")
    return apply(user, client_id, model="testapp.card", pk=str(card.pk), op="update", **kwargs)


# lww


def test_lww_newer_clock_wins(user, card):
    result = update(user, card, fields={"body": "new"}, clock=f"{NOW + 10}:0")
    assert result.status == "applied"
    card.refresh_from_db()
    assert card.body == "new"


def test_lww_older_clock_keeps_the_server_value(user, card):
    update(user, card, fields={"body": "newer"}, clock=f"{NOW + 10}:0")
    result = update(user, card, fields={"body": "older"}, clock=f"{NOW + 5}:0")
    assert result.status == "conflict"
    assert result.error.fields == {"body": ["A newer write to this field won."]}
    assert result.object.fields["body"] == "newer"
    assert result.seq is None


def test_lww_tie_goes_to_the_greater_client_id(user, card):
    update(user, card, "client-b", fields={"body": "from b"}, clock=f"{NOW + 10}:0")
    lost = update(user, card, "client-a", fields={"body": "from a"}, clock=f"{NOW + 10}:0")
    won = update(user, card, "client-c", fields={"body": "from c"}, clock=f"{NOW + 10}:0")
    assert (lost.status, won.status) == ("conflict", "applied")
    card.refresh_from_db()
    assert card.body == "from c"


def test_lww_concurrent_edits_to_different_fields_both_survive(user, card):
    a = update(user, card, "a", fields={"body": "A"}, clock=f"{NOW + 20}:0")
    b = update(user, card, "b", fields={"done": True}, clock=f"{NOW + 10}:0")
    assert (a.status, b.status) == ("applied", "applied")
    card.refresh_from_db()
    assert (card.body, card.done) == ("A", True)


def test_lww_write_without_clock_gets_a_server_stamp_and_wins(user, card):
    update(user, card, fields={"body": "stamped"}, clock=f"{NOW + 30}:0")
    result = update(user, card, fields={"body": "plain"})
    assert result.status == "applied"
    card.refresh_from_db()
    assert card.body == "plain"


def test_lww_client_clock_far_ahead_is_clamped(user, card, settings):
    settings.SYNCAPP = {**settings.SYNCAPP, "MAX_CLOCK_SKEW": 60}
    hour_ahead = NOW + 3_600_000
    update(user, card, "a", fields={"body": "from the future"}, clock=f"{hour_ahead}:0")
    card.refresh_from_db()
    assert clocks.Stamp.decode(card.sync_clocks["body"]).wall == NOW + 60_000
    # Without the clamp this honest write two minutes ahead would lose for an hour.
    result = update(user, card, "b", fields={"body": "honest"}, clock=f"{NOW + 61_000}:0")
    assert result.status == "applied"


def test_lww_same_value_with_newer_clock_still_advances_the_clock(user, card):
    update(user, card, "a", fields={"body": "x"}, clock=f"{NOW + 10}:0")
    update(user, card, "b", fields={"body": "x"}, clock=f"{NOW + 30}:0")
    result = update(user, card, "c", fields={"body": "y"}, clock=f"{NOW + 20}:0")
    assert result.status == "conflict"


lww_writes = st.lists(
    st.tuples(
        st.sampled_from(["body", "done"]),
        st.integers(min_value=0, max_value=4),  # wall offset: small, so ties happen
        st.integers(min_value=0, max_value=2),  # counter
        st.sampled_from(["a", "b", "c"]),  # client id
        st.integers(min_value=0, max_value=3),  # value
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda w: (w[1], w[2], w[3]),  # one client never reuses a clock
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=lww_writes, data=st.data())
def test_lww_converges_whatever_order_concurrent_mutations_arrive_in(user, board, writes, data):
    """Every arrival order of the same mutations leaves the same row: the max clock wins."""
    orders = [list(range(len(writes)))]
    orders.append(data.draw(st.permutations(orders[0])))
    orders.append(list(reversed(orders[0])))
    finals = []
    for order in orders:
        with transaction.atomic(), clocks.using_clock(HybridClock("~server", lambda: NOW)):
            card = Card.objects.create(board=board, title="t")
            for index in order:
                name, wall, counter, client, value = writes[index]
                fields = {"body": f"v{value}"} if name == "body" else {"done": value % 2 == 1}
                update(user, card, client, fields=fields, clock=f"{NOW + 100 + wall}:{counter}")
            card.refresh_from_db()
            finals.append((card.body, card.done))
            transaction.set_rollback(True)
    assert finals[0] == finals[1] == finals[2]
    expected = {"body": "", "done": False}
    best: dict[str, tuple[int, int, str]] = {}
    for name, wall, counter, client, value in writes:
        key = (wall, counter, client)
        if name not in best or key > best[name]:
            best[name] = key
            expected[name] = f"v{value}" if name == "body" else value % 2 == 1
    assert finals[0] == (expected["body"], expected["done"])


@given(
    stored=st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from("abc")),
    incoming=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from("abc"), st.integers()),
        min_size=1,
        max_size=8,
        unique_by=lambda w: w[:3],
    ),
)
def test_lww_decision_keeps_the_greatest_clock_in_every_order(stored, incoming):
    start = clocks.Stamp(*stored)

    def run(order):
        value: object = "stored"
        clock: clocks.Stamp | None = start
        for wall, counter, node, v in order:
            ctx = FieldContext(
                name="f",
                policy="lww",
                field_scoped=False,
                client_value=v,
                server_value=value,
                base_version=None,
                object_version=1,
                field_version=1,
                client_clock=clocks.Stamp(wall, counter, node),
                stored_clock=clock,
                user=None,
            )
            outcome = decide(ctx)
            if isinstance(outcome, Apply):
                value, clock = outcome.value, outcome.clock
            else:
                assert isinstance(outcome, Keep)
        return value, clock

    results = {run(list(p)) for p in itertools.islice(itertools.permutations(incoming), 24)}
    assert len(results) == 1


# version


def test_version_policy_conflicts_when_the_object_moved_on(user):
    doc = Doc.objects.create(text="v1")
    doc.text = "v2"
    doc.save()
    result = apply(
        user,
        stream="docs",
        model="testapp.doc",
        pk=doc.pk,
        op="update",
        fields={"text": "mine"},
        base_version=1,
    )
    assert result.status == "conflict"
    assert result.object.fields["text"] == "v2"
    assert result.object.version == 2


def test_version_policy_applies_on_the_current_version(user):
    doc = Doc.objects.create(text="v1")
    result = apply(
        user,
        stream="docs",
        model="testapp.doc",
        pk=doc.pk,
        op="update",
        fields={"text": "mine"},
        base_version=1,
    )
    assert (result.status, result.version) == ("applied", 2)


def test_version_policy_needs_base_version(user):
    doc = Doc.objects.create(text="v1")
    result = apply(
        user, stream="docs", model="testapp.doc", pk=doc.pk, op="update", fields={"text": "x"}
    )
    assert (result.status, result.error.code) == ("rejected", "base_version_required")


def test_field_version_policy_ignores_changes_to_other_fields(user, card):
    update(user, card, fields={"done": True})  # version 2; rank untouched since 1
    result = update(user, card, fields={"rank": 5}, base_version=1)
    assert result.status == "applied"


def test_field_version_policy_conflicts_when_that_field_changed(user, card):
    update(user, card, fields={"rank": 3}, base_version=1)
    result = update(user, card, fields={"rank": 5}, base_version=1)
    assert result.status == "conflict"
    assert result.object.fields["rank"] == 3


# manual


def test_manual_policy_queues_a_stale_write(user, card):
    update(user, card, "a", fields={"title": "server"}, base_version=1)
    result = update(user, card, "b", fields={"title": "client", "done": True}, base_version=1)
    assert result.status == "conflict"
    assert "title" in result.error.fields
    card.refresh_from_db()
    assert (card.title, card.done) == ("server", True)
    conflict = Conflict.objects.get()
    assert (conflict.field, conflict.base_value, conflict.server_value, conflict.client_value) == (
        "title",
        "title",
        "server",
        "client",
    )
    assert (conflict.base_version, conflict.server_version) == (1, 3)
    assert conflict.status == "pending"
    assert conflict.user == user
    assert conflict.client_id == "b"


def test_manual_policy_does_not_block_an_edit_of_another_field(user, card):
    update(user, card, "a", fields={"done": True})
    result = update(user, card, "b", fields={"title": "renamed"}, base_version=1)
    assert result.status == "applied"
    assert not Conflict.objects.exists()


def test_manual_policy_same_value_is_no_conflict(user, card):
    update(user, card, "a", fields={"title": "same"}, base_version=1)
    result = update(user, card, "b", fields={"title": "same"}, base_version=1)
    assert result.status == "applied"
    assert not Conflict.objects.exists()


# counter


def test_counter_deltas_all_count(user, card):
    for delta in (1, 5, -2):
        assert update(user, card, fields={"likes": {"delta": delta}}).status == "applied"
    card.refresh_from_db()
    assert card.likes == 4
    assert [op.fields["likes"] for op in ops(f"board:{card.board_id}")[1:]] == [1, 6, 4]


@pytest.mark.parametrize("value", [3, "3", {"delta": "1"}, {"delta": 1, "x": 2}, {"delta": True}])
def test_counter_needs_an_integer_delta(user, card, value):
    result = update(user, card, fields={"likes": value})
    assert (result.status, result.error.code) == ("rejected", "invalid_delta")


def test_counter_on_create_takes_the_initial_value(user, board):
    pk = str(uuid.uuid4())
    apply(
        user,
        stream=f"board:{board.pk}",
        model="testapp.card",
        pk=pk,
        op="create",
        fields={"board": str(board.pk), "title": "t", "likes": 7},
    )
    assert Card.objects.get(pk=pk).likes == 7


# custom resolver and deletes


def test_custom_resolver_decides(user):
    note = Note.objects.create(text="a long text")
    kwargs = {"stream": "notes", "model": "testapp.note", "pk": str(note.pk), "op": "update"}
    assert apply(user, **kwargs, fields={"text": "short"}).status == "conflict"
    assert apply(user, **kwargs, fields={"text": "an even longer text"}).status == "applied"


def test_delete_wins_over_concurrent_edits_by_default(user, card):
    update(user, card, fields={"body": "edited"})
    result = apply(
        user,
        stream=f"board:{card.board_id}",
        model="testapp.card",
        pk=str(card.pk),
        op="delete",
        base_version=1,
    )
    assert result.status == "applied"
    assert not Card.objects.exists()


def test_delete_of_an_edited_object_conflicts_when_the_model_says_so(user):
    doc = Doc.objects.create(text="v1")
    doc.text = "v2"
    doc.save()
    kwargs = {"stream": "docs", "model": "testapp.doc", "pk": doc.pk, "op": "delete"}
    result = apply(user, **kwargs, base_version=1)
    assert (result.status, result.error.code) == ("conflict", "stale")
    assert apply(user, **kwargs).error.code == "base_version_required"
    assert apply(user, **kwargs, base_version=2).status == "applied"
