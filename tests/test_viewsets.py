"""REST per synced model under ``api/models/<label>/``: every write goes through the
mutation path, with ``Idempotency-Key``, ``If-Match`` and problem+json errors."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from syncapp.models import Conflict, IdempotencyRecord, Op
from tests.helpers import ops
from tests.testapp.models import Board, Card, Doc

pytestmark = pytest.mark.django_db

CARDS = "/sync/api/models/testapp.card/"
DOCS = "/sync/api/models/testapp.doc/"
BOARDS = "/sync/api/models/testapp.board/"
PROBLEM = "application/problem+json"


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is a problem+json with ``status`` and ``code``; return its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert (body["status"], body["code"]) == (status, code), body
    return body


def card_url(pk: Any) -> str:
    return f"{CARDS}{pk}/"


def doc_url(pk: Any) -> str:
    return f"{DOCS}{pk}/"


def card_stream(board: Board) -> str:
    return f"board:{board.pk}"


@pytest.fixture
def card(board) -> Card:
    return Card.objects.create(board=board, title="Card")


@pytest.fixture
def doc() -> Doc:
    return Doc.objects.create(text="Doc")


@pytest.fixture
def readonly(django_user_model):
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("readonly", password="pw"))
    return client


def new_card(board: Board, **fields: Any) -> dict[str, Any]:
    return {"board": str(board.pk), "title": "New", **fields}


# list


def test_list_requires_a_stream(api):
    body = problem(api.get(CARDS), 400, "invalid")
    assert "stream" in body["detail"]


def test_list_returns_the_models_objects_in_the_stream(api, board, card):
    Card.objects.create(board=Board.objects.create(name="Other"), title="Elsewhere")
    response = api.get(CARDS, {"stream": card_stream(board)})
    assert response.status_code == 200
    [item] = response.json()["objects"]
    assert (item["model"], item["pk"], item["version"]) == ("testapp.card", str(card.pk), 1)
    assert item["fields"]["title"] == "Card"


def test_list_leaves_out_other_models_of_the_stream(api):
    Board.objects.create(name="Plain")
    assert api.get(CARDS, {"stream": "boards"}).json() == {"objects": []}


def test_list_anonymous_on_a_private_stream_is_403(anon, board, card):
    problem(anon.get(CARDS, {"stream": card_stream(board)}), 403, "not_authenticated")


def test_list_anonymous_on_a_public_stream_is_allowed(anon):
    Board.objects.create(name="Open", public=True)
    objects = anon.get(BOARDS, {"stream": "public:boards"}).json()["objects"]
    assert [o["fields"]["name"] for o in objects] == ["Open"]


def test_list_secret_stream_is_403_without_read_permission(api):
    problem(api.get(CARDS, {"stream": "secret:plans"}), 403, "permission_denied")


# retrieve


def test_retrieve_returns_the_object_with_its_version_as_etag(api, card):
    response = api.get(card_url(card.pk))
    assert response.status_code == 200
    assert response["ETag"] == '"1"'
    body = response.json()
    assert set(body) == {"model", "pk", "version", "fields"}
    assert (body["model"], body["pk"], body["version"]) == ("testapp.card", str(card.pk), 1)
    assert body["fields"]["board"] == str(card.board_id)


def test_retrieve_etag_follows_the_version(api, card):
    card.title = "Edited"
    card.save()
    assert api.get(card_url(card.pk))["ETag"] == '"2"'


def test_retrieve_integer_pk_model_answers_an_integer_pk(api, doc):
    body = api.get(doc_url(doc.pk)).json()
    assert body["pk"] == doc.pk
    assert body["fields"] == {"text": "Doc"}  # "secret" is not synced


@pytest.mark.parametrize(
    ("url", "pk"),
    [(CARDS, "not-a-uuid"), (DOCS, "abc"), (DOCS, str(2**70)), (DOCS, "-1"), (CARDS, "x" * 300)],
    ids=["card-not-uuid", "doc-not-int", "doc-huge", "doc-negative", "card-long"],
)
def test_retrieve_invalid_pk_is_404(api, url, pk):
    problem(api.get(f"{url}{pk}/"), 404, "not_found")


def test_retrieve_missing_object_is_404(api):
    problem(api.get(card_url(uuid.uuid4())), 404, "not_found")


def test_retrieve_deleted_object_is_404(api, card):
    card.delete()
    problem(api.get(card_url(card.pk)), 404, "not_found")


def test_retrieve_anonymous_on_a_private_stream_is_403(anon, card):
    problem(anon.get(card_url(card.pk)), 403, "not_authenticated")


def test_unknown_model_label_is_a_404_problem(api):
    problem(api.get("/sync/api/models/testapp.nothing/", {"stream": "boards"}), 404, "not_found")


# create


def test_create_generates_a_pk_and_answers_201_with_etag(api, board):
    response = api.post(CARDS, new_card(board), format="json")
    assert response.status_code == 201
    assert response["ETag"] == '"1"'
    body = response.json()
    assert Card.objects.get(pk=body["pk"]).title == "New"
    assert body["version"] == 1


@pytest.mark.parametrize("key", ["id", "pk"])
def test_create_takes_the_pk_from_the_body(api, board, key):
    pk = str(uuid.uuid4())
    response = api.post(CARDS, {key: pk, **new_card(board)}, format="json")
    assert response.status_code == 201
    assert response.json()["pk"] == pk
    assert Card.objects.filter(pk=pk).exists()


def test_create_integer_pk_model_with_a_pk(api):
    response = api.post(DOCS, {"id": 77, "text": "t"}, format="json")
    assert response.status_code == 201
    assert response.json()["pk"] == 77


def test_create_existing_pk_is_409_with_the_current_object(api, card):
    response = api.post(CARDS, {"id": str(card.pk), **new_card(card.board)}, format="json")
    body = problem(response, 409, "exists")
    assert body["object"]["fields"]["title"] == "Card"


def test_create_invalid_pk_is_400(api, board):
    response = api.post(CARDS, {"id": "not-a-uuid", **new_card(board)}, format="json")
    problem(response, 400, "invalid_pk")


def test_create_invalid_integer_pk_is_400(api):
    problem(api.post(DOCS, {"id": "abc", "text": "t"}, format="json"), 400, "invalid_pk")


def test_create_integer_pk_out_of_range_is_400(api):
    problem(api.post(DOCS, {"id": 2**70, "text": "t"}, format="json"), 400, "invalid_pk")


def test_create_validation_error_is_400_with_fields(api, board):
    response = api.post(CARDS, {"board": str(board.pk)}, format="json")
    body = problem(response, 400, "validation_failed")
    assert set(body["fields"]) == {"title"}
    assert not Card.objects.exists()


def test_create_wrong_field_type_is_400_with_fields(api, board):
    response = api.post(CARDS, new_card(board, done="maybe"), format="json")
    assert set(problem(response, 400, "validation_failed")["fields"]) == {"done"}


def test_create_unknown_field_is_400(api, board):
    response = api.post(CARDS, new_card(board, colour="red"), format="json")
    assert set(problem(response, 400, "unknown_field")["fields"]) == {"colour"}
    assert not Card.objects.exists()


def test_create_unsynced_field_is_400(api):
    response = api.post(DOCS, {"id": 1, "text": "t", "secret": "s"}, format="json")
    problem(response, 400, "unknown_field")


def test_create_body_that_is_not_an_object_is_400(api):
    problem(api.post(CARDS, [1, 2], format="json"), 400, "invalid")


def test_create_malformed_json_is_400(api):
    problem(api.post(CARDS, b"{", content_type="application/json"), 400, "parse_error")


def test_create_non_json_content_type_is_415(api, board):
    response = api.post(CARDS, json.dumps(new_card(board)), content_type="text/plain")
    problem(response, 415, "unsupported_media_type")


def test_create_body_over_max_body_bytes_is_413(api, board):
    with override_settings(SYNCAPP={**settings.SYNCAPP, "MAX_BODY_BYTES": 100}):
        response = api.post(CARDS, new_card(board, body="x" * 200), format="json")
    problem(response, 413, "too_large")


def test_create_json_nested_100000_deep_is_400(api):
    data = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    problem(api.post(DOCS, data, content_type="application/json"), 400, "too_deep")


def test_create_goes_through_the_mutation_path(api, user, board):
    key = str(uuid.uuid4())
    api.post(CARDS, new_card(board), format="json", HTTP_IDEMPOTENCY_KEY=key)
    [op] = ops(card_stream(board))
    assert (str(op.mutation_id), op.actor_id, op.source) == (key, user.pk, "api")
    record = IdempotencyRecord.objects.get(key=key)
    assert (record.owner, record.status) == (f"user:{user.pk}", "done")


def test_create_without_a_key_still_records_a_mutation(api, board):
    api.post(CARDS, new_card(board), format="json")
    [op] = ops(card_stream(board))
    assert op.mutation_id is not None
    assert IdempotencyRecord.objects.filter(key=op.mutation_id).exists()


def test_create_replay_with_pk_returns_the_stored_result_without_a_second_op(api, board):
    body = {"id": str(uuid.uuid4()), **new_card(board)}
    key = str(uuid.uuid4())
    first = api.post(CARDS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    again = api.post(CARDS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert len(ops(card_stream(board))) == 1


def test_create_replay_without_pk_returns_the_stored_result_without_a_second_op(api, board):
    key = str(uuid.uuid4())
    first = api.post(CARDS, new_card(board), format="json", HTTP_IDEMPOTENCY_KEY=key)
    again = api.post(CARDS, new_card(board), format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert again.status_code == 201, again.content
    assert again.json() == first.json()
    assert Card.objects.count() == 1


def test_create_key_reuse_with_another_body_is_422(api, board):
    key = str(uuid.uuid4())
    pk = str(uuid.uuid4())
    api.post(CARDS, {"id": pk, **new_card(board)}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    other = {"id": pk, **new_card(board, title="Other")}
    problem(
        api.post(CARDS, other, format="json", HTTP_IDEMPOTENCY_KEY=key), 422, "idempotency_mismatch"
    )
    assert Card.objects.get().title == "New"


def test_create_invalid_idempotency_key_is_400(api, board):
    response = api.post(CARDS, new_card(board), format="json", HTTP_IDEMPOTENCY_KEY="nope")
    problem(response, 400, "invalid_idempotency_key")
    assert not Card.objects.exists()


def test_create_readonly_user_is_403(readonly, board):
    problem(readonly.post(CARDS, new_card(board), format="json"), 403, "permission_denied")
    assert not Card.objects.exists()


def test_create_anonymous_on_a_private_stream_is_403(anon, board):
    response = anon.post(CARDS, new_card(board), format="json", HTTP_SYNC_CLIENT_ID="tab-1")
    problem(response, 403, "not_authenticated")


def test_create_anonymous_on_a_public_stream_with_a_client_id(anon):
    body = {"name": "Open", "public": True}
    response = anon.post(BOARDS, body, format="json", HTTP_SYNC_CLIENT_ID="tab-1")
    assert response.status_code == 201
    assert ops("public:boards")[0].client_id == "tab-1"


def test_create_anonymous_without_a_client_id_is_400(anon):
    response = anon.post(BOARDS, {"name": "Open", "public": True}, format="json")
    problem(response, 400, "client_id_required")
    assert not Board.objects.exists()


@pytest.mark.parametrize("client_id", ["x" * 300, "has space"], ids=["long", "space"])
def test_create_invalid_sync_client_id_is_400(anon, client_id):
    body = {"name": "Open", "public": True}
    response = anon.post(BOARDS, body, format="json", HTTP_SYNC_CLIENT_ID=client_id)
    problem(response, 400, "invalid_client_id")
    assert not Board.objects.exists()


def test_create_invalid_sync_clock_is_400(api, board):
    response = api.post(CARDS, new_card(board), format="json", HTTP_SYNC_CLOCK="yesterday")
    problem(response, 400, "invalid_clock")


# update


def test_patch_updates_and_answers_the_new_version(api, card):
    response = api.patch(card_url(card.pk), {"body": "Hello"}, format="json")
    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert response.json()["fields"]["body"] == "Hello"
    card.refresh_from_db()
    assert (card.body, card.sync_version) == ("Hello", 2)


def test_put_with_if_match_updates(api, card):
    body = {"board": str(card.board_id), "title": "Card", "body": "Put", "done": True}
    response = api.put(card_url(card.pk), body, format="json", HTTP_IF_MATCH='"1"')
    assert response.status_code == 200
    card.refresh_from_db()
    assert (card.body, card.done) == ("Put", True)


def test_patch_goes_through_the_mutation_path(api, card):
    key = str(uuid.uuid4())
    api.patch(card_url(card.pk), {"body": "x"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    last = ops(card.sync_stream)[-1]
    assert (last.kind, str(last.mutation_id)) == ("update", key)
    assert IdempotencyRecord.objects.filter(key=key, status="done").exists()


def test_patch_counter_adds_the_delta(api, card):
    api.patch(card_url(card.pk), {"likes": {"delta": 3}}, format="json")
    response = api.patch(card_url(card.pk), {"likes": {"delta": 2}}, format="json")
    assert response.json()["fields"]["likes"] == 5


def test_patch_version_field_without_if_match_is_400(api, card):
    response = api.patch(card_url(card.pk), {"rank": 3}, format="json")
    assert set(problem(response, 400, "base_version_required")["fields"]) == {"rank"}


def test_patch_version_field_with_current_if_match_applies(api, card):
    response = api.patch(card_url(card.pk), {"rank": 3}, format="json", HTTP_IF_MATCH='"1"')
    assert response.status_code == 200
    assert response.json()["fields"]["rank"] == 3


def test_patch_weak_if_match_is_accepted(api, card):
    response = api.patch(card_url(card.pk), {"rank": 3}, format="json", HTTP_IF_MATCH='W/"1"')
    assert response.status_code == 200


def test_patch_stale_if_match_on_a_version_field_is_409_with_the_current_object(api, card):
    api.patch(card_url(card.pk), {"rank": 1}, format="json", HTTP_IF_MATCH='"1"')
    response = api.patch(card_url(card.pk), {"rank": 9}, format="json", HTTP_IF_MATCH='"1"')
    body = problem(response, 409, "conflict")
    assert set(body["fields"]) == {"rank"}
    assert body["object"]["fields"]["rank"] == 1
    assert body["object"]["version"] == Card.objects.get().sync_version


def test_patch_stale_if_match_writes_nothing(api, card):
    api.patch(card_url(card.pk), {"rank": 1}, format="json", HTTP_IF_MATCH='"1"')
    before = len(ops(card.sync_stream))
    api.patch(card_url(card.pk), {"rank": 9}, format="json", HTTP_IF_MATCH='"1"')
    assert len(ops(card.sync_stream)) == before
    assert Card.objects.get().sync_version == 2


def test_patch_stale_if_match_on_a_field_scoped_version_ignores_other_fields(api, card):
    api.patch(card_url(card.pk), {"done": True}, format="json")
    response = api.patch(card_url(card.pk), {"rank": 4}, format="json", HTTP_IF_MATCH='"1"')
    assert response.status_code == 200


def test_patch_stale_if_match_on_a_manual_field_queues_a_conflict(api, card):
    api.patch(card_url(card.pk), {"title": "Server"}, format="json", HTTP_IF_MATCH='"1"')
    response = api.patch(card_url(card.pk), {"title": "Mine"}, format="json", HTTP_IF_MATCH='"1"')
    body = problem(response, 409, "conflict")
    assert body["object"]["fields"]["title"] == "Server"
    conflict = Conflict.objects.get()
    assert (conflict.field, conflict.client_value, conflict.server_value) == (
        "title",
        "Mine",
        "Server",
    )


def test_patch_stale_if_match_on_a_version_model_is_409(api, doc):
    api.patch(doc_url(doc.pk), {"text": "Server"}, format="json", HTTP_IF_MATCH='"1"')
    response = api.patch(doc_url(doc.pk), {"text": "Mine"}, format="json", HTTP_IF_MATCH='"1"')
    assert problem(response, 409, "conflict")["object"]["fields"]["text"] == "Server"


@pytest.mark.parametrize("value", ["nope", '"abc"', '"-1"', "*"])
def test_patch_invalid_if_match_is_400(api, card, value):
    response = api.patch(card_url(card.pk), {"body": "x"}, format="json", HTTP_IF_MATCH=value)
    problem(response, 400, "invalid")
    assert Card.objects.get().body == ""


def test_patch_missing_object_is_404(api):
    problem(api.patch(card_url(uuid.uuid4()), {"body": "x"}, format="json"), 404, "not_found")


def test_patch_invalid_pk_is_404(api):
    problem(api.patch(doc_url("abc"), {"text": "x"}, format="json"), 404, "not_found")


def test_patch_deleted_object_is_gone(api, card):
    card.delete()
    response = api.patch(card_url(card.pk), {"body": "x"}, format="json")
    assert response.status_code in (404, 410)
    assert response["Content-Type"] == PROBLEM


def test_patch_unknown_field_is_400(api, card):
    response = api.patch(card_url(card.pk), {"colour": "red"}, format="json")
    problem(response, 400, "unknown_field")


def test_patch_validation_error_is_400_with_fields(api, card):
    response = api.patch(card_url(card.pk), {"body": "ok", "done": "maybe"}, format="json")
    assert set(problem(response, 400, "validation_failed")["fields"]) == {"done"}
    assert Card.objects.get().body == ""


def test_patch_replay_returns_the_stored_result_without_a_second_op(api, card):
    key = str(uuid.uuid4())
    first = api.patch(card_url(card.pk), {"body": "x"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    again = api.patch(card_url(card.pk), {"body": "x"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert len(ops(card.sync_stream)) == 2


def test_patch_key_reuse_with_another_body_is_422(api, card):
    key = str(uuid.uuid4())
    api.patch(card_url(card.pk), {"body": "x"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    response = api.patch(card_url(card.pk), {"body": "y"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    problem(response, 422, "idempotency_mismatch")
    assert Card.objects.get().body == "x"


def test_patch_readonly_user_is_403(readonly, card):
    response = readonly.patch(card_url(card.pk), {"body": "x"}, format="json")
    problem(response, 403, "permission_denied")
    assert Card.objects.get().body == ""


# delete


def test_delete_is_204_and_records_the_delete(api, card):
    key = str(uuid.uuid4())
    response = api.delete(card_url(card.pk), HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 204
    assert response.content == b""
    assert not Card.objects.exists()
    last = ops(card.sync_stream)[-1]
    assert (last.kind, str(last.mutation_id)) == ("delete", key)


def test_delete_missing_object_is_404(api):
    problem(api.delete(card_url(uuid.uuid4())), 404, "not_found")


def test_delete_replay_returns_204_without_a_second_op(api, card):
    key = str(uuid.uuid4())
    api.delete(card_url(card.pk), HTTP_IDEMPOTENCY_KEY=key)
    response = api.delete(card_url(card.pk), HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 204, response.content
    assert Op.objects.filter(kind="delete").count() == 1


def test_delete_readonly_user_is_403(readonly, card):
    problem(readonly.delete(card_url(card.pk)), 403, "permission_denied")
    assert Card.objects.exists()


def test_delete_wins_over_a_stale_if_match_by_default(api, card):
    card.body = "edited"
    card.save()
    assert api.delete(card_url(card.pk), HTTP_IF_MATCH='"1"').status_code == 204


def test_delete_without_if_match_on_a_model_where_delete_does_not_win_is_400(api, doc):
    problem(api.delete(doc_url(doc.pk)), 400, "base_version_required")
    assert Doc.objects.exists()


def test_delete_stale_if_match_on_a_model_where_delete_does_not_win_is_409(api, doc):
    doc.text = "edited"
    doc.save()
    response = api.delete(doc_url(doc.pk), HTTP_IF_MATCH='"1"')
    assert problem(response, 409, "stale")["object"]["fields"]["text"] == "edited"
    assert Doc.objects.exists()


def test_delete_current_if_match_on_a_model_where_delete_does_not_win_is_204(api, doc):
    assert api.delete(doc_url(doc.pk), HTTP_IF_MATCH='"1"').status_code == 204
    assert not Doc.objects.exists()


def test_update_of_a_deleted_object_is_410_gone(api, board):
    response = api.post(CARDS, new_card(board), format="json")
    pk = response.json()["pk"]
    assert api.delete(f"{CARDS}{pk}/").status_code == 204
    problem(api.patch(f"{CARDS}{pk}/", {"body": "x"}, format="json"), 410, "gone")


def test_update_of_an_object_that_never_existed_is_404(api):
    problem(api.patch(f"{CARDS}{uuid.uuid4()}/", {"body": "x"}, format="json"), 404, "not_found")


# Regressions found in review.


def test_retry_of_a_move_replays_the_stored_answer(api, board):
    pk = api.post(CARDS, new_card(board), format="json").json()["pk"]
    other = Board.objects.create(name="other")
    key = str(uuid.uuid4())
    move = {"board": str(other.pk)}
    first = api.patch(f"{CARDS}{pk}/", move, format="json", HTTP_IDEMPOTENCY_KEY=key)
    again = api.patch(f"{CARDS}{pk}/", move, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()


def test_create_takes_a_counter_delta_as_the_mutation_path_does(api, board):
    response = api.post(CARDS, new_card(board, likes={"delta": 3}), format="json")
    assert response.status_code == 201
    assert response.json()["fields"]["likes"] == 3


@pytest.mark.parametrize("value", ['"²"', '"1e3"', '"-1"', '"1' + "0" * 30 + '"'])
def test_if_match_that_is_not_a_version_is_400(api, board, value):
    pk = api.post(CARDS, new_card(board), format="json").json()["pk"]
    response = api.patch(f"{CARDS}{pk}/", {"body": "x"}, format="json", HTTP_IF_MATCH=value)
    problem(response, 400, "invalid")
