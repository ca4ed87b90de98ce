"""Ordinary REST endpoints per synced model, writing through the one mutation path.

``GET .../?stream=<name>`` lists a stream's objects of the model, ``GET .../<pk>/`` reads
one, ``POST`` creates, ``PATCH``/``PUT`` update (both with the fields sent), ``DELETE``
deletes. Writes honour ``Idempotency-Key`` (the mutation id), ``If-Match: "<version>"``
(the base version) and ``Sync-Client-Id``/``Sync-Clock`` (for last-writer-wins).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status as http
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from syncapp import mutations, oplog, permissions, registry, writer
from syncapp.api.parsers import MsgspecJSONParser
from syncapp.api.problems import PROBLEM, exception_handler, problem
from syncapp.api.renderers import MsgspecJSONRenderer
from syncapp.api.throttles import ThrottleMixin
from syncapp.api.views import ERRORS, idempotency_key
from syncapp.exceptions import Gone, InvalidInput, MutationRejected, NotFound, http_status
from syncapp.mixins import SyncModel
from syncapp.models import Op
from syncapp.protocol import ErrorInfo, Mutation, MutationResult, ObjectList, ObjectState, Problem
from syncapp.registry import SyncSpec

# Derives the key of an object created without one from its Idempotency-Key, so that
# a retry names the same object and replays instead of creating another.
_PK_NAMESPACE = uuid.UUID("2c3f6c1e-2f0e-4bde-9a7e-6f1b5d0e8a41")


class _Schema(AutoSchema):
    def _is_list_view(self, serializer: Any = None) -> bool:
        return False  # `list` answers {objects: [...]}, not a bare array


class SyncModelViewSet(ThrottleMixin, viewsets.ViewSet):
    """REST for one synced model; :func:`viewset_for` makes one per model."""

    spec: SyncSpec
    parser_classes = [MsgspecJSONParser]
    renderer_classes = [MsgspecJSONRenderer]
    body_type: Any = dict[str, Any]
    lookup_value_regex = "[^/]+"
    schema = _Schema()

    def get_exception_handler(self) -> Any:
        return exception_handler

    def list(self, request: Request) -> Response:
        stream = request.query_params.get("stream")
        if not stream:
            raise InvalidInput("Name the stream to list: ?stream=<name>.", code="invalid")
        oplog.validate_stream_name(stream)
        permissions.check_read(request.user, stream)
        rows = self.spec.model._base_manager.filter(sync_stream=stream).order_by("pk")
        return Response(ObjectList(objects=[writer.object_state(self.spec, o) for o in rows]))

    def retrieve(self, request: Request, pk: str) -> Response:
        instance = self.spec.model._base_manager.filter(pk=self._parse_pk(pk)).first()
        if instance is None:
            raise NotFound()
        permissions.check_read(request.user, instance.sync_stream)
        return self._ok(writer.object_state(self.spec, instance))

    def create(self, request: Request) -> Response:
        fields = self._fields(request)
        key = self._key(request)
        raw_pk = fields.pop("pk", None)
        raw_pk = fields.pop(self._pk_name, raw_pk)
        pk = self.spec.parse_pk(raw_pk) if raw_pk is not None else self._new_pk(key)
        stream = self._replayed_stream(pk, key) or writer.stream_for_create(self.spec, fields)
        result = self._apply(request, key, "create", pk, stream, fields)
        return self._respond(result, created=True)

    def update(self, request: Request, pk: str) -> Response:
        return self.partial_update(request, pk)

    def partial_update(self, request: Request, pk: str) -> Response:
        fields = self._fields(request)
        key = self._key(request)
        value, stream = self._target(pk, key)
        return self._respond(self._apply(request, key, "update", value, stream, fields))

    def destroy(self, request: Request, pk: str) -> Response:
        key = self._key(request)
        value, stream = self._target(pk, key)
        result = self._apply(request, key, "delete", value, stream, {})
        if result.status == "applied":
            return Response(status=http.HTTP_204_NO_CONTENT)
        return self._respond(result)

    @property
    def _pk_name(self) -> str:
        pk_field = self.spec.model._meta.pk
        assert pk_field is not None
        return pk_field.name

    def _parse_pk(self, text: str) -> Any:
        try:
            return self.spec.parse_pk(text)
        except MutationRejected as exc:
            raise NotFound() from exc

    def _key(self, request: Request) -> uuid.UUID | None:
        header = request.headers.get("Idempotency-Key")
        return idempotency_key(header) if header is not None else None

    def _new_pk(self, key: uuid.UUID | None) -> Any:
        pk_field = self.spec.model._meta.pk
        assert pk_field is not None
        if key is not None and pk_field.get_internal_type() == "UUIDField":
            return str(uuid.uuid5(_PK_NAMESPACE, f"{self.spec.label}:{key}"))
        if not pk_field.has_default():
            raise InvalidInput(
                f"Send the new object's {self._pk_name!r}: this model's key has no default.",
                code="invalid",
            )
        return self.spec.pk_value(pk_field.get_default())

    def _replayed_stream(self, pk: Any, key: uuid.UUID | None) -> str | None:
        """The stream of the first attempt of this write, if it is a retry of one that
        changed something: sent again as it was, it replays the stored answer even after
        the object moved or was deleted."""
        if key is None:
            return None
        ops = list(
            Op.objects.filter(
                model=self.spec.label, object_pk=str(pk), mutation_id=key
            ).select_related("stream")
        )
        # A move writes a delete in the mutation's stream and a create in the new one.
        deleted = [op for op in ops if op.kind == Op.Kind.DELETE]
        return (deleted or ops)[0].stream.name if ops else None

    def _target(self, text: str, key: uuid.UUID | None) -> tuple[Any, str]:
        """The pk and stream a write to ``text`` goes to, also when it no longer exists."""
        pk = self._parse_pk(text)
        replayed = self._replayed_stream(pk, key)
        if replayed is not None:
            return pk, replayed
        instance = self.spec.model._base_manager.filter(pk=pk).first()
        if instance is not None:
            return pk, instance.sync_stream
        deleted = Op.objects.filter(model=self.spec.label, object_pk=str(pk), kind=Op.Kind.DELETE)
        if deleted.exists():
            raise Gone()
        raise NotFound()

    def _fields(self, request: Request) -> dict[str, Any]:
        data = request.data
        if not isinstance(data, dict):
            raise InvalidInput("The body must be a JSON object of fields.", code="invalid")
        return dict(data)

    def _apply(
        self,
        request: Request,
        key: uuid.UUID | None,
        op: Any,
        pk: Any,
        stream: str,
        fields: dict[str, Any],
    ) -> MutationResult:
        mutation = Mutation(
            id=key or uuid.uuid4(),
            stream=stream,
            model=self.spec.label,
            pk=self.spec.pk_value(pk),
            op=op,
            fields=fields,
            base_version=_if_match(request.headers.get("If-Match")),
            clock=request.headers.get("Sync-Clock"),
        )
        client_id = request.headers.get("Sync-Client-Id")
        return mutations.apply_one(mutation, user=request.user, client_id=client_id, source="api")

    def _ok(self, state: ObjectState, status: int = 200) -> Response:
        return Response(state, status=status, headers={"ETag": f'"{state.version}"'})

    def _respond(self, result: MutationResult, *, created: bool = False) -> Response:
        if result.status == "applied":
            assert result.object is not None
            return self._ok(result.object, status=201 if created else 200)
        if result.status == "gone":
            raise Gone()
        error = result.error or ErrorInfo(code=result.status, message=result.status)
        if result.status == "conflict":
            return problem(
                409, error.code, error.message, fields=error.fields, object=result.object
            )
        headers = {"Retry-After": "1"} if error.retry else None
        # As DRF answers session users: 403 for an anonymous write (no challenge to offer).
        status = 403 if error.code == "not_authenticated" else http_status(error.code)
        return problem(
            status,
            error.code,
            error.message,
            fields=error.fields,
            headers=headers,
        )


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not re.fullmatch(r"[0-9]{1,19}", text):
        raise InvalidInput('If-Match must be the object\'s version: "<version>".', code="invalid")
    return int(text)


def viewset_for(model: type[SyncModel]) -> type[SyncModelViewSet]:
    """A :class:`SyncModelViewSet` for ``model``, documented with its serializer."""
    spec = registry.spec_for(model)

    def described(status: int, text: str) -> tuple[tuple[int, str], OpenApiResponse]:
        return (status, PROBLEM), OpenApiResponse(Problem, description=text)

    missing = dict([described(404, "No such object.")])
    errors = dict(
        [
            described(400, "Malformed or invalid input."),
            described(403, "Not allowed."),
            described(404, "No such object."),
            described(409, "Conflict (`object` is the current state), or in progress."),
            described(410, "The object was deleted."),
            described(413, "Body too large."),
            described(422, "Idempotency-Key reused for another payload."),
            described(503, "The server failed; retry with the same Idempotency-Key."),
        ]
    )
    write_headers = [
        OpenApiParameter("Idempotency-Key", OpenApiTypes.UUID, OpenApiParameter.HEADER),
        OpenApiParameter("If-Match", str, OpenApiParameter.HEADER, description='"<version>"'),
        OpenApiParameter("Sync-Client-Id", str, OpenApiParameter.HEADER),
        OpenApiParameter("Sync-Clock", str, OpenApiParameter.HEADER),
    ]
    app, name = spec.label.split(".")

    def doc(action: str, **kwargs: Any) -> Any:
        return extend_schema(
            operation_id=f"sync_{app}_{name}_{action}", tags=[spec.label], **kwargs
        )

    cls = type(
        f"{model.__name__}SyncViewSet",
        (SyncModelViewSet,),
        {"spec": spec, "__doc__": f"REST for {spec.label}, through the mutation path."},
    )
    body = spec.serializer_class
    return extend_schema_view(
        list=doc(
            "list",
            parameters=[OpenApiParameter("stream", str, required=True)],
            responses={200: ObjectList, **ERRORS},
        ),
        retrieve=doc("retrieve", responses={200: ObjectState, **ERRORS, **missing}),
        create=doc(
            "create", request=body, parameters=write_headers, responses={201: ObjectState, **errors}
        ),
        update=doc(
            "update", request=body, parameters=write_headers, responses={200: ObjectState, **errors}
        ),
        partial_update=doc(
            "partial_update",
            request=body,
            parameters=write_headers,
            responses={200: ObjectState, **errors},
        ),
        destroy=doc("destroy", parameters=write_headers, responses={204: None, **errors}),
    )(cls)
