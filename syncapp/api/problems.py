"""Errors over HTTP as problem details (RFC 9457), each with a stable ``code``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

from syncapp.exceptions import NotAuthenticated, ResetRequired, SyncError, flatten_errors

PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    fields: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if fields:
        body["fields"] = fields
    body.update(extra)
    return Response(body, status=status, headers=headers, content_type=PROBLEM)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's ``EXCEPTION_HANDLER`` for syncapp's views; unknown exceptions propagate."""
    if isinstance(exc, ResetRequired):
        return _reset(exc)
    view = context.get("view")
    if isinstance(exc, NotAuthenticated):
        # As DRF does: 401 only with a WWW-Authenticate challenge to offer, else 403.
        header = view.get_authenticate_header(context["request"]) if view is not None else None
        status, headers = (401, {"WWW-Authenticate": header}) if header else (403, None)
        return problem(status, exc.error_code, exc.message, headers=headers)
    if isinstance(exc, SyncError):
        return problem(exc.http_status, exc.error_code, exc.message, fields=exc.fields)
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    if not isinstance(exc, drf.APIException):
        return None
    extra_headers: dict[str, str] = {}
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed) and view is not None:
        header = view.get_authenticate_header(context["request"])
        if header:
            extra_headers["WWW-Authenticate"] = header
    wait = getattr(exc, "wait", None)
    if isinstance(exc, drf.Throttled) and wait is not None:
        extra_headers["Retry-After"] = str(int(wait))
    fields = flatten_errors(exc.detail) if isinstance(exc.detail, dict) else None
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else "invalid"
    if isinstance(exc, drf.PermissionDenied) and str(exc.detail).startswith("CSRF Failed"):
        code = "csrf_failed"  # so a client can tell a missing token from the permission hook
    detail = "Validation failed." if fields else str(exc.detail)
    return problem(exc.status_code, code, detail, fields=fields, headers=extra_headers or None)


def _reset(exc: ResetRequired) -> Response:
    body = {
        **exc.as_frame(),
        "title": "Conflict",
        "status": 409,
        "detail": exc.message,
        "code": exc.code,
    }
    return Response(body, status=409, content_type=PROBLEM)
