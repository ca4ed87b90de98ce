"""Property-based fuzzing of every REST body, path, query and header (hypothesis).

The mutation endpoint, the per-model endpoints (every method), the snapshot, ops and
conflict endpoints get valid, broken and raw bodies, odd content types, hostile headers
(``Idempotency-Key``, ``If-Match``, ``Sync-Clock``, ``Sync-Client-Id``) and odd paths and
queries. Every answer is below 500; an error is problem+json whose ``status`` is the
response's and whose ``code`` has the status docs/protocol.md gives it; a refused write
wrote nothing, and every mutation reported applied is in the op log.
``SYNCAPP_FUZZ_EXAMPLES`` raises the number of examples (tests/fuzz.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from syncapp.models import Op
from tests.fuzz import (
    FUZZ,
    MODELS,
    NO_RATE_LIMITS,
    RESULT_STATUSES,
    broken,
    client_ids,
    clocks,
    json_values,
    mutations,
    plausible_mutations,
    streams,
)
from tests.testapp.models import Board, Card, Doc

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
MUTATIONS = "/sync/api/mutations/"
# The HTTP status of each code (docs/protocol.md, "Errors over HTTP"); a code not listed
# is a mutation-level one (docs/mutations.md), answered with its own 4xx.
STATUS_OF = {
    "parse_error": {400},
    "invalid": {400},
    "too_deep": {400},
    "invalid_stream": {400},
    "invalid_position": {400},
    "invalid_idempotency_key": {400},
    "not_authenticated": {401, 403},
    "permission_denied": {403},
    "csrf_failed": {403},
    "not_found": {404},
    "gone": {410},
    "reset": {409},
    "in_progress": {409},
    "already_resolved": {409},
    "too_large": {413},
    "batch_too_large": {413},
    "unsupported_media_type": {415},
    "idempotency_mismatch": {422},
    "rate_limited": {429},
}

printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
header_values = printable | st.sampled_from(["", " ", '"1"', 'W/"2"', "-1", "\u00e9", "x" * 500])
content_types = st.sampled_from(
    [
        # JSON, most of the time: the requests should mostly get past the parser.
        *["application/json"] * 6,
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "",
    ]
)
# Test-client keyword arguments for the request headers a write may carry.
headers = st.fixed_dictionaries(
    {},
    optional={
        "HTTP_IDEMPOTENCY_KEY": st.uuids().map(str) | header_values,
        "HTTP_IF_MATCH": st.integers(min_value=-1, max_value=2**64).map(lambda v: f'"{v}"')
        | header_values,
        "HTTP_SYNC_CLOCK": clocks.filter(lambda c: isinstance(c, str)) | header_values,
        "HTTP_SYNC_CLIENT_ID": client_ids | header_values,
    },
)


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    settings.SYNCAPP = NO_RATE_LIMITS


@pytest.fixture
def world(db):
    board = Board.objects.create(name="fuzz")
    card = Card.objects.create(board=board, title="first")
    doc = Doc.objects.create(text="first")
    return {
        "board": str(board.pk),
        "pks": [str(card.pk), str(board.pk), str(doc.pk), str(uuid.uuid4())],
        "card": str(card.pk),
        "doc": doc.pk,
    }


def encoded(value: Any) -> SearchStrategy[bytes]:
    """JSON of ``value``, or raw bytes instead."""
    return st.one_of(
        st.just(json.dumps(value).encode()),
        st.just(json.dumps(value).encode()),
        st.just(json.dumps(value, ensure_ascii=False).encode()),
        st.binary(max_size=80),
        st.sampled_from([b"", b"null", b"{", b'"\xff"', b"[" * 5000 + b"]" * 5000, b"\x00"]),
    )


def check(response: Any) -> dict[str, Any] | None:
    """Not a 5xx; an error is problem+json with a code of its status. The JSON body."""
    status = response.status_code
    event(f"HTTP {status}")
    assert status < 500, response.content[:500]
    if status == 204:
        assert response.content == b""
        return None
    if status == 404 and response["Content-Type"].startswith("text/html"):
        return None  # no route matched (Django's own 404): not a syncapp view
    body = json.loads(response.content)
    if status >= 400:
        assert response["Content-Type"] == PROBLEM, response.content[:500]
        assert body["status"] == status
        assert isinstance(body["code"], str)
        assert body["code"] not in ("internal_error", "error"), body
        assert status in STATUS_OF.get(body["code"], {status}), body
        assert isinstance(body["detail"], str)
        assert isinstance(body["title"], str)
    return dict(body)


def applied_are_logged(results: list[dict[str, Any]]) -> None:
    for result in results:
        event(f"result {result['status']}")
        assert result["status"] in RESULT_STATUSES, result
        if result["status"] == "rejected":
            assert result["error"]["code"] != "internal_error", result
        if result["status"] in ("applied", "conflict") and result["seq"] is not None:
            assert Op.objects.filter(mutation_id=result["id"]).exists(), result


@given(data=st.data())
@FUZZ
def test_fuzzed_mutation_batches(api, world, data):
    mutation = mutations(world["board"], world["pks"])
    plausible = plausible_mutations(world["board"], world["pks"])
    batch = st.fixed_dictionaries(
        {
            "mutations": st.lists(plausible, min_size=1, max_size=5)
            | st.lists(mutation, max_size=5)
            | st.lists(mutation | broken(mutation), max_size=5)
        },
        optional={"client_id": client_ids},
    )
    body = data.draw(encoded(data.draw(batch | batch | broken(batch), label="batch")), label="body")
    content_type = data.draw(content_types, label="content type")
    extra = data.draw(st.just({}) | headers, label="headers")
    before = Op.objects.count()
    response = api.generic("POST", MUTATIONS, body, content_type=content_type, **extra)
    answer = check(response)
    if response.status_code == 200:
        assert answer is not None
        applied_are_logged(answer["results"])
    else:
        assert Op.objects.count() == before, "a refused batch wrote something"


@given(data=st.data())
@FUZZ
def test_fuzzed_model_endpoints(api, world, data):
    label = data.draw(
        st.sampled_from(["testapp.card", "testapp.card", "testapp.doc", "testapp.board", "x.y"])
    )
    known = st.sampled_from([world["card"], str(world["doc"]), world["board"]])
    anything = known | st.uuids().map(str) | printable.filter(bool) | st.integers().map(str)
    method, target = data.draw(
        st.tuples(st.sampled_from(["GET", "POST"]), st.none())
        | st.tuples(st.sampled_from(["GET", "PUT", "PATCH", "DELETE"]), known)
        | st.tuples(
            st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            st.none() | anything,
        ),
        label="method and pk",
    )
    path = f"/sync/api/models/{label}/"
    if target is not None:
        path += f"{quote(target, safe='')}/"
    query = data.draw(
        st.fixed_dictionaries({}, optional={"stream": streams | printable}), label="query"
    )
    if query:
        path += "?" + urlencode(query)
    card = st.fixed_dictionaries(
        {"board": st.just(world["board"]), "title": st.text(max_size=50)},
        optional={"id": st.uuids().map(str), "done": st.booleans(), "text": st.text()},
    )
    fields = card | st.dictionaries(
        st.sampled_from(["title", "board", "text", "name", "likes", "rank", "id", "pk", "x"]),
        json_values,
        max_size=4,
    )
    body = data.draw(encoded(data.draw(fields | json_values, label="fields")), label="body")
    content_type = data.draw(content_types, label="content type")
    extra = data.draw(headers, label="headers")
    before = Op.objects.count()
    response = api.generic(method, path, body, content_type=content_type, **extra)
    check(response)
    if response.status_code >= 400 and response.status_code != 409:
        # 409 may be a conflict on some fields with the others applied.
        assert Op.objects.count() == before, "a refused write wrote something"


@given(data=st.data())
@FUZZ
def test_fuzzed_reads(api, world, data):
    stream = data.draw(st.sampled_from([f"board:{world['board']}", "secret:plans"]) | streams)
    kind = data.draw(st.sampled_from(["ops", "snapshot"]))
    query = data.draw(
        st.dictionaries(
            st.sampled_from(["epoch", "after", "limit", "stream", "status", "x"]),
            printable | st.integers(min_value=-(2**70), max_value=2**70).map(str),
            max_size=4,
        ),
        label="query",
    )
    paths = [
        f"/sync/api/streams/{quote(stream, safe='')}/{kind}/?{urlencode(query)}",
        f"/sync/api/conflicts/?{urlencode({'stream': stream, **query})}",
    ]
    for path in paths:
        check(api.get(path))


@given(data=st.data())
@FUZZ
def test_fuzzed_conflict_resolutions(api, world, data):
    conflict_id = data.draw(st.integers(min_value=0, max_value=2**70), label="id")
    resolution = st.fixed_dictionaries(
        {"resolution": st.sampled_from(["server", "client", "value"]) | json_values},
        optional={"value": json_values},
    )
    body = data.draw(encoded(data.draw(resolution | broken(resolution))), label="body")
    before = Op.objects.count()
    response = api.generic(
        "POST",
        f"/sync/api/conflicts/{conflict_id}/resolve/",
        body,
        content_type=data.draw(content_types),
    )
    check(response)
    assert Op.objects.count() == before  # there is no conflict to resolve


@given(data=st.data())
@FUZZ
def test_fuzzed_requests_of_anonymous_clients(anon, world, data):
    """The same bodies from a client that is not logged in: refused or scoped to its
    client_id, never a 5xx."""
    mutation = mutations(world["board"], world["pks"])
    batch = st.fixed_dictionaries(
        {"mutations": st.lists(mutation, min_size=1, max_size=3)},
        optional={"client_id": client_ids},
    )
    body = data.draw(batch, label="batch")
    response = anon.post(MUTATIONS, body, format="json")
    answer = check(response)
    if response.status_code == 200:
        assert answer is not None
        applied_are_logged(answer["results"])


def test_models_list_is_the_fuzzed_models():
    """The strategies draw the synced models, and one label that is not."""
    from syncapp import registry

    labels = {m._meta.label_lower for m in registry.synced_models()}
    assert {"testapp.card", "testapp.doc", "testapp.board"} <= labels
    assert set(MODELS) - labels == {"auth.user", "nope"}
