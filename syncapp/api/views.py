"""The HTTP transport: thin views over the core's mutation path, history reader,
snapshot and permission hook (DESIGN "Layers")."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from syncapp import encoding, longpoll, mutations, oplog, permissions, resolution, tokens
from syncapp.api.parsers import MsgspecJSONParser
from syncapp.api.problems import PROBLEM, exception_handler, problem
from syncapp.api.renderers import MsgspecJSONRenderer
from syncapp.api.throttles import ThrottleMixin
from syncapp.conf import conf
from syncapp.exceptions import (
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    http_status,
)
from syncapp.models import Conflict
from syncapp.protocol import (
    STREAM_PATTERN,
    MutationBatch,
    MutationResults,
    OpsPage,
    Problem,
    ResetBody,
    SnapshotBody,
    with_id,
)

STREAM_PARAM = OpenApiParameter(
    "stream",
    str,
    OpenApiParameter.PATH,
    pattern=STREAM_PATTERN,
    description="The stream's name.",
)
ERRORS: dict[Any, Any] = {
    (400, PROBLEM): OpenApiResponse(Problem, description="Malformed or invalid input."),
    (403, PROBLEM): OpenApiResponse(Problem, description="Not allowed."),
}


class SyncAPIMixin(ThrottleMixin):
    """msgspec bodies, problem+json errors, the per-user rate limits."""

    parser_classes: Any = [MsgspecJSONParser]
    renderer_classes: Any = [MsgspecJSONRenderer]
    body_type: Any = Any

    def get_exception_handler(self) -> Any:
        return exception_handler

    def body(self, request: Request) -> Any:
        """The decoded body, or a clear error if there was none."""
        data = request.data
        if not isinstance(data, self.body_type):
            raise InvalidInput("A JSON body is required.", code="invalid")
        return data


class SyncAPIView(SyncAPIMixin, APIView):
    """A synchronous syncapp view."""


class AsyncSyncAPIView(SyncAPIMixin, AsyncAPIView):  # type: ignore[misc]
    """An asynchronous syncapp view (adrf): it can wait without holding a thread."""


def _query(request: Request, query_type: type[Any]) -> Any:
    try:
        return msgspec.convert(dict(request.query_params.items()), query_type, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc).replace("$.", "?"), code="invalid") from exc


class MutationsView(SyncAPIView):
    """``POST api/mutations/``: apply a batch of mutations."""

    body_type = MutationBatch

    @extend_schema(
        operation_id="sync_mutations",
        request=MutationBatch,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.UUID,
                OpenApiParameter.HEADER,
                description="The id of the single mutation in the body.",
            )
        ],
        responses={
            200: MutationResults,
            **ERRORS,
            (409, PROBLEM): OpenApiResponse(Problem, description="Still in progress; retry."),
            (413, PROBLEM): OpenApiResponse(Problem, description="Body or batch too large."),
            (422, PROBLEM): OpenApiResponse(Problem, description="Key reused for another payload."),
        },
    )
    def post(self, request: Request) -> Response:
        batch: MutationBatch = self.body(request)
        header = request.headers.get("Idempotency-Key")
        key = idempotency_key(header) if header is not None else None
        if key is not None and len(batch.mutations) != 1:
            raise InvalidInput(
                "The Idempotency-Key header goes with exactly one mutation.", code="invalid"
            )
        items = []
        for index, item in enumerate(batch.mutations):
            if key is not None and item.id is not None and item.id != key:
                raise InvalidInput(
                    "The mutation's id differs from the Idempotency-Key header.", code="invalid"
                )
            mutation_id = key or item.id
            if mutation_id is None:
                raise InvalidInput(
                    f"Object missing required field `id` - at `$.mutations[{index}]`"
                )
            items.append(with_id(item, mutation_id))
        results = mutations.apply(items, user=request.user, client_id=batch.client_id, source="api")
        if key is not None and results[0].error is not None:
            # With the key in a header, a key-level error is the request's own answer.
            error = results[0].error
            if error.code in ("in_progress", "idempotency_mismatch"):
                headers = {"Retry-After": "1"} if error.retry else None
                return problem(http_status(error.code), error.code, error.message, headers=headers)
        return Response(MutationResults(results=results))


def idempotency_key(value: str) -> uuid.UUID:
    """The mutation id an `Idempotency-Key` header carries."""
    try:
        return uuid.UUID(value.strip().strip('"'))
    except ValueError as exc:
        raise InvalidInput(
            "The Idempotency-Key header must be a UUID.", code="invalid_idempotency_key"
        ) from exc


class SnapshotView(SyncAPIView):
    """``GET api/streams/<stream>/snapshot/``: every object of a stream as of one seq."""

    @extend_schema(
        operation_id="sync_snapshot",
        parameters=[STREAM_PARAM],
        responses={200: SnapshotBody, **ERRORS},
    )
    def get(self, request: Request, stream: str) -> Response:
        oplog.validate_stream_name(stream)
        permissions.check_read(request.user, stream)
        snap = oplog.snapshot(stream)
        return Response(
            {"stream": snap.stream, "epoch": snap.epoch, "seq": snap.seq, "objects": snap.objects}
        )


class OpsQuery(msgspec.Struct, kw_only=True):
    """The query of the ops endpoint."""

    epoch: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    after: Annotated[int, msgspec.Meta(le=2**63 - 1)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    wait: Annotated[float, msgspec.Meta(ge=0)] = 0


class OpsView(AsyncSyncAPIView):
    """``GET api/streams/<stream>/ops/``: the log after a position; with ``wait``, a
    long-poll that answers as soon as an op commits."""

    @extend_schema(
        operation_id="sync_ops",
        parameters=[
            STREAM_PARAM,
            OpenApiParameter("epoch", str, description="The epoch of your position."),
            OpenApiParameter("after", int, description="Your last seq; ops after it come back."),
            OpenApiParameter("limit", int, description="At most this many ops."),
            OpenApiParameter(
                "wait",
                float,
                description="Long-poll: with no op after the position, wait up to this many "
                "seconds for one (at most LONG_POLL_MAX_WAIT).",
            ),
        ],
        responses={
            200: OpsPage,
            **ERRORS,
            (409, PROBLEM): OpenApiResponse(ResetBody, description="Load a snapshot."),
        },
    )
    async def get(self, request: Request, stream: str) -> Response:
        oplog.validate_stream_name(stream)
        query: OpsQuery = _query(request, OpsQuery)
        if query.after < 0:
            raise InvalidInput("`after` must be >= 0.", code="invalid_position")
        if query.after and query.epoch is None:
            raise InvalidInput("`epoch` is required with `after`.", code="invalid_position")
        max_wait = conf.LONG_POLL_MAX_WAIT.total_seconds()
        if query.wait > max_wait:
            raise InvalidInput(f"`wait` is at most {max_wait:g} seconds.", code="invalid")
        if query.wait and not hasattr(request._request, "scope"):
            # Under WSGI each async request runs on an event loop of its own, which dies
            # with it: nothing can wake it. Long-poll needs an ASGI server.
            raise InvalidInput("`wait` needs an ASGI server (daphne, uvicorn).", code="invalid")
        # sync_to_async, not Channels' database_sync_to_async: Django's request cycle
        # manages this thread's connection, and it may be inside a transaction.
        check = sync_to_async(permissions.check_read)
        read = sync_to_async(oplog.read)
        await check(request.user, stream)
        limit = min(query.limit or conf.OPS_PAGE_SIZE, conf.OPS_PAGE_MAX)
        page = await read(stream, epoch=query.epoch, after=query.after, limit=limit)
        if not page.ops and query.wait:
            await longpoll.wait(stream, query.after, query.wait)
            # Access may have been revoked meanwhile.
            if not await sync_to_async(permissions.can_still_read)(request.user, stream):
                raise PermissionDenied(f"You may no longer read {stream}.")
            page = await read(stream, epoch=query.epoch, after=query.after, limit=limit)
        ops = [msgspec.Raw(op.encoded.encode()) for op in page.ops]
        return Response({"stream": page.stream, "epoch": page.epoch, "head": page.head, "ops": ops})


class WsToken(msgspec.Struct, kw_only=True):
    """A token for ``<prefix>ws/?token=``, for clients that cannot send cookies."""

    token: str
    expires_in: int


class WsTokenView(SyncAPIView):
    """``POST api/ws-token/``: a short-lived token that authenticates a WebSocket."""

    @extend_schema(
        operation_id="sync_ws_token",
        request=None,
        responses={200: WsToken, (403, PROBLEM): OpenApiResponse(Problem)},
    )
    def post(self, request: Request) -> Response:
        if not request.user.is_authenticated:
            raise NotAuthenticated()
        return Response(
            WsToken(
                token=tokens.issue(request.user),
                expires_in=int(conf.TOKEN_TTL.total_seconds()),
            )
        )


@extend_schema(exclude=True)
class UnknownModelView(SyncAPIView):
    """``api/models/<label>/`` for a label that is not a synced model, and any other path
    under ``api/`` that names no endpoint: a 404 problem."""

    def dispatch_unknown(
        self,
        request: Request,
        label: str | None = None,
        pk: str | None = None,
        rest: str | None = None,
    ) -> Response:
        if label is None:
            raise NotFound("No such endpoint.")
        raise NotFound(f"{label!r} is not a synced model.")

    get = post = put = patch = delete = dispatch_unknown


class ConflictState(msgspec.Struct, kw_only=True):
    """A conflict kept by the ``manual`` policy."""

    id: int
    stream: str
    model: str
    pk: str
    field: str
    base_version: int | None
    base_value: Any
    server_version: int
    server_value: Any
    client_value: Any
    status: Literal["pending", "resolved"]
    resolution: str
    resolved_value: Any
    created_at: str


class ConflictList(msgspec.Struct, kw_only=True):
    """A stream's conflicts, pending first; ``more`` says the list was cut at ``limit``."""

    conflicts: list[ConflictState]
    more: bool


class ConflictQuery(msgspec.Struct, kw_only=True):
    stream: str
    status: Literal["pending", "resolved"] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


class ConflictResolution(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How to resolve a conflict: ``value`` is used with ``resolution="value"``."""

    resolution: Literal["server", "client", "value"]
    value: Any = None


def conflict_state(conflict: Conflict) -> ConflictState:
    """A conflict as the API shows it."""
    return ConflictState(
        id=conflict.pk,
        stream=conflict.stream,
        model=conflict.model,
        pk=conflict.object_pk,
        field=conflict.field,
        base_version=conflict.base_version,
        base_value=conflict.base_value,
        server_version=conflict.server_version,
        server_value=conflict.server_value,
        client_value=conflict.client_value,
        status=conflict.status,  # type: ignore[arg-type]
        resolution=conflict.resolution,
        resolved_value=conflict.resolved_value,
        created_at=encoding.iso(conflict.created_at),
    )


class ConflictListView(SyncAPIView):
    """``GET api/conflicts/?stream=``: the conflicts of a stream, pending first."""

    @extend_schema(
        operation_id="sync_conflicts",
        parameters=[
            OpenApiParameter("stream", str, required=True),
            OpenApiParameter("status", str, enum=["pending", "resolved"]),
            OpenApiParameter("limit", int, description="At most this many (1 to 500; 100)."),
        ],
        responses={200: ConflictList, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        query: ConflictQuery = _query(request, ConflictQuery)
        oplog.validate_stream_name(query.stream)
        permissions.check_read(request.user, query.stream)
        rows = Conflict.objects.filter(stream=query.stream)
        if query.status:
            rows = rows.filter(status=query.status)
        page = list(rows[: query.limit + 1])
        return Response(
            ConflictList(
                conflicts=[conflict_state(c) for c in page[: query.limit]],
                more=len(page) > query.limit,
            )
        )


class ConflictResolveView(SyncAPIView):
    """``POST api/conflicts/<id>/resolve/``: keep the server's value, take the client's,
    or enter another."""

    body_type = ConflictResolution

    @extend_schema(
        operation_id="sync_conflict_resolve",
        request=ConflictResolution,
        responses={
            200: ConflictState,
            **ERRORS,
            (404, PROBLEM): OpenApiResponse(Problem, description="No such conflict or object."),
            (409, PROBLEM): OpenApiResponse(Problem, description="Already resolved."),
        },
    )
    def post(self, request: Request, conflict_id: int) -> Response:
        body: ConflictResolution = self.body(request)
        conflict = resolution.resolve(
            conflict_id, body.resolution, body.value, user=request.user, source="api"
        )
        return Response(conflict_state(conflict))
