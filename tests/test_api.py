"""The HTTP transport: mutations, snapshots, the op log, conflicts, and every way a
request can be wrong (problem+json with a stable ``code``, never a 500)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.test import APIClient

from syncapp import idempotency, oplog, retention
from syncapp.models import Conflict, IdempotencyRecord, Op, Stream
from syncapp.protocol import fingerprint
from tests.helpers import board_create, mutation, ops
from tests.testapp.models import Board, Card, Doc

pytestmark = pytest.mark.django_db

MUTATIONS = "/sync/api/mutations/"
CONFLICTS = "/sync/api/conflicts/"
PROBLEM = "application/problem+json"
OP_KEYS = {"stream", "epoch", "seq", "model", "pk", "op", "fields", "version", "mutation", "ts"}
RESULT_KEYS = {"id", "status", "seq", "version", "object", "error"}


def syncapp_settings(**overrides: Any) -> override_settings:
    """``override_settings`` for SYNCAPP keys, keeping the test permission class."""
    return override_settings(SYNCAPP={**settings.SYNCAPP, **overrides})


def snapshot_url(stream: str) -> str:
    return f"/sync/api/streams/{stream}/snapshot/"


def ops_url(stream: str, query: str = "") -> str:
    return f"/sync/api/streams/{stream}/ops/" + (f"?{query}" if query else "")


def card_stream(board: Board) -> str:
    return f"board:{board.pk}"


def create_card(board: Board, **fields: Any) -> dict[str, Any]:
    """A mutation (as JSON) creating a card on ``board``."""
    return {
        "id": str(uuid.uuid4()),
        "stream": card_stream(board),
        "model": "testapp.card",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"board": str(board.pk), "title": "Card", **fields},
    }


def create_doc(pk: Any = 1) -> dict[str, Any]:
    """A mutation (as JSON) creating a doc, whose key is an integer."""
    return {
        "id": str(uuid.uuid4()),
        "stream": "docs",
        "model": "testapp.doc",
        "pk": pk,
        "op": "create",
        "fields": {"text": "t"},
    }


def public_board() -> dict[str, Any]:
    """A mutation (as JSON) creating a board in the stream anyone may write."""
    return board_create("Open", stream="public:boards", public=True)


def post(client: APIClient, *items: dict[str, Any], **extra: Any) -> Any:
    body = {"mutations": list(items)}
    if "client_id" in extra:
        body["client_id"] = extra.pop("client_id")
    return client.post(MUTATIONS, body, format="json", **extra)


def post_raw(client: APIClient, data: bytes, content_type: str = "application/json") -> Any:
    return client.post(MUTATIONS, data, content_type=content_type)


def only_result(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    return result


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is a problem+json with ``status`` and ``code``; return its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["detail"]
    return body


def make_docs(count: int) -> str:
    for i in range(count):
        Doc.objects.create(text=f"doc {i}")
    return "docs"


def epoch_of(stream: str) -> str:
    return Stream.objects.get(name=stream).epoch


@pytest.fixture
def readonly(django_user_model):
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("readonly", password="pw"))
    return client


@pytest.fixture
def staff(django_user_model):
    client = APIClient()
    client.force_authenticate(
        django_user_model.objects.create_user("root", password="pw", is_staff=True)
    )
    return client


@pytest.fixture
def bea(other_user):
    client = APIClient()
    client.force_authenticate(other_user)
    return client


# POST api/mutations/: results


def test_mutations_apply_answers_with_the_authoritative_result(api, board):
    item = create_card(board, title="Hello")
    result = only_result(post(api, item))
    assert set(result) == RESULT_KEYS
    assert (result["id"], result["status"], result["version"]) == (item["id"], "applied", 1)
    assert result["object"]["pk"] == item["pk"]
    assert result["object"]["fields"]["title"] == "Hello"
    assert result["seq"] == ops(card_stream(board))[-1].seq


def test_mutations_batch_results_come_back_in_order(api, board):
    first, last = create_card(board), create_card(board)
    unknown = {**create_card(board), "model": "testapp.nothing"}
    missing = {**create_card(board), "op": "update", "fields": {"title": "x"}}
    response = post(api, first, unknown, missing, last)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["id"] for r in results] == [m["id"] for m in (first, unknown, missing, last)]
    assert [r["status"] for r in results] == ["applied", "rejected", "gone", "applied"]


def test_mutations_batch_rejection_does_not_undo_the_others(api, board):
    good = create_card(board)
    bad = create_card(board, title="x" * 500)
    post(api, good, bad)
    assert list(Card.objects.values_list("pk", flat=True)) == [uuid.UUID(good["pk"])]


def test_mutations_op_records_mutation_actor_client_and_source(api, user, board):
    item = create_card(board)
    post(api, item, client_id="tab-1")
    [op] = ops(card_stream(board))
    assert (str(op.mutation_id), op.actor_id, op.client_id, op.source) == (
        item["id"],
        user.pk,
        "tab-1",
        "api",
    )


def test_mutations_unknown_model_is_rejected(api, board):
    result = only_result(post(api, {**create_card(board), "model": "testapp.nothing"}))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "unknown_model"


def test_mutations_unknown_field_is_rejected_naming_it(api, board):
    result = only_result(post(api, create_card(board, colour="red")))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "unknown_field"
    assert set(result["error"]["fields"]) == {"colour"}
    assert not Card.objects.exists()


def test_mutations_invalid_field_value_is_rejected_with_fields(api, board):
    result = only_result(post(api, create_card(board, done="maybe")))
    assert result["error"]["code"] == "validation_failed"
    assert set(result["error"]["fields"]) == {"done"}


def test_mutations_invalid_pk_is_rejected(api):
    result = only_result(post(api, create_doc("abc")))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "invalid_pk"


@pytest.mark.parametrize("pk", [2**63, 2**70], ids=["2**63", "2**70"])
def test_mutations_integer_pk_out_of_range_is_rejected_as_invalid_pk(api, pk):
    result = only_result(post(api, create_doc(pk)))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "invalid_pk"
    assert not result["error"].get("retry")


# POST api/mutations/: idempotency


def test_mutations_replay_returns_the_stored_result_without_a_second_op(api, board):
    item = create_card(board)
    first = only_result(post(api, item))
    again = only_result(post(api, item))
    assert again == first
    assert len(ops(card_stream(board))) == 1


def test_mutations_reused_id_with_another_payload_is_rejected_in_its_result(api, board):
    item = create_card(board)
    post(api, item)
    result = only_result(post(api, {**item, "fields": {**item["fields"], "title": "Other"}}))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "idempotency_mismatch"
    assert len(ops(card_stream(board))) == 1


def test_mutations_header_key_becomes_the_mutation_id(api, board):
    key = str(uuid.uuid4())
    item = create_card(board)
    del item["id"]
    result = only_result(post(api, item, HTTP_IDEMPOTENCY_KEY=key))
    assert result["id"] == key
    assert str(ops(card_stream(board))[-1].mutation_id) == key


def test_mutations_header_key_may_be_a_quoted_string(api, board):
    # The Idempotency-Key draft makes the value a structured-field string: "<uuid>".
    key = str(uuid.uuid4())
    item = create_card(board)
    del item["id"]
    result = only_result(post(api, item, HTTP_IDEMPOTENCY_KEY=f'"{key}"'))
    assert result["id"] == key


def test_mutations_header_key_equal_to_body_id_is_accepted(api, board):
    item = create_card(board)
    result = only_result(post(api, item, HTTP_IDEMPOTENCY_KEY=item["id"]))
    assert result["status"] == "applied"


def test_mutations_header_key_differing_from_body_id_is_400(api, board):
    response = post(api, create_card(board), HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    body = problem(response, 400, "invalid")
    assert "Idempotency-Key" in body["detail"]
    assert not Card.objects.exists()


def test_mutations_header_key_with_two_mutations_is_400(api, board):
    response = post(
        api, create_card(board), create_card(board), HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    problem(response, 400, "invalid")
    assert not Card.objects.exists()


@pytest.mark.parametrize("value", ["not-a-uuid", ""])
def test_mutations_header_key_that_is_not_a_uuid_is_400(api, board, value):
    item = create_card(board)
    response = post(api, item, HTTP_IDEMPOTENCY_KEY=value)
    problem(response, 400, "invalid_idempotency_key")
    assert not Card.objects.exists()


def test_mutations_header_replay_returns_the_stored_result_without_a_second_op(api, board):
    item = create_card(board)
    key = item.pop("id")
    first = only_result(post(api, item, HTTP_IDEMPOTENCY_KEY=key))
    again = only_result(post(api, item, HTTP_IDEMPOTENCY_KEY=key))
    assert again == first
    assert len(ops(card_stream(board))) == 1


def test_mutations_header_reuse_with_another_payload_is_422(api, board):
    item = create_card(board)
    key = item.pop("id")
    post(api, item, HTTP_IDEMPOTENCY_KEY=key)
    other = {**item, "fields": {**item["fields"], "title": "Other"}}
    problem(post(api, other, HTTP_IDEMPOTENCY_KEY=key), 422, "idempotency_mismatch")
    assert Card.objects.get().title == "Card"


def test_mutations_header_retry_while_in_progress_is_409_with_retry_after(api, user, board):
    item = create_card(board)
    sent = mutation(**{**item, "id": uuid.UUID(item["id"])})
    idempotency.claim(f"user:{user.pk}", sent.id, fingerprint(sent), "default")
    response = post(api, item, HTTP_IDEMPOTENCY_KEY=item["id"])
    problem(response, 409, "in_progress")
    assert response["Retry-After"]
    assert not Card.objects.exists()


def test_mutations_ids_are_scoped_per_user(api, bea, board):
    item = create_card(board)
    post(api, item)
    other = {**item, "pk": str(uuid.uuid4()), "fields": {**item["fields"], "title": "Bea's"}}
    result = only_result(post(bea, other))
    assert result["status"] == "applied"
    assert result["object"]["fields"]["title"] == "Bea's"


def test_mutations_anonymous_without_client_id_is_rejected(anon):
    result = only_result(post(anon, public_board()))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "client_id_required"
    assert not Board.objects.exists()


def test_mutations_anonymous_with_client_id_applies_on_a_public_stream(anon):
    result = only_result(post(anon, public_board(), client_id="tab-1"))
    assert result["status"] == "applied"
    assert ops("public:boards")[0].client_id == "tab-1"


def test_mutations_anonymous_replay_with_the_same_client_id_returns_stored_result(anon):
    item = public_board()
    first = only_result(post(anon, item, client_id="tab-1"))
    again = only_result(post(anon, item, client_id="tab-1"))
    assert again == first
    assert len(ops("public:boards")) == 1


def test_mutations_anonymous_ids_are_scoped_per_client_id(anon):
    item = public_board()
    post(anon, item, client_id="tab-1")
    other = {**item, "pk": str(uuid.uuid4()), "fields": {"name": "Other", "public": True}}
    result = only_result(post(anon, other, client_id="tab-2"))
    assert result["status"] == "applied"
    assert IdempotencyRecord.objects.filter(key=item["id"]).count() == 2


@pytest.mark.parametrize("client_id", ["has space", "x" * 101, ""])
def test_mutations_invalid_client_id_is_400_naming_it(api, board, client_id):
    response = post(api, create_card(board), client_id=client_id)
    body = problem(response, 400, "invalid")
    assert "$.client_id" in body["detail"]


# POST api/mutations/: malformed bodies


def test_mutations_malformed_json_is_a_parse_error(api):
    problem(post_raw(api, b'{"mutations": ['), 400, "parse_error")


def test_mutations_invalid_utf8_is_a_parse_error(api):
    problem(post_raw(api, b"\xff\xfe{}"), 400, "parse_error")


def test_mutations_invalid_utf8_inside_a_string_is_a_parse_error(api):
    problem(post_raw(api, b'{"client_id": "\xff\xfe", "mutations": []}'), 400, "parse_error")


def test_mutations_empty_body_is_400(api):
    problem(post_raw(api, b""), 400, "invalid")


def test_mutations_body_that_is_not_an_object_is_invalid(api):
    problem(post_raw(api, b"[]"), 400, "invalid")


def test_mutations_wrong_type_names_the_json_path(api, board):
    response = post(api, {**create_card(board), "stream": 42})
    body = problem(response, 400, "invalid")
    assert "$.mutations[0].stream" in body["detail"]


def test_mutations_wrong_op_names_the_json_path(api, board):
    response = post(api, create_card(board), {**create_card(board), "op": "upsert"})
    body = problem(response, 400, "invalid")
    assert "$.mutations[1].op" in body["detail"]
    assert not Card.objects.exists()


def test_mutations_unknown_body_field_is_invalid(api, board):
    response = api.post(MUTATIONS, {"mutations": [create_card(board)], "extra": 1}, format="json")
    body = problem(response, 400, "invalid")
    assert "extra" in body["detail"]


def test_mutations_unknown_mutation_field_is_invalid(api, board):
    body = problem(post(api, {**create_card(board), "bogus": 1}), 400, "invalid")
    assert "bogus" in body["detail"]
    assert "$.mutations[0]" in body["detail"]


def test_mutations_empty_batch_is_invalid(api):
    body = problem(api.post(MUTATIONS, {"mutations": []}, format="json"), 400, "invalid")
    assert "$.mutations" in body["detail"]


def test_mutations_without_id_or_header_is_invalid(api, board):
    item = create_card(board)
    del item["id"]
    body = problem(post(api, item), 400, "invalid")
    assert "$.mutations[0]" in body["detail"]


def test_mutations_body_over_max_body_bytes_is_413(api, board):
    with syncapp_settings(MAX_BODY_BYTES=200):
        response = post(api, create_card(board, body="x" * 300))
    problem(response, 413, "too_large")
    assert not Card.objects.exists()


def test_mutations_body_at_max_body_bytes_is_accepted(api, board):
    item = create_card(board)
    size = len(json.dumps({"mutations": [item]}).encode())
    with syncapp_settings(MAX_BODY_BYTES=size):
        response = post_raw(api, json.dumps({"mutations": [item]}).encode())
    assert only_result(response)["status"] == "applied"


def test_mutations_batch_over_max_batch_is_413_and_applies_nothing(api, board):
    with syncapp_settings(MAX_BATCH=2):
        response = post(api, *(create_card(board) for _ in range(3)))
    problem(response, 413, "batch_too_large")
    assert not Card.objects.exists()
    assert not IdempotencyRecord.objects.exists()


def test_mutations_json_nested_100000_deep_is_too_deep(api):
    item = {**create_doc(), "fields": {"text": "DEEP"}}
    data = json.dumps({"mutations": [item]}).encode()
    data = data.replace(b'"DEEP"', b"[" * 100_000 + b"]" * 100_000)
    problem(post_raw(api, data), 400, "too_deep")
    assert not Doc.objects.exists()


def test_mutations_json_nested_100000_deep_at_the_top_is_400(api):
    response = post_raw(api, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_mutations_non_json_content_type_is_415(api, board, content_type):
    data = json.dumps({"mutations": [create_card(board)]}).encode()
    problem(post_raw(api, data, content_type), 415, "unsupported_media_type")
    assert not Card.objects.exists()


def test_mutations_get_is_405(api):
    problem(api.get(MUTATIONS), 405, "method_not_allowed")


# POST api/mutations/: permission and CSRF


def test_mutations_anonymous_on_a_private_stream_is_rejected_not_authenticated(anon, board):
    result = only_result(post(anon, create_card(board), client_id="tab-1"))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "not_authenticated"
    assert not Card.objects.exists()


def test_mutations_readonly_user_is_rejected_permission_denied(readonly, board):
    result = only_result(post(readonly, create_card(board)))
    assert result["status"] == "rejected"
    assert result["error"]["code"] == "permission_denied"
    assert not Card.objects.exists()
    assert ops(card_stream(board)) == []


def test_mutations_readonly_user_update_leaves_the_object(readonly, api, board):
    item = create_card(board)
    post(api, item)
    update = {**item, "id": str(uuid.uuid4()), "op": "update", "fields": {"body": "x"}}
    result = only_result(post(readonly, update))
    assert result["error"]["code"] == "permission_denied"
    assert Card.objects.get().body == ""


@pytest.fixture
def session(user):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="ada", password="pw")
    return client


def test_mutations_session_auth_without_csrf_token_is_403(session, board):
    data = {"mutations": [create_card(board)]}
    response = session.post(MUTATIONS, data, content_type="application/json")
    assert response.status_code == 403
    assert response["Content-Type"] == PROBLEM
    assert "CSRF" in response.json()["detail"]
    assert not Card.objects.exists()


def test_mutations_session_auth_with_csrf_token_applies(session, board):
    session.get("/admin/login/")  # sets the csrftoken cookie
    token = session.cookies["csrftoken"].value
    data = {"mutations": [create_card(board)]}
    response = session.post(
        MUTATIONS, data, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert only_result(response)["status"] == "applied"


# GET api/streams/<stream>/snapshot/


def test_snapshot_returns_the_streams_objects_at_its_head(api, board):
    post(api, create_card(board, title="a"), create_card(board, title="b"))
    other = Board.objects.create(name="Other")
    post(api, create_card(other))
    response = api.get(snapshot_url(card_stream(board)))
    assert response.status_code == 200
    body = response.json()
    stream = Stream.objects.get(name=card_stream(board))
    assert (body["stream"], body["epoch"], body["seq"]) == (stream.name, stream.epoch, 2)
    assert sorted(o["fields"]["title"] for o in body["objects"]) == ["a", "b"]
    assert all(set(o) == {"model", "pk", "version", "fields"} for o in body["objects"])


def test_snapshot_of_an_empty_stream_is_at_seq_zero(api):
    body = api.get(snapshot_url("nothing-here")).json()
    assert (body["stream"], body["seq"], body["objects"]) == ("nothing-here", 0, [])
    assert body["epoch"]


def test_snapshot_holds_objects_of_every_model_in_the_stream(api):
    Board.objects.create(name="Plain")
    make_docs(1)
    body = api.get(snapshot_url("boards")).json()
    assert [o["model"] for o in body["objects"]] == ["testapp.board"]


def test_snapshot_anonymous_on_a_private_stream_is_403_not_authenticated(anon, board):
    response = anon.get(snapshot_url(card_stream(board)))
    problem(response, 403, "not_authenticated")
    # Session auth has no challenge to offer, so DRF's rule gives 403, not 401.
    assert "WWW-Authenticate" not in response


def test_snapshot_anonymous_on_a_public_stream_is_allowed(anon):
    Board.objects.create(name="Open", public=True)
    body = anon.get(snapshot_url("public:boards")).json()
    assert [o["fields"]["name"] for o in body["objects"]] == ["Open"]


def test_snapshot_secret_stream_is_403_for_a_user_without_read_permission(api):
    problem(api.get(snapshot_url("secret:plans")), 403, "permission_denied")


def test_snapshot_secret_stream_is_allowed_for_staff(staff):
    assert staff.get(snapshot_url("secret:plans")).status_code == 200


@pytest.mark.parametrize(
    "name",
    ["bad%20name", "x" * 201, "%C3%A9t%C3%A9", "a;b", "a%00b", "a*"],
    ids=["space", "201-chars", "non-ascii", "semicolon", "nul", "star"],
)
def test_snapshot_invalid_stream_name_is_400(api, name):
    problem(api.get(snapshot_url(name)), 400, "invalid_stream")


# GET api/streams/<stream>/ops/


def test_ops_without_a_position_returns_the_log_from_the_start(api):
    stream = make_docs(3)
    body = api.get(ops_url(stream)).json()
    assert (body["stream"], body["epoch"], body["head"]) == (stream, epoch_of(stream), 3)
    assert [op["seq"] for op in body["ops"]] == [1, 2, 3]


def test_ops_carry_the_designed_shape(api, board):
    item = create_card(board)
    post(api, item)
    [op] = api.get(ops_url(card_stream(board))).json()["ops"]
    assert set(op) == OP_KEYS
    assert (op["op"], op["model"], op["pk"], op["mutation"]) == (
        "create",
        "testapp.card",
        item["pk"],
        item["id"],
    )
    assert op["ts"].endswith("Z")


def test_ops_after_a_position_returns_only_later_ops(api):
    stream = make_docs(4)
    body = api.get(ops_url(stream, f"epoch={epoch_of(stream)}&after=2")).json()
    assert [op["seq"] for op in body["ops"]] == [3, 4]


def test_ops_at_the_head_returns_an_empty_page(api):
    stream = make_docs(2)
    body = api.get(ops_url(stream, f"epoch={epoch_of(stream)}&after=2")).json()
    assert (body["head"], body["ops"]) == (2, [])


def test_ops_page_with_limit(api):
    stream = make_docs(5)
    epoch = epoch_of(stream)
    first = api.get(ops_url(stream, f"epoch={epoch}&after=0&limit=2")).json()
    second = api.get(ops_url(stream, f"epoch={epoch}&after=2&limit=2")).json()
    assert [op["seq"] for op in first["ops"]] == [1, 2]
    assert [op["seq"] for op in second["ops"]] == [3, 4]
    assert first["head"] == second["head"] == 5


def test_ops_limit_is_clamped_at_ops_page_max(api):
    stream = make_docs(5)
    with syncapp_settings(OPS_PAGE_MAX=3):
        body = api.get(ops_url(stream, "limit=1000")).json()
    assert [op["seq"] for op in body["ops"]] == [1, 2, 3]
    assert body["head"] == 5


def test_ops_default_limit_is_ops_page_size(api):
    stream = make_docs(3)
    with syncapp_settings(OPS_PAGE_SIZE=2):
        body = api.get(ops_url(stream)).json()
    assert [op["seq"] for op in body["ops"]] == [1, 2]


def test_ops_after_without_epoch_is_400(api):
    stream = make_docs(2)
    problem(api.get(ops_url(stream, "after=1")), 400, "invalid_position")


def test_ops_after_zero_without_epoch_reads_from_the_start(api):
    stream = make_docs(1)
    assert len(api.get(ops_url(stream, "after=0")).json()["ops"]) == 1


def assert_reset(response: Any, stream: str, reason: str) -> None:
    problem(response, 409, "reset")
    body = response.json()
    assert {k: body[k] for k in ("type", "stream", "epoch", "reason")} == {
        "type": "reset",
        "stream": stream,
        "epoch": epoch_of(stream),
        "reason": reason,
    }


def test_ops_from_another_epoch_is_a_reset(api):
    stream = make_docs(2)
    old = epoch_of(stream)
    oplog.reset(stream)
    assert_reset(api.get(ops_url(stream, f"epoch={old}&after=2")), stream, "epoch_changed")


def test_ops_from_an_unknown_epoch_at_zero_is_a_reset(api):
    stream = make_docs(1)
    assert_reset(api.get(ops_url(stream, "epoch=0000&after=0")), stream, "epoch_changed")


def test_ops_ahead_of_the_head_is_a_reset(api):
    stream = make_docs(2)
    response = api.get(ops_url(stream, f"epoch={epoch_of(stream)}&after=3"))
    assert_reset(response, stream, "ahead_of_head")


def test_ops_at_the_largest_seq_is_a_reset_not_an_error(api):
    stream = make_docs(1)
    response = api.get(ops_url(stream, f"epoch={epoch_of(stream)}&after={2**63 - 1}"))
    assert_reset(response, stream, "ahead_of_head")


def test_ops_behind_the_trimmed_floor_is_a_reset(api):
    stream = make_docs(5)
    retention.trim(stream, max_age=None, max_ops=2)
    response = api.get(ops_url(stream, f"epoch={epoch_of(stream)}&after=2"))
    assert_reset(response, stream, "trimmed")


def test_ops_from_the_trimmed_floor_resumes(api):
    stream = make_docs(5)
    retention.trim(stream, max_age=None, max_ops=2)
    body = api.get(ops_url(stream, f"epoch={epoch_of(stream)}&after=3")).json()
    assert [op["seq"] for op in body["ops"]] == [4, 5]


def test_ops_behind_a_moved_floor_is_a_reset_before_the_ops_are_deleted(api):
    stream = make_docs(3)
    Stream.objects.filter(name=stream).update(oldest_seq=3)
    response = api.get(ops_url(stream, f"epoch={epoch_of(stream)}&after=1"))
    assert_reset(response, stream, "trimmed")


def test_ops_without_a_position_behind_the_floor_is_a_reset(api):
    stream = make_docs(3)
    Stream.objects.filter(name=stream).update(oldest_seq=3)
    assert_reset(api.get(ops_url(stream)), stream, "trimmed")


@pytest.mark.parametrize(
    "query",
    [
        "after=abc",
        f"after={2**63}",
        "after=1.5",
        "after=",
        "limit=0",
        "limit=-5",
        "limit=abc",
        "epoch=" + "e" * 10_000,
    ],
    ids=["abc", "2**63", "float", "empty", "limit-0", "limit-neg", "limit-abc", "long"],
)
def test_ops_hostile_query_is_400(api, query):
    stream = make_docs(1)
    problem(api.get(ops_url(stream, query)), 400, "invalid")


@pytest.mark.parametrize("query", ["after=-1", "epoch=x&after=-1"])
def test_ops_negative_after_is_an_invalid_position(api, query):
    # docs/protocol.md: invalid_position is "`after` without `epoch`, or negative".
    stream = make_docs(1)
    problem(api.get(ops_url(stream, query)), 400, "invalid_position")


@pytest.mark.parametrize("name", ["bad%20name", "x" * 201, "%C3%A9"], ids=["space", "long", "é"])
def test_ops_invalid_stream_name_is_400(api, name):
    problem(api.get(ops_url(name)), 400, "invalid_stream")


def test_ops_anonymous_on_a_private_stream_is_403(anon):
    stream = make_docs(1)
    problem(anon.get(ops_url(stream)), 403, "not_authenticated")


def test_ops_secret_stream_is_403_for_a_user_without_read_permission(api):
    problem(api.get(ops_url("secret:plans")), 403, "permission_denied")


def test_ops_permission_is_checked_before_the_position(api):
    problem(api.get(ops_url("secret:plans", "epoch=old&after=5")), 403, "permission_denied")


# Conflicts


@pytest.fixture
def conflict(api, board) -> Conflict:
    """A pending conflict on a card's title (a ``manual`` field)."""
    item = create_card(board, title="base")
    post(api, item)
    for title in ("server", "client"):
        update = {**item, "id": str(uuid.uuid4()), "op": "update", "base_version": 1}
        post(api, {**update, "fields": {"title": title}})
    return Conflict.objects.get()


def resolve_url(conflict_id: int) -> str:
    return f"{CONFLICTS}{conflict_id}/resolve/"


def test_conflicts_list_returns_the_streams_conflicts(api, conflict):
    response = api.get(CONFLICTS, {"stream": conflict.stream})
    assert response.status_code == 200
    [item] = response.json()["conflicts"]
    assert item["id"] == conflict.pk
    assert (item["field"], item["base_value"], item["server_value"], item["client_value"]) == (
        "title",
        "base",
        "server",
        "client",
    )
    assert item["status"] == "pending"


def test_conflicts_list_of_another_stream_is_empty(api, conflict):
    assert api.get(CONFLICTS, {"stream": "boards"}).json() == {"conflicts": [], "more": False}


def test_conflicts_list_filters_by_status(api, conflict):
    listed = api.get(CONFLICTS, {"stream": conflict.stream, "status": "resolved"}).json()
    assert listed == {"conflicts": [], "more": False}


def test_conflicts_list_requires_a_stream(api):
    body = problem(api.get(CONFLICTS), 400, "invalid")
    assert "stream" in body["detail"]


def test_conflicts_list_invalid_stream_is_400(api):
    response = api.get(CONFLICTS, {"stream": "bad name"})
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM


def test_conflicts_list_invalid_status_is_400(api, conflict):
    problem(api.get(CONFLICTS, {"stream": conflict.stream, "status": "open"}), 400, "invalid")


def test_conflicts_list_anonymous_is_403(anon, conflict):
    problem(anon.get(CONFLICTS, {"stream": conflict.stream}), 403, "not_authenticated")


def test_conflicts_list_secret_stream_is_403(api):
    problem(api.get(CONFLICTS, {"stream": "secret:plans"}), 403, "permission_denied")


def test_conflict_resolve_client_applies_the_client_value_as_an_op(api, conflict):
    response = api.post(resolve_url(conflict.pk), {"resolution": "client"}, format="json")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["resolved_value"]) == ("resolved", "client")
    assert Card.objects.get().title == "client"
    last = ops(conflict.stream)[-1]
    assert (last.kind, last.fields["title"]) == ("update", "client")


def test_conflict_resolve_server_keeps_the_value_without_an_op(api, conflict):
    before = len(ops(conflict.stream))
    response = api.post(resolve_url(conflict.pk), {"resolution": "server"}, format="json")
    assert response.json()["resolved_value"] == "server"
    assert Card.objects.get().title == "server"
    assert len(ops(conflict.stream)) == before


def test_conflict_resolve_value_applies_the_given_value(api, conflict):
    body = {"resolution": "value", "value": "merged"}
    assert api.post(resolve_url(conflict.pk), body, format="json").status_code == 200
    assert Card.objects.get().title == "merged"


def test_conflict_resolve_twice_is_409(api, conflict):
    api.post(resolve_url(conflict.pk), {"resolution": "server"}, format="json")
    response = api.post(resolve_url(conflict.pk), {"resolution": "client"}, format="json")
    problem(response, 409, "already_resolved")
    assert Card.objects.get().title == "server"


def test_conflict_resolve_unknown_id_is_404(api, conflict):
    response = api.post(resolve_url(conflict.pk + 1), {"resolution": "server"}, format="json")
    problem(response, 404, "not_found")


def test_conflict_resolve_huge_id_is_404(api):
    response = api.post(resolve_url(2**70), {"resolution": "server"}, format="json")
    problem(response, 404, "not_found")


def test_conflict_resolve_invalid_value_is_400_and_stays_pending(api, conflict):
    body = {"resolution": "value", "value": "x" * 500}
    response = api.post(resolve_url(conflict.pk), body, format="json")
    assert set(problem(response, 400, "validation_failed")["fields"]) == {"title"}
    conflict.refresh_from_db()
    assert conflict.status == "pending"


def test_conflict_resolve_unknown_resolution_is_400(api, conflict):
    response = api.post(resolve_url(conflict.pk), {"resolution": "mine"}, format="json")
    assert "$.resolution" in problem(response, 400, "invalid")["detail"]


def test_conflict_resolve_unknown_body_field_is_400(api, conflict):
    body = {"resolution": "server", "note": "x"}
    response = api.post(resolve_url(conflict.pk), body, format="json")
    assert "note" in problem(response, 400, "invalid")["detail"]


def test_conflict_resolve_readonly_user_is_403(readonly, conflict):
    response = readonly.post(resolve_url(conflict.pk), {"resolution": "client"}, format="json")
    problem(response, 403, "permission_denied")
    conflict.refresh_from_db()
    assert conflict.status == "pending"


def test_conflict_resolve_by_someone_who_cannot_read_the_stream_is_404(anon, conflict):
    response = anon.post(resolve_url(conflict.pk), {"resolution": "client"}, format="json")
    problem(response, 404, "not_found")
    conflict.refresh_from_db()
    assert conflict.status == "pending"


def test_conflict_of_a_deleted_object_cannot_be_closed_by_a_stranger(anon, conflict):
    Card.objects.all().delete()
    response = anon.post(resolve_url(conflict.pk), {"resolution": "server"}, format="json")
    problem(response, 404, "not_found")
    assert "server_value" not in response.json()
    conflict.refresh_from_db()
    assert conflict.status == "pending"


def test_conflict_resolve_of_a_deleted_object_is_gone(api, conflict):
    Card.objects.all().delete()
    response = api.post(resolve_url(conflict.pk), {"resolution": "client"}, format="json")
    problem(response, 410, "gone")


def test_ops_of_writes_outside_the_mutation_path_have_no_mutation_id(api):
    stream = make_docs(1)
    [op] = api.get(ops_url(stream)).json()["ops"]
    assert op["mutation"] is None
    assert Op.objects.get().mutation_id is None


@pytest.mark.parametrize(
    "path",
    ["/sync/api/conflicts/%0A%13/resolve/", "/sync/api/streams/a/%0A/nope/", "/sync/api/%0A"],
)
def test_a_path_under_api_with_a_newline_is_a_404_problem(api, path):
    """Found by schemathesis: ``.`` does not match a newline, so such paths fell through
    to Django's HTML 404."""
    problem(api.post(path, {"resolution": "client"}, format="json"), 404, "not_found")
    problem(api.get(path), 404, "not_found")
