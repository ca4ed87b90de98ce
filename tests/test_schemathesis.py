"""schemathesis against the OpenAPI schema drf-spectacular generates (tests/test_schema.py),
in-process through the WSGI application, as an authenticated user (HTTP Basic).

Every documented operation gets schema-valid (positive) and schema-invalid (negative)
requests; each answer must not be a 5xx, must have a status, content type and headers the
schema documents for it, and a body that matches the documented schema.

The checks that are not about this API are off:
- ``positive_data_acceptance``: a schema-valid body can still be refused for reasons a
  schema cannot say (a stream the user may not read, an object that does not exist);
- ``negative_data_rejection``: replaced by the stricter checks above on negative cases
  (an answer to invalid data must be a documented 4xx, not merely "not 2xx");
- ``ignored_auth``: anonymous access is allowed on purpose; the permission hook decides;
- ``use_after_free``, ``ensure_resource_availability``, ``object_level_authorization``:
  stateful checks across operations linked by the schema, which declares no links.

``GET api/streams/{stream}/events/`` is left out: it is an endless SSE stream, not a
request and a response (tests/test_hostile_input.py covers its inputs).
``SYNCAPP_FUZZ_EXAMPLES`` raises the number of examples (tests/fuzz.py).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz import FUZZ, NO_RATE_LIMITS

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
METHODS = {"get", "put", "post", "delete", "patch"}
EXCLUDED = {"/sync/api/streams/{stream}/events/"}


def raw_schema() -> dict[str, Any]:
    """The schema as /schema/ serves it (JSON)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return dict(json.loads(OpenApiJsonRenderer().render(schema)))


RAW = raw_schema()
OPERATIONS = sorted(
    (path, method.upper())
    for path, item in RAW["paths"].items()
    if path.startswith("/sync/") and path not in EXCLUDED
    for method in item
    if method in METHODS
)
# Negative cases need an input a client controls beyond a free-form path segment: a body
# or a query. (``{stream}`` and ``{id}`` are any text without a slash, so every
# "invalid" one is a valid one once in the URL; schemathesis finds none.)
NEGATABLE = {
    (path, method)
    for path, method in OPERATIONS
    if "requestBody" in (operation := RAW["paths"][path][method.lower()])
    or any(p["in"] == "query" for p in operation.get("parameters", ()))
}
CASES = [(path, method, GenerationMode.POSITIVE) for path, method in OPERATIONS] + [
    (path, method, GenerationMode.NEGATIVE)
    for path, method in OPERATIONS
    if (path, method) in NEGATABLE
]
SCHEMA = schemathesis.openapi.from_dict(RAW)
SCHEMA.app = get_wsgi_application()


@pytest.fixture
def basic_auth(django_user_model, settings):
    settings.SYNCAPP = NO_RATE_LIMITS
    django_user_model.objects.create_user("fuzz", password="pw")
    token = base64.b64encode(b"fuzz:pw").decode()
    return {"Authorization": f"Basic {token}"}


def test_every_syncapp_operation_is_fuzzed():
    """The list is not empty by accident: the core and per-model endpoints are in it."""
    assert ("/sync/api/mutations/", "POST") in OPERATIONS
    assert ("/sync/api/streams/{stream}/ops/", "GET") in OPERATIONS
    assert ("/sync/api/models/testapp.card/{id}/", "PATCH") in OPERATIONS
    assert len(OPERATIONS) >= 20


@pytest.mark.parametrize(
    ("path", "method", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for p, m, mode in CASES]
)
def test_operation_conforms_to_the_schema(basic_auth, path, method, mode):
    operation = SCHEMA[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        FUZZ, suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.filter_too_much]
    )
    def run(case: Any) -> None:
        response = case.call(headers=basic_auth)
        case.validate_response(response, checks=CHECKS, headers=basic_auth)

    run()
