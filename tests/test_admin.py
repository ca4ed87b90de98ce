"""The admin: the op log, streams, idempotency records, conflicts, and synced models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from pytest_django.asserts import assertContains, assertInHTML, assertNotContains

from syncapp import mutations
from syncapp.models import Conflict, IdempotencyRecord, Op, Stream
from tests.helpers import mutation, ops
from tests.testapp.models import Board, Card

pytestmark = pytest.mark.django_db

OP_CHANGELIST = reverse("admin:syncapp_op_changelist")
CONFLICT_CHANGELIST = reverse("admin:syncapp_conflict_changelist")


def card_stream(board: Board) -> str:
    return f"board:{board.pk}"


def update_title(card: Card, title: str, *, base_version: int, user) -> None:
    m = mutation(
        stream=card_stream(card.board),
        model="testapp.card",
        pk=str(card.pk),
        op="update",
        fields={"title": title},
        base_version=base_version,
    )
    mutations.apply_one(m, user=user, client_id=None, source="test")


def make_conflict(board: Board, user, other_user, *, title: str = "orig") -> Conflict:
    """``user`` retitles a card; ``other_user``'s edit from the same base is kept aside."""
    card = Card.objects.create(board=board, title=title)
    update_title(card, f"{title} (server)", base_version=1, user=user)
    update_title(card, f"{title} (client)", base_version=1, user=other_user)
    return Conflict.objects.get(object_pk=str(card.pk))


@pytest.fixture
def conflict(board, user, other_user) -> Conflict:
    return make_conflict(board, user, other_user)


def card_of(conflict: Conflict) -> Card:
    return Card.objects.get(pk=conflict.object_pk)


def resolve_url(conflict: Conflict) -> str:
    return reverse("admin:syncapp_conflict_resolve", args=[conflict.pk])


def change_url(conflict: Conflict) -> str:
    return reverse("admin:syncapp_conflict_change", args=[conflict.pk])


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def results(response) -> list:
    return list(response.context["cl"].result_list)


@pytest.fixture
def viewer(django_user_model) -> Client:
    """A staff user who may view conflicts but not change them."""
    staff = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(codename="view_conflict", content_type__app_label="syncapp")
    )
    client = Client()
    client.force_login(staff)
    return client


# -- the op log ----------------------------------------------------------------------


def test_op_changelist_lists_ops(admin_client, board):
    Card.objects.create(board=board, title="a")
    response = admin_client.get(OP_CHANGELIST)
    assert response.status_code == 200
    assert {(op.stream.name, op.kind) for op in results(response)} == {
        ("boards", "create"),
        (card_stream(board), "create"),
    }


def test_op_changelist_offers_no_add(admin_client):
    response = admin_client.get(OP_CHANGELIST)
    assert response.context["has_add_permission"] is False
    assert admin_client.get(reverse("admin:syncapp_op_add")).status_code == 403


def test_op_changelist_offers_no_actions(admin_client, board):
    response = admin_client.get(OP_CHANGELIST)
    assert response.context["action_form"] is None


def test_op_change_page_is_read_only(admin_client, board):
    op = Op.objects.get()
    response = admin_client.get(reverse("admin:syncapp_op_change", args=[op.pk]))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assertNotContains(response, 'name="_save"')


def test_op_change_post_is_refused(admin_client, board):
    op = Op.objects.get()
    url = reverse("admin:syncapp_op_change", args=[op.pk])
    response = admin_client.post(url, {"kind": "delete", "seq": 99, "version": 99})
    assert response.status_code == 403
    op.refresh_from_db()
    assert (op.kind, op.seq, op.version) == ("create", 1, 1)


def test_op_delete_is_refused(admin_client, board):
    op = Op.objects.get()
    url = reverse("admin:syncapp_op_delete", args=[op.pk])
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert Op.objects.filter(pk=op.pk).exists()


def test_op_changelist_filter_by_stream(admin_client, board):
    Card.objects.create(board=board, title="a")
    stream = Stream.objects.get(name=card_stream(board))
    response = admin_client.get(OP_CHANGELIST, {"stream__id__exact": stream.pk})
    assert [op.stream_id for op in results(response)] == [stream.pk]


def test_op_changelist_filter_by_model(admin_client, board):
    Card.objects.create(board=board, title="a")
    Card.objects.create(board=board, title="b")
    response = admin_client.get(OP_CHANGELIST, {"model": "testapp.card"})
    assert [op.model for op in results(response)] == ["testapp.card", "testapp.card"]


def test_op_changelist_filter_by_kind(admin_client, board):
    board.name = "renamed"
    board.save()
    response = admin_client.get(OP_CHANGELIST, {"kind__exact": "update"})
    assert [(op.seq, op.kind) for op in results(response)] == [(2, "update")]


def test_op_changelist_filter_by_source(admin_client, board, user):
    update = mutation(
        stream="boards", model="testapp.board", pk=str(board.pk), op="update", fields={"name": "x"}
    )
    mutations.apply_one(update, user=user, client_id=None, source="rest")
    response = admin_client.get(OP_CHANGELIST, {"source__exact": "rest"})
    assert [(op.seq, op.source) for op in results(response)] == [(2, "rest")]


def test_op_changelist_filter_by_time(admin_client, board):
    board.name = "renamed"
    board.save()
    Op.objects.filter(seq=1).update(created_at=datetime(2020, 5, 17, 12, tzinfo=UTC))
    response = admin_client.get(
        OP_CHANGELIST,
        {
            "created_at__gte": "2020-05-17 00:00:00+00:00",
            "created_at__lt": "2020-05-18 00:00:00+00:00",
        },
    )
    assert [op.seq for op in results(response)] == [1]


def test_op_changelist_date_hierarchy(admin_client, board):
    board.name = "renamed"
    board.save()
    Op.objects.filter(seq=1).update(created_at=datetime(2020, 5, 17, 12, tzinfo=UTC))
    response = admin_client.get(OP_CHANGELIST, {"created_at__year": "2020"})
    assert [op.seq for op in results(response)] == [1]


def test_op_changelist_newest_first(admin_client, board):
    board.name = "renamed"
    board.save()
    response = admin_client.get(OP_CHANGELIST)
    assert [op.seq for op in results(response)] == [2, 1]


# -- streams and idempotency records ---------------------------------------------------


def create_board(user):
    """Create a board through the mutation path, which stores an idempotency record."""
    create = mutation(
        stream="boards",
        model="testapp.board",
        pk=str(uuid.uuid4()),
        op="create",
        fields={"name": "n"},
    )
    mutations.apply_one(create, user=user, client_id=None, source="test")
    return create


def test_stream_changelist_lists_streams(admin_client, board):
    Card.objects.create(board=board, title="a")
    response = admin_client.get(reverse("admin:syncapp_stream_changelist"))
    assert response.status_code == 200
    assert sorted(s.name for s in results(response)) == sorted(["boards", card_stream(board)])
    assertContains(response, card_stream(board))


def test_stream_changelist_is_read_only(admin_client, board):
    response = admin_client.get(reverse("admin:syncapp_stream_changelist"))
    assert response.context["has_add_permission"] is False
    assert response.context["action_form"] is None
    stream = Stream.objects.get(name="boards")
    delete = reverse("admin:syncapp_stream_delete", args=[stream.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Stream.objects.filter(pk=stream.pk).exists()


def test_idempotency_record_changelist_lists_records(admin_client, user):
    create = create_board(user)
    response = admin_client.get(reverse("admin:syncapp_idempotencyrecord_changelist"))
    assert response.status_code == 200
    assert [(r.key, r.owner, r.status) for r in results(response)] == [
        (create.id, f"user:{user.pk}", "done")
    ]
    assert response.context["has_add_permission"] is False


def test_idempotency_record_filter_by_status(admin_client, user):
    create_board(user)
    url = reverse("admin:syncapp_idempotencyrecord_changelist")
    assert results(admin_client.get(url, {"status__exact": "in_progress"})) == []
    assert len(results(admin_client.get(url, {"status__exact": "done"}))) == 1


# -- conflicts: the changelist ---------------------------------------------------------


def test_conflict_made_by_the_manual_policy(conflict, other_user):
    assert (conflict.field, conflict.status, conflict.user) == ("title", "pending", other_user)
    assert (conflict.base_value, conflict.server_value, conflict.client_value) == (
        "orig",
        "orig (server)",
        "orig (client)",
    )


def test_conflict_changelist_shows_pending_by_default(admin_client, board, user, other_user):
    resolved = make_conflict(board, user, other_user, title="one")
    Conflict.objects.filter(pk=resolved.pk).update(status="resolved", resolution="server")
    pending = make_conflict(board, user, other_user, title="two")
    response = admin_client.get(CONFLICT_CHANGELIST)
    assert response.status_code == 200
    assert results(response) == [pending]


def test_conflict_changelist_marks_pending_as_the_selected_filter(admin_client, conflict):
    response = admin_client.get(CONFLICT_CHANGELIST)
    status_filter = next(
        spec for spec in response.context["cl"].filter_specs if spec.parameter_name == "status"
    )
    selected = [
        c["display"] for c in status_filter.choices(response.context["cl"]) if c["selected"]
    ]
    assert selected == ["Pending"]


def test_conflict_changelist_resolved_filter(admin_client, board, user, other_user):
    resolved = make_conflict(board, user, other_user, title="one")
    Conflict.objects.filter(pk=resolved.pk).update(status="resolved", resolution="server")
    make_conflict(board, user, other_user, title="two")
    response = admin_client.get(CONFLICT_CHANGELIST, {"status": "resolved"})
    assert results(response) == [resolved]


def test_conflict_changelist_all_filter_lists_pending_first(admin_client, board, user, other_user):
    first = make_conflict(board, user, other_user, title="one")
    second = make_conflict(board, user, other_user, title="two")
    Conflict.objects.filter(pk=second.pk).update(status="resolved", resolution="server")
    third = make_conflict(board, user, other_user, title="three")
    response = admin_client.get(CONFLICT_CHANGELIST, {"status": "all"})
    assert results(response) == [third, first, second]


def test_conflict_changelist_has_one_all_choice(admin_client, conflict):
    response = admin_client.get(CONFLICT_CHANGELIST)
    status_filter = next(
        spec for spec in response.context["cl"].filter_specs if spec.parameter_name == "status"
    )
    displays = [str(c["display"]) for c in status_filter.choices(response.context["cl"])]
    assert displays == ["Pending", "Resolved", "All"]


def test_conflict_add_is_refused(admin_client):
    assert admin_client.get(reverse("admin:syncapp_conflict_add")).status_code == 403


# -- conflicts: the change page --------------------------------------------------------


def test_conflict_change_page_shows_values_side_by_side(admin_client, conflict):
    response = admin_client.get(change_url(conflict))
    assert response.status_code == 200
    content = response.content.decode()
    for label, value, note in [
        ("Base", "orig", "version 1"),
        ("Server", "orig (server)", f"version {conflict.server_version}"),
        ("Client", "orig (client)", "by bea"),
    ]:
        assertInHTML(
            f'<section><h3>{label}</h3><pre>{value}</pre><p class="help">{note}</p></section>',
            content,
        )
    assert content.index("<h3>Base</h3>") < content.index("<h3>Server</h3>")
    assert content.index("<h3>Server</h3>") < content.index("<h3>Client</h3>")


def test_conflict_change_page_offers_the_three_resolutions(admin_client, conflict):
    response = admin_client.get(change_url(conflict))
    assertContains(response, f'action="{resolve_url(conflict)}"')
    for value in ("server", "client", "value"):
        assertContains(response, f'name="resolution" value="{value}"')


def test_conflict_change_page_of_a_resolved_conflict(admin_client, admin_user, conflict):
    admin_client.post(resolve_url(conflict), {"resolution": "client"})
    response = admin_client.get(change_url(conflict))
    assertContains(response, "Resolved: took the client&#x27;s value by admin")
    assertNotContains(response, 'name="resolution"')


def test_conflict_change_page_hides_resolutions_without_change_permission(viewer, conflict):
    response = viewer.get(change_url(conflict))
    assert response.status_code == 200
    assertNotContains(response, 'name="resolution"')


def test_conflict_change_page_of_a_missing_conflict(admin_client):
    url = reverse("admin:syncapp_conflict_change", args=[999999])
    assert admin_client.get(url).status_code == 404


# -- conflicts: resolving --------------------------------------------------------------


def test_resolve_keep_server_marks_resolved(admin_client, admin_user, conflict):
    response = admin_client.post(resolve_url(conflict), {"resolution": "server"})
    assert response.status_code == 302
    assert response.url == change_url(conflict)
    conflict.refresh_from_db()
    assert (conflict.status, conflict.resolution, conflict.resolved_by) == (
        "resolved",
        "server",
        admin_user,
    )
    assert conflict.resolved_value == "orig (server)"
    assert conflict.resolved_at is not None
    assert conflict.resolution_seq is None


def test_resolve_keep_server_writes_no_op(admin_client, conflict):
    card = card_of(conflict)
    before = ops(card_stream(card.board))
    admin_client.post(resolve_url(conflict), {"resolution": "server"})
    assert ops(card_stream(card.board)) == before
    card.refresh_from_db()
    assert card.title == "orig (server)"


def test_resolve_says_it_succeeded(admin_client, conflict):
    response = admin_client.post(resolve_url(conflict), {"resolution": "server"})
    assert messages_of(response) == ["Resolved 1 conflict(s)."]


def test_resolve_message_is_shown_on_the_change_page(admin_client, conflict):
    response = admin_client.post(resolve_url(conflict), {"resolution": "server"}, follow=True)
    assert response.redirect_chain == [(change_url(conflict), 302)]
    assertContains(response, "Resolved 1 conflict(s).")


def test_resolve_take_client_changes_the_object(admin_client, conflict):
    admin_client.post(resolve_url(conflict), {"resolution": "client"})
    card = card_of(conflict)
    assert card.title == "orig (client)"


def test_resolve_take_client_writes_an_op_through_the_mutation_path(
    admin_client, admin_user, conflict
):
    card = card_of(conflict)
    head = Stream.objects.get(name=card_stream(card.board)).head
    admin_client.post(resolve_url(conflict), {"resolution": "client"})
    [op] = [op for op in ops(card_stream(card.board)) if op.seq > head]
    assert (op.kind, op.object_pk, op.fields["title"]) == ("update", str(card.pk), "orig (client)")
    assert op.mutation_id is not None
    assert (op.actor, op.source) == (admin_user, "admin")


def test_resolve_take_client_records_the_resolution(admin_client, admin_user, conflict):
    admin_client.post(resolve_url(conflict), {"resolution": "client"})
    conflict.refresh_from_db()
    op = ops(conflict.stream)[-1]
    assert (conflict.status, conflict.resolution, conflict.resolved_by) == (
        "resolved",
        "client",
        admin_user,
    )
    assert conflict.resolved_value == "orig (client)"
    assert conflict.resolution_seq == op.seq


def test_resolve_take_client_stores_an_idempotency_record(admin_client, admin_user, conflict):
    admin_client.post(resolve_url(conflict), {"resolution": "client"})
    op = ops(conflict.stream)[-1]
    record = IdempotencyRecord.objects.get(key=op.mutation_id)
    assert (record.owner, record.status) == (f"user:{admin_user.pk}", "done")


def test_resolve_enter_value_changes_the_object(admin_client, admin_user, conflict):
    admin_client.post(resolve_url(conflict), {"resolution": "value", "value": "Agreed title"})
    card = card_of(conflict)
    assert card.title == "Agreed title"
    conflict.refresh_from_db()
    op = ops(conflict.stream)[-1]
    assert op.fields["title"] == "Agreed title"
    assert op.mutation_id is not None
    assert (op.actor, op.source) == (admin_user, "admin")
    assert (conflict.status, conflict.resolution, conflict.resolved_by) == (
        "resolved",
        "value",
        admin_user,
    )
    assert (conflict.resolved_value, conflict.resolution_seq) == ("Agreed title", op.seq)


def test_resolve_enter_value_for_a_text_field_is_taken_as_typed(admin_client, conflict):
    admin_client.post(resolve_url(conflict), {"resolution": "value", "value": "true"})
    assert card_of(conflict).title == "true"


def test_resolve_enter_invalid_value_explains_and_changes_nothing(admin_client, conflict):
    card = card_of(conflict)
    head = Stream.objects.get(name=conflict.stream).head
    response = admin_client.post(resolve_url(conflict), {"resolution": "value", "value": "x" * 300})
    [message] = messages_of(response)
    assert f"Conflict {conflict.pk}" in message
    assert "no more than 200 characters" in message
    conflict.refresh_from_db()
    assert conflict.status == "pending"
    assert Stream.objects.get(name=conflict.stream).head == head
    card.refresh_from_db()
    assert card.title == "orig (server)"


def test_resolve_without_a_choice_asks_for_one(admin_client, conflict):
    response = admin_client.post(resolve_url(conflict), {"resolution": "merge"})
    assert messages_of(response) == ["Choose how to resolve the conflict."]
    conflict.refresh_from_db()
    assert conflict.status == "pending"


def test_resolve_get_redirects_without_resolving(admin_client, conflict):
    response = admin_client.get(resolve_url(conflict), {"resolution": "server"})
    assert response.status_code == 302
    conflict.refresh_from_db()
    assert conflict.status == "pending"


def test_resolve_already_resolved_is_refused_clearly(admin_client, conflict):
    admin_client.post(resolve_url(conflict), {"resolution": "client"}, follow=True)
    conflict.refresh_from_db()
    resolved = (conflict.resolution, conflict.resolved_value, conflict.resolved_at)
    head = Stream.objects.get(name=conflict.stream).head
    response = admin_client.post(resolve_url(conflict), {"resolution": "value", "value": "late"})
    assert messages_of(response) == [
        f"Conflict {conflict.pk}: This conflict is already resolved. (already_resolved)"
    ]
    conflict.refresh_from_db()
    assert (conflict.resolution, conflict.resolved_value, conflict.resolved_at) == resolved
    assert Stream.objects.get(name=conflict.stream).head == head
    assert card_of(conflict).title == "orig (client)"


def test_resolve_conflict_of_deleted_object(admin_client, conflict):
    card_of(conflict).delete()
    head = Stream.objects.get(name=conflict.stream).head
    response = admin_client.post(resolve_url(conflict), {"resolution": "client"})
    [message] = messages_of(response)
    assert message.startswith(f"Conflict {conflict.pk}: ")
    assert "no longer exists" in message
    conflict.refresh_from_db()
    assert conflict.status == "pending"
    assert Stream.objects.get(name=conflict.stream).head == head
    assert not Card.objects.filter(pk=conflict.object_pk).exists()


def test_keeping_the_server_side_closes_a_conflict_of_a_deleted_object(admin_client, conflict):
    card_of(conflict).delete()
    head = Stream.objects.get(name=conflict.stream).head
    admin_client.post(resolve_url(conflict), {"resolution": "server"})
    conflict.refresh_from_db()
    assert (conflict.status, conflict.resolution, conflict.resolution_seq) == (
        "resolved",
        "server",
        None,
    )
    assert Stream.objects.get(name=conflict.stream).head == head


def test_conflict_change_page_of_deleted_object(admin_client, conflict):
    card_of(conflict).delete()
    response = admin_client.get(change_url(conflict))
    assert response.status_code == 200
    assertContains(response, "orig (client)")


def test_resolve_refused_to_non_staff(client, user, conflict):
    client.force_login(user)
    response = client.post(resolve_url(conflict), {"resolution": "client"})
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
    conflict.refresh_from_db()
    assert conflict.status == "pending"
    assert card_of(conflict).title == "orig (server)"


def test_conflict_changelist_refused_to_non_staff(client, user, conflict):
    client.force_login(user)
    response = client.get(CONFLICT_CHANGELIST)
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_conflict_changelist_refused_to_anonymous(client, conflict):
    response = client.get(CONFLICT_CHANGELIST)
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))


def test_resolve_refused_without_change_permission(viewer, conflict):
    response = viewer.post(resolve_url(conflict), {"resolution": "client"})
    assert messages_of(response) == ["You may not resolve conflicts."]
    conflict.refresh_from_db()
    assert conflict.status == "pending"


# -- conflicts: changelist actions -----------------------------------------------------


def run_action(client, action: str, conflicts: list[Conflict]):
    return client.post(
        CONFLICT_CHANGELIST,
        {"action": action, "_selected_action": [c.pk for c in conflicts]},
    )


def test_action_keep_server_resolves_the_selection(
    admin_client, admin_user, board, user, other_user
):
    first = make_conflict(board, user, other_user, title="one")
    second = make_conflict(board, user, other_user, title="two")
    head = Stream.objects.get(name=card_stream(board)).head
    response = run_action(admin_client, "keep_server", [first, second])
    assert response.status_code == 302
    assert messages_of(response) == ["Resolved 2 conflict(s)."]
    for conflict, title in [(first, "one (server)"), (second, "two (server)")]:
        conflict.refresh_from_db()
        assert (conflict.status, conflict.resolution, conflict.resolved_by) == (
            "resolved",
            "server",
            admin_user,
        )
        assert card_of(conflict).title == title
    assert Stream.objects.get(name=card_stream(board)).head == head


def test_action_take_client_resolves_the_selection(
    admin_client, admin_user, board, user, other_user
):
    first = make_conflict(board, user, other_user, title="one")
    second = make_conflict(board, user, other_user, title="two")
    head = Stream.objects.get(name=card_stream(board)).head
    response = run_action(admin_client, "take_client", [first, second])
    assert messages_of(response) == ["Resolved 2 conflict(s)."]
    new_ops = [op for op in ops(card_stream(board)) if op.seq > head]
    assert sorted(op.fields["title"] for op in new_ops) == ["one (client)", "two (client)"]
    assert all(op.mutation_id and op.source == "admin" for op in new_ops)
    for conflict, title in [(first, "one (client)"), (second, "two (client)")]:
        conflict.refresh_from_db()
        assert (conflict.status, conflict.resolution) == ("resolved", "client")
        assert conflict.resolution_seq in [op.seq for op in new_ops]
        assert card_of(conflict).title == title


def test_action_with_an_already_resolved_conflict(admin_client, board, user, other_user):
    done = make_conflict(board, user, other_user, title="one")
    admin_client.post(resolve_url(done), {"resolution": "server"}, follow=True)
    pending = make_conflict(board, user, other_user, title="two")
    response = admin_client.post(
        f"{CONFLICT_CHANGELIST}?status=all",
        {"action": "take_client", "_selected_action": [done.pk, pending.pk]},
    )
    assert sorted(messages_of(response)) == sorted(
        [
            f"Conflict {done.pk}: This conflict is already resolved. (already_resolved)",
            "Resolved 1 conflict(s).",
        ]
    )
    done.refresh_from_db()
    assert done.resolution == "server"
    assert card_of(done).title == "one (server)"
    assert card_of(pending).title == "two (client)"


def test_action_refused_without_change_permission(viewer, conflict):
    run_action(viewer, "keep_server", [conflict])
    conflict.refresh_from_db()
    assert conflict.status == "pending"


# -- synced models through the admin ---------------------------------------------------


def test_admin_add_records_op_attributed_to_the_admin(admin_client, admin_user):
    data = {"id": uuid.uuid4(), "name": "From admin"}
    response = admin_client.post(reverse("admin:testapp_board_add"), data)
    assert response.status_code == 302
    board = Board.objects.get(name="From admin")
    [op] = ops("boards")
    assert (op.kind, op.object_pk, op.fields["name"]) == ("create", str(board.pk), "From admin")
    assert (op.actor, op.source, op.mutation_id) == (admin_user, "admin", None)


def test_admin_change_records_op_attributed_to_the_admin(admin_client, admin_user, board):
    url = reverse("admin:testapp_board_change", args=[board.pk])
    response = admin_client.post(url, {"id": board.pk, "name": "Renamed"})
    assert response.status_code == 302
    op = ops("boards")[-1]
    assert (op.kind, op.fields) == ("update", {"name": "Renamed"})
    assert (op.actor, op.source) == (admin_user, "admin")


def test_admin_change_moving_streams_is_attributed(admin_client, admin_user, board):
    url = reverse("admin:testapp_board_change", args=[board.pk])
    admin_client.post(url, {"id": board.pk, "name": "Board", "public": "on"})
    [delete] = ops("boards")[1:]
    [create] = ops("public:boards")
    assert (delete.kind, create.kind) == ("delete", "create")
    assert {(op.actor, op.source) for op in (delete, create)} == {(admin_user, "admin")}


def test_admin_delete_records_op_attributed_to_the_admin(admin_client, admin_user, board):
    url = reverse("admin:testapp_board_delete", args=[board.pk])
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Board.objects.filter(pk=board.pk).exists()
    op = ops("boards")[-1]
    assert (op.kind, op.object_pk) == ("delete", str(board.pk))
    assert (op.actor, op.source) == (admin_user, "admin")


def test_admin_delete_cascade_is_attributed(admin_client, admin_user, board):
    card = Card.objects.create(board=board, title="a")
    admin_client.post(reverse("admin:testapp_board_delete", args=[board.pk]), {"post": "yes"})
    op = ops(card_stream(board))[-1]
    assert (op.kind, op.object_pk) == ("delete", str(card.pk))
    assert (op.actor, op.source) == (admin_user, "admin")


def test_admin_delete_selected_action_is_attributed(admin_client, admin_user, board):
    other = Board.objects.create(name="Other")
    response = admin_client.post(
        reverse("admin:testapp_board_changelist"),
        {"action": "delete_selected", "_selected_action": [board.pk, other.pk], "post": "yes"},
    )
    assert response.status_code == 302
    deletes = [op for op in ops("boards") if op.kind == "delete"]
    assert sorted(op.object_pk for op in deletes) == sorted([str(board.pk), str(other.pk)])
    assert {(op.actor, op.source) for op in deletes} == {(admin_user, "admin")}


def test_admin_add_card_records_op_attributed_to_the_admin(admin_client, admin_user, board):
    data = {"id": uuid.uuid4(), "board": board.pk, "title": "t", "body": "", "likes": 0, "rank": 0}
    response = admin_client.post(reverse("admin:testapp_card_add"), data)
    assert response.status_code == 302
    [op] = ops(card_stream(board))
    assert (op.kind, op.fields["title"]) == ("create", "t")
    assert (op.actor, op.source) == (admin_user, "admin")


def test_admin_invalid_form_records_no_op(admin_client, board):
    url = reverse("admin:testapp_board_change", args=[board.pk])
    response = admin_client.post(url, {"id": board.pk, "name": ""})
    assert response.status_code == 200
    assert len(ops("boards")) == 1


def test_admin_attribution_ends_with_the_request(admin_client, board):
    url = reverse("admin:testapp_board_change", args=[board.pk])
    admin_client.post(url, {"id": board.pk, "name": "x"})
    board.refresh_from_db()
    board.name = "outside"
    board.save()
    op = ops("boards")[-1]
    assert (op.actor, op.source) == (None, "")


@pytest.mark.parametrize("object_id", ["abc", "999999"])
def test_conflict_change_page_of_a_bad_id_is_404(admin_client, object_id):
    response = admin_client.get(f"/admin/syncapp/conflict/{object_id}/change/")
    assert response.status_code == 404
