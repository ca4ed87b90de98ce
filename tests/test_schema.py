"""The OpenAPI 3.1 schema served at /schema/: it documents every syncapp endpoint, it is a
valid document (openapi-spec-validator, which also resolves every $ref), and the API's
real answers match what it documents."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing.exceptions import Unresolvable
from rest_framework.test import APIClient

import syncapp.urls
from syncapp import registry
from syncapp.api.views import UnknownModelView
from syncapp.models import Conflict
from tests.testapp.models import Board, Card, Doc

pytestmark = pytest.mark.django_db

PREFIX = "/sync/"
PROBLEM = "application/problem+json"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker) -> dict[str, Any]:
    """The schema as an anonymous client gets it (generated once: tests must not change it)."""
    with django_db_blocker.unblock():
        response = APIClient().get("/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return json.loads(response.content)


def syncapp_paths(schema: dict[str, Any]) -> dict[str, Any]:
    return {p: item for p, item in schema["paths"].items() if p.startswith(PREFIX)}


def shape(path: str) -> str:
    """A path with its parameters blanked, so Django routes and OpenAPI paths compare."""
    path = re.sub(r"\(\?P<\w+>[^)]*\)", "{}", path)  # regex routes (the router)
    path = re.sub(r"<(?:\w+:)?\w+>", "{}", path)  # path() routes
    path = re.sub(r"\{\w+\}", "{}", path)  # OpenAPI templates
    return path.lstrip("^").rstrip("$").replace("\\.", ".")


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in syncapp_paths(schema).items()
        for method, operation in item.items()
        if method in METHODS
    ]


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


# The document


def test_schema_is_openapi_3_1(schema):
    assert schema["openapi"] == "3.1.0"


def test_schema_validates_with_openapi_spec_validator(schema):
    validate(schema, cls=OpenAPIV31SpecValidator)


def test_schema_validator_rejects_a_dangling_ref(schema):
    # Proves the validation above would catch a component that is referenced but missing.
    broken = copy.deepcopy(schema)
    del broken["components"]["schemas"]["Problem"]
    with pytest.raises(Unresolvable):
        validate(broken, cls=OpenAPIV31SpecValidator)


def test_schema_validator_rejects_an_invalid_document(schema):
    broken = copy.deepcopy(schema)
    broken["paths"]["/sync/api/mutations/"]["post"]["responses"]["200"]["description"] = 5
    with pytest.raises(OpenAPIValidationError):
        validate(broken, cls=OpenAPIV31SpecValidator)


def test_schema_every_ref_points_at_a_component(schema):
    names = set(schema["components"]["schemas"])
    dangling = {r for r in refs(schema) if r.removeprefix("#/components/schemas/") not in names}
    assert dangling == set()


def test_schema_generates_without_warnings(tmp_path):
    GENERATOR_STATS.reset()
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "s.yml"))


def test_schema_operation_ids_are_unique(schema):
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert len(ids) == len(set(ids))


# Coverage of the endpoints


def test_schema_contains_every_syncapp_route(schema):
    routes = {
        shape(PREFIX + str(p.pattern).lstrip("^"))
        for p in syncapp.urls.urlpatterns
        # The catch-all for labels that are not synced models only ever answers 404.
        if getattr(p.callback, "view_class", None) is not UnknownModelView
    }
    documented = {shape(path) for path in syncapp_paths(schema)}
    assert routes - documented == set()
    assert documented - routes == set()


def test_schema_documents_the_core_endpoints(schema):
    documented = {path: set(item) & METHODS for path, item in syncapp_paths(schema).items()}
    expected = {
        "/sync/api/mutations/": {"post"},
        "/sync/api/streams/{stream}/snapshot/": {"get"},
        "/sync/api/streams/{stream}/ops/": {"get"},
        "/sync/api/conflicts/": {"get"},
        "/sync/api/conflicts/{conflict_id}/resolve/": {"post"},
    }
    assert {path: documented.get(path) for path in expected} == expected


@pytest.mark.parametrize("label", ["testapp.board", "testapp.card", "testapp.doc"])
def test_schema_documents_the_rest_endpoints_of_each_synced_model(schema, label):
    paths = syncapp_paths(schema)
    assert set(paths[f"/sync/api/models/{label}/"]) & METHODS == {"get", "post"}
    assert set(paths[f"/sync/api/models/{label}/{{id}}/"]) & METHODS == {
        "get",
        "put",
        "patch",
        "delete",
    }


def test_schema_documents_a_rest_endpoint_for_every_synced_model(schema):
    labels = {m._meta.label_lower for m in registry.synced_models()}
    documented = {
        m[1] for p in syncapp_paths(schema) if (m := re.match(r"/sync/api/models/([^/]+)/$", p))
    }
    assert documented == labels


def test_schema_mutations_take_a_mutation_batch_and_an_idempotency_key(schema):
    operation = schema["paths"]["/sync/api/mutations/"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MutationBatch"}
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"Idempotency-Key"}


def test_schema_ops_takes_the_position_parameters(schema):
    operation = schema["paths"]["/sync/api/streams/{stream}/ops/"]["get"]
    assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} >= {
        "epoch",
        "after",
        "limit",
    }


def test_schema_ops_documents_the_reset_answer(schema):
    responses = schema["paths"]["/sync/api/streams/{stream}/ops/"]["get"]["responses"]
    assert responses["409"]["content"][PROBLEM]["schema"] == {
        "$ref": "#/components/schemas/ResetBody"
    }


def test_schema_errors_are_problem_json(schema):
    wrong = [
        (path, method, status)
        for path, method, operation in operations(schema)
        for status, response in operation["responses"].items()
        if int(status) >= 400 and set(response.get("content", {})) != {PROBLEM}
    ]
    assert wrong == []


def test_schema_model_writes_document_their_headers(schema):
    operation = schema["paths"]["/sync/api/models/testapp.card/{id}/"]["patch"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers >= {"Idempotency-Key", "If-Match"}


# The real answers match the documented ones

Scenario = Callable[[Any, Any], tuple[str, str, Any]]
MUTATIONS = "/sync/api/mutations/"
CARDS = "/sync/api/models/testapp.card/"


def card_mutation(board: Board, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "stream": f"board:{board.pk}",
        "model": "testapp.card",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"board": str(board.pk), "title": "t"},
        **extra,
    }


def make_conflict(api: Any, board: Board) -> Conflict:
    item = card_mutation(board)
    api.post(MUTATIONS, {"mutations": [item]}, format="json")
    for title in ("server", "client"):
        update = {**item, "id": str(uuid.uuid4()), "op": "update", "base_version": 1}
        api.post(MUTATIONS, {"mutations": [{**update, "fields": {"title": title}}]}, format="json")
    return Conflict.objects.get()


def mutations_applied(api, board):
    body = {"client_id": "tab-1", "mutations": [card_mutation(board)]}
    return "post", "/sync/api/mutations/", api.post(MUTATIONS, body, format="json")


def mutations_parse_error(api, board):
    return (
        "post",
        "/sync/api/mutations/",
        api.post(MUTATIONS, b"{", content_type="application/json"),
    )


def mutations_key_reuse(api, board):
    item = card_mutation(board)
    key = item.pop("id")
    api.post(MUTATIONS, {"mutations": [item]}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    item["fields"]["title"] = "other"
    response = api.post(MUTATIONS, {"mutations": [item]}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    return "post", "/sync/api/mutations/", response


def snapshot_ok(api, board):
    Card.objects.create(board=board, title="t")
    path = "/sync/api/streams/{stream}/snapshot/"
    return "get", path, api.get(f"/sync/api/streams/board:{board.pk}/snapshot/")


def snapshot_forbidden(api, board):
    path = "/sync/api/streams/{stream}/snapshot/"
    return "get", path, api.get("/sync/api/streams/secret:x/snapshot/")


def snapshot_invalid_stream(api, board):
    path = "/sync/api/streams/{stream}/snapshot/"
    return "get", path, api.get("/sync/api/streams/bad%20name/snapshot/")


def ops_ok(api, board):
    Card.objects.create(board=board, title="t")
    path = "/sync/api/streams/{stream}/ops/"
    return "get", path, api.get(f"/sync/api/streams/board:{board.pk}/ops/")


def ops_reset(api, board):
    Doc.objects.create(text="t")
    return "get", "/sync/api/streams/{stream}/ops/", api.get("/sync/api/streams/docs/ops/?epoch=x")


def ops_invalid(api, board):
    return "get", "/sync/api/streams/{stream}/ops/", api.get("/sync/api/streams/docs/ops/?after=x")


def conflicts_list(api, board):
    conflict = make_conflict(api, board)
    return (
        "get",
        "/sync/api/conflicts/",
        api.get("/sync/api/conflicts/", {"stream": conflict.stream}),
    )


def conflict_resolved(api, board):
    conflict = make_conflict(api, board)
    url = f"/sync/api/conflicts/{conflict.pk}/resolve/"
    response = api.post(url, {"resolution": "client"}, format="json")
    return "post", "/sync/api/conflicts/{conflict_id}/resolve/", response


def conflict_already_resolved(api, board):
    conflict = make_conflict(api, board)
    url = f"/sync/api/conflicts/{conflict.pk}/resolve/"
    api.post(url, {"resolution": "server"}, format="json")
    response = api.post(url, {"resolution": "server"}, format="json")
    return "post", "/sync/api/conflicts/{conflict_id}/resolve/", response


def conflict_unknown(api, board):
    response = api.post("/sync/api/conflicts/999/resolve/", {"resolution": "server"}, format="json")
    return "post", "/sync/api/conflicts/{conflict_id}/resolve/", response


def model_list(api, board):
    Card.objects.create(board=board, title="t")
    return "get", CARDS, api.get(CARDS, {"stream": f"board:{board.pk}"})


def model_retrieve(api, board):
    card = Card.objects.create(board=board, title="t")
    return "get", CARDS + "{id}/", api.get(f"{CARDS}{card.pk}/")


def model_retrieve_missing(api, board):
    return "get", CARDS + "{id}/", api.get(f"{CARDS}{uuid.uuid4()}/")


def model_create(api, board):
    body = {"board": str(board.pk), "title": "t"}
    return "post", CARDS, api.post(CARDS, body, format="json")


def model_create_invalid(api, board):
    return "post", CARDS, api.post(CARDS, {"board": str(board.pk)}, format="json")


def model_create_key_reuse(api, board):
    body = {"id": str(uuid.uuid4()), "board": str(board.pk), "title": "t"}
    key = str(uuid.uuid4())
    api.post(CARDS, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    response = api.post(CARDS, {**body, "title": "u"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    return "post", CARDS, response


def model_update(api, board):
    card = Card.objects.create(board=board, title="t")
    return "patch", CARDS + "{id}/", api.patch(f"{CARDS}{card.pk}/", {"body": "b"}, format="json")


def model_update_stale(api, board):
    card = Card.objects.create(board=board, title="t")
    api.patch(f"{CARDS}{card.pk}/", {"rank": 1}, format="json", HTTP_IF_MATCH='"1"')
    response = api.patch(f"{CARDS}{card.pk}/", {"rank": 2}, format="json", HTTP_IF_MATCH='"1"')
    return "patch", CARDS + "{id}/", response


def model_update_missing(api, board):
    response = api.patch(f"{CARDS}{uuid.uuid4()}/", {"body": "b"}, format="json")
    return "patch", CARDS + "{id}/", response


def model_delete(api, board):
    card = Card.objects.create(board=board, title="t")
    return "delete", CARDS + "{id}/", api.delete(f"{CARDS}{card.pk}/")


def model_delete_missing(api, board):
    return "delete", CARDS + "{id}/", api.delete(f"{CARDS}{uuid.uuid4()}/")


SCENARIOS: list[Scenario] = [
    mutations_applied,
    mutations_parse_error,
    mutations_key_reuse,
    snapshot_ok,
    snapshot_forbidden,
    snapshot_invalid_stream,
    ops_ok,
    ops_reset,
    ops_invalid,
    conflicts_list,
    conflict_resolved,
    conflict_already_resolved,
    conflict_unknown,
    model_list,
    model_retrieve,
    model_retrieve_missing,
    model_create,
    model_create_invalid,
    model_create_key_reuse,
    model_update,
    model_update_stale,
    model_update_missing,
    model_delete,
    model_delete_missing,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_schema_documents_the_real_answer(schema, api, board, scenario):
    method, path, response = scenario(api, board)
    responses = schema["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method.upper()} {path} answers {status}, undocumented"
    content = responses[status].get("content")
    if not content:
        assert response.content == b""
        return
    media_type = response["Content-Type"]
    assert media_type in content, f"{status} is documented as {set(content)}, not {media_type}"
    validator = OAS31Validator(
        {**content[media_type]["schema"], "components": schema["components"]}
    )
    errors = [e.message for e in validator.iter_errors(json.loads(response.content))]
    assert errors == []
