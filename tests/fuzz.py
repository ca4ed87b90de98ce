"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py, tests/test_schemathesis.py).

``SYNCAPP_FUZZ_EXAMPLES`` sets how many examples each property draws (default 25, so the
whole set runs in about a minute on a loaded machine); raise it for a long run::

    SYNCAPP_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_frames.py tests/test_fuzz_rest.py
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from syncapp.protocol import CLIENT_ID_PATTERN, STREAM_PATTERN

EXAMPLES = int(os.environ.get("SYNCAPP_FUZZ_EXAMPLES", "25"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded machine: no per-example time limit
    # Fixtures (the user, the board) are shared by the examples of a test on purpose, and
    # some examples are large on purpose.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    # A failure found once is printed with its reproduction; no example database to share.
    database=None,
)
settings.register_profile("syncapp-fuzz", FUZZ)

# Settings for the fuzz tests: the per-user and per-connection rate limits are off, so a
# long run measures the input handling, not the budgets (tests/test_limits.py has those).
NO_RATE_LIMITS = {
    "PERMISSION_CLASS": "tests.testapp.permissions.TestPermission",
    "USER_MUTATION_RATE": None,
    "USER_READ_RATE": None,
    "USER_PRESENCE_RATE": None,
    "MUTATION_RATE": 1_000_000,
    "MUTATION_BURST": 1_000_000,
    "PRESENCE_MAX_RATE": 1_000_000,
    "PRESENCE_BURST": 1_000_000,
}

# Every code an ``error`` frame may carry (docs/protocol.md), except ``internal_error``:
# that one means the server failed, which bad input must never make it do.
WS_ERROR_CODES = {
    "parse_error",
    "invalid",
    "unknown_type",
    "too_deep",
    "binary_unsupported",
    "hello_required",
    "already_hello",
    "protocol_unsupported",
    "not_subscribed",
    "too_large",
    "too_many_subscriptions",
    "rate_limited",
    "batch_too_large",
    "not_authenticated",
    "permission_denied",
}
SERVER_FRAME_TYPES = {
    "welcome",
    "snapshot",
    "ops",
    "subscribed",
    "unsubscribed",
    "reset",
    "ack",
    "pong",
    "presence_state",
    "presence",
    "error",
}
RESULT_STATUSES = {"applied", "conflict", "rejected", "gone"}
CLIENT_FRAME_TYPES = ["hello", "subscribe", "unsubscribe", "mutate", "ping", "presence"]

# JSON values of every kind, with the edges: huge and negative numbers, odd text.
leaves: SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "abc", "-1", "1e400", "\u202e", "😀" * 10, "a" * 300]),
)
json_values: SearchStrategy[Any] = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

streams = st.one_of(
    st.from_regex(STREAM_PATTERN, fullmatch=True),
    st.sampled_from(["public:fuzz", "secret:plans", "boards", "docs", "x" * 201, "", "a b"]),
)
client_ids = st.one_of(
    st.from_regex(CLIENT_ID_PATTERN, fullmatch=True), st.sampled_from(["tab-1", "", "x" * 101])
)
refs = st.one_of(
    st.text(max_size=70), st.integers(min_value=-1, max_value=2**54), st.none(), json_values
)
clocks = st.one_of(
    st.from_regex(r"^\d{1,15}:\d{1,9}$", fullmatch=True),
    st.sampled_from(["999999999999999:999999999", "0:0", "1:x", "", "1:2:3"]),
)


fresh_uuids = st.builds(lambda: str(uuid.uuid4()))

MODELS = [
    "testapp.card",
    "testapp.board",
    "testapp.doc",
    "testapp.note",
    "testapp.tag",
    "todos.todo",
    "auth.user",
    "nope",
]


def card_fields(board_pk: str) -> SearchStrategy[dict[str, Any]]:
    """The fields of a card, valid or not: each one of its own type or any JSON value."""
    return st.fixed_dictionaries(
        {},
        optional={
            "board": st.sampled_from([board_pk, str(uuid.uuid4()), "nope"]) | json_values,
            "title": st.text(max_size=250) | json_values,
            "body": st.text(max_size=100) | json_values,
            "done": st.booleans() | json_values,
            "likes": st.integers(min_value=-2000, max_value=2**64) | json_values,
            "rank": st.integers(min_value=-5, max_value=2**63) | json_values,
            "updated_at": json_values,
            "nope": json_values,
            # The fields of the other test models (Board, Doc, Note, Tag).
            "name": st.text(max_size=120) | json_values,
            "public": st.booleans() | json_values,
            "text": st.text(max_size=50) | json_values,
            "secret": json_values,
            "label": st.text(max_size=60) | json_values,
            "card": st.uuids().map(str) | json_values,
        },
    )


def mutations(board_pk: str, pks: list[str]) -> SearchStrategy[dict[str, Any]]:
    """A mutation: half of them plausible writes to the board's cards, half wild ones."""
    return plausible_mutations(board_pk, pks) | wild_mutations(board_pk, pks)


def plausible_mutations(board_pk: str, pks: list[str]) -> SearchStrategy[dict[str, Any]]:
    """Creates, updates and deletes of a few cards of the board, most of them valid.

    Most ids and new keys are fresh (hypothesis would draw the same few UUIDs again and
    again: every retry of an id with another payload is an ``idempotency_mismatch``);
    some are drawn, so retries happen too."""
    return st.fixed_dictionaries(
        {
            "id": fresh_uuids | st.uuids().map(str),
            "stream": st.just(f"board:{board_pk}"),
            "model": st.just("testapp.card"),
            "pk": st.sampled_from(pks) | fresh_uuids,
            "op": st.sampled_from(["create", "update", "delete"]),
            "fields": st.fixed_dictionaries(
                {"board": st.just(board_pk), "title": st.text(max_size=50)},
                optional={
                    "body": st.text(max_size=50),
                    "done": st.booleans(),
                    "likes": st.fixed_dictionaries({"delta": st.integers(-3, 3)}),
                },
            ),
        },
        optional={
            "base_version": st.integers(min_value=0, max_value=5),
            "clock": st.from_regex(r"^\d{1,13}:\d{1,3}$", fullmatch=True),
        },
    )


def wild_mutations(board_pk: str, pks: list[str]) -> SearchStrategy[dict[str, Any]]:
    """Mutations of any model, in any stream, with fields of any type."""
    return st.fixed_dictionaries(
        {
            "id": st.uuids().map(str),
            "stream": st.sampled_from(
                [f"board:{board_pk}", "boards", "public:boards", "docs", "notes", "secret:plans"]
            )
            | streams,
            "model": st.sampled_from(MODELS),
            "pk": st.sampled_from(pks) | json_values,
            "op": st.sampled_from(["create", "update", "delete"]),
            "fields": card_fields(board_pk),
        },
        optional={
            "base_version": st.integers(min_value=-1, max_value=2**64) | json_values,
            "clock": clocks | json_values,
        },
    )


@st.composite
def broken(draw: Any, frames: SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A frame with one thing wrong: a member dropped, added, or of another type."""
    frame = dict(draw(frames))
    how = draw(st.sampled_from(["drop", "extra", "wrong_type", "retype"]))
    if how == "drop" and frame:
        del frame[draw(st.sampled_from(sorted(frame)))]
    elif how == "wrong_type" and frame:
        frame[draw(st.sampled_from(sorted(frame)))] = draw(json_values)
    elif how == "retype":
        frame["type"] = draw(st.sampled_from(CLIENT_FRAME_TYPES) | json_values)
    else:
        frame[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return frame
