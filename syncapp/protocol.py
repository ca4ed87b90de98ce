"""The shapes of protocol version 1 (docs/protocol.md), as msgspec Structs.

Inbound bodies and frames are decoded straight into these types, once: a value that
does not fit gets an error naming its path (``$.mutations[0].stream``). The OpenAPI
schema is generated from the same types.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

PROTOCOL_VERSION = 1

STREAM_PATTERN = r"^[A-Za-z0-9_.:-]{1,200}$"
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"

StreamName = Annotated[str, Meta(pattern=STREAM_PATTERN, description="A stream name.")]
ClientId = Annotated[
    str,
    Meta(
        pattern=CLIENT_ID_PATTERN,
        description="The client's id, stable across reconnects; breaks clock ties.",
    ),
]
ModelLabel = Annotated[
    str, Meta(pattern=r"^[a-z0-9_]{1,50}\.[a-z0-9_]{1,50}$", description="A label_lower.")
]
PrimaryKey = Annotated[str, Meta(min_length=1, max_length=255)] | int
WireClock = Annotated[
    str, Meta(pattern=r"^\d{1,15}:\d{1,9}$", description='HLC "<wall ms>:<counter>".')
]
OpKind = Literal["create", "update", "delete"]
Status = Literal["applied", "conflict", "rejected", "gone"]


class MutationRequest(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A mutation in an HTTP body: its id may come from the ``Idempotency-Key`` header."""

    id: uuid.UUID | None = None
    stream: StreamName
    model: ModelLabel
    pk: PrimaryKey
    op: OpKind
    fields: dict[str, Any] = {}
    base_version: Annotated[int, Meta(ge=0)] | None = None
    clock: WireClock | None = None


class Mutation(MutationRequest, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A client's request to change one object; ``id`` is its idempotency key."""

    id: uuid.UUID


class MutationBatch(Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST <prefix>api/mutations/``."""

    client_id: ClientId | None = None
    mutations: Annotated[list[MutationRequest], Meta(min_length=1)]


def with_id(request: MutationRequest, key: uuid.UUID) -> Mutation:
    """``request`` as a :class:`Mutation` whose id is ``key``."""
    return Mutation(**(msgspec.structs.asdict(request) | {"id": key}))


class ErrorInfo(Struct, kw_only=True, omit_defaults=True):
    """Why a mutation was not applied as sent.

    Its texts hold no NUL: a message that quotes what the client sent (an invalid pk, a
    choice that is not one) may carry one, which PostgreSQL's ``jsonb``, where the result
    is kept for retries, cannot store. Each becomes U+FFFD, in the answer and in what a
    retry gets alike."""

    code: str
    message: str
    fields: dict[str, list[str]] | None = None
    retry: bool = False

    def __post_init__(self) -> None:
        self.message = _no_nul(self.message)
        if self.fields is not None:
            self.fields = {
                _no_nul(name): [_no_nul(text) for text in texts]
                for name, texts in self.fields.items()
            }


def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")


class ObjectState(Struct, kw_only=True):
    """An object as the server holds it."""

    model: str
    pk: PrimaryKey
    version: int
    fields: dict[str, Any]


class ObjectList(Struct, kw_only=True):
    """Objects of one model in one stream."""

    objects: list[ObjectState]


class MutationResult(Struct, kw_only=True):
    """The authoritative outcome of one mutation."""

    id: uuid.UUID
    status: Status
    seq: int | None = None
    version: int | None = None
    object: ObjectState | None = None
    error: ErrorInfo | None = None


class MutationResults(Struct, kw_only=True):
    """The answer to a batch of mutations, in the order they were sent."""

    results: list[MutationResult]


class OpMessage(Struct, kw_only=True):
    """One committed change, as every transport sends it."""

    stream: str
    epoch: str
    seq: int
    model: str
    pk: PrimaryKey
    op: OpKind
    fields: dict[str, Any]
    version: int
    mutation: uuid.UUID | None
    ts: str


class SnapshotBody(Struct, kw_only=True):
    """Every object of a stream as of ``seq``."""

    stream: str
    epoch: str
    seq: int
    objects: list[ObjectState]


class OpsPage(Struct, kw_only=True):
    """Ops after a position, oldest first."""

    stream: str
    epoch: str
    head: int
    ops: list[OpMessage]


class ResetBody(Struct, kw_only=True):
    """The position cannot be resumed: load a snapshot."""

    type: Literal["reset"]
    stream: str
    epoch: str
    reason: Literal["epoch_changed", "ahead_of_head", "trimmed"]


class Problem(Struct, kw_only=True, omit_defaults=True):
    """An error over HTTP (RFC 9457 problem details)."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    fields: dict[str, list[str]] | None = None
    object: ObjectState | None = None


def fingerprint(mutation: Mutation) -> str:
    """A digest of the mutation's payload, independent of key order."""
    return hashlib.sha256(msgspec.json.encode(mutation, order="sorted")).hexdigest()


# WebSocket frames, client to server. Each is an object with a ``type``; ``ref`` is echoed
# by the reply.

Ref = Annotated[str, Meta(max_length=64)] | Annotated[int, Meta(ge=0, le=2**53)]
Epoch = Annotated[str, Meta(min_length=1, max_length=64)]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]


class Position(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where a client is in a stream."""

    epoch: Epoch
    seq: Seq


class _Frame(Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    ref: Ref | None = None


class HelloFrame(_Frame, tag="hello"):
    """The first frame: who the client is and which protocol it speaks."""

    client_id: ClientId
    protocol: int


class SubscribeFrame(_Frame, tag="subscribe"):
    """Follow a stream: from a position, or from a snapshot when there is none."""

    stream: StreamName
    after: Position | None = None


class UnsubscribeFrame(_Frame, tag="unsubscribe"):
    stream: StreamName


class MutateFrame(_Frame, tag="mutate"):
    mutations: Annotated[list[Mutation], Meta(min_length=1)]


class PingFrame(_Frame, tag="ping"):
    ts: int | float | None = None


class PresenceFrame(_Frame, tag="presence"):
    """This connection's presence in a stream it follows: joins it, or changes its state."""

    stream: StreamName
    state: dict[str, Any]


ClientFrame = (
    HelloFrame | SubscribeFrame | UnsubscribeFrame | MutateFrame | PingFrame | PresenceFrame
)
CLIENT_FRAME_TYPES = ("hello", "subscribe", "unsubscribe", "mutate", "ping", "presence")
