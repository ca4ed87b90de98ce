"""DRF throttles over syncapp's per-user buckets (:mod:`syncapp.limits`).

They draw from the same buckets as the WebSocket's frames, so a user's tabs, devices and
transports share one budget, in every process when there is Redis. A refusal is a 429
problem with ``code: "rate_limited"`` and a ``Retry-After`` header.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from syncapp import limits


class RateLimited(exceptions.Throttled):
    """A 429 whose code says what the WebSocket's ``error`` frames say."""

    default_code = "rate_limited"

    def __init__(self, wait: float | None = None) -> None:
        super().__init__(math.ceil(wait) if wait else None, detail="Too many requests.")


class UserThrottle(BaseThrottle):
    """One of the per-user buckets; ``kind`` names it."""

    kind = "read"

    def __init__(self) -> None:
        self.waited = 0.0

    def allow_request(self, request: Request, view: Any) -> bool:
        ident = limits.identity(getattr(request, "user", None), client_address(request))
        self.waited = limits.take(self.kind, ident)
        return not self.waited

    def wait(self) -> float | None:
        return self.waited or None


def client_address(request: Request) -> str | None:
    """The address an anonymous client's budget is keyed by: ``REMOTE_ADDR``, the same
    address the WebSocket uses (``scope["client"]``). DRF's ``get_ident()`` would take
    the client's own X-Forwarded-For header unless ``NUM_PROXIES`` is set, so a client
    could pick a fresh budget per request or spend someone else's; it is used only when
    the project says how many proxies to trust. Behind a proxy, run the server with its
    proxy-headers option (docs/security.md)."""
    from rest_framework.settings import api_settings

    if api_settings.NUM_PROXIES is not None:
        return BaseThrottle().get_ident(request)
    address = request.META.get("REMOTE_ADDR")
    return str(address)[:64] if address else None


class MutationThrottle(UserThrottle):
    """Mutation requests: the ``mutate`` bucket (``USER_MUTATION_RATE``)."""

    kind = "mutate"


class ReadThrottle(UserThrottle):
    """Snapshot, ops and long-poll requests, SSE opens: the ``read`` bucket."""

    kind = "read"


class ThrottleMixin:
    """For syncapp's views: the project's DRF throttles, then the user's ``read`` bucket
    for safe methods and ``mutate`` bucket for the others; a refusal is a 429
    ``rate_limited`` problem with Retry-After."""

    def get_throttles(self) -> list[BaseThrottle]:
        request = getattr(self, "request", None)
        method = getattr(request, "method", "GET") or "GET"
        mine = ReadThrottle() if method.upper() in SAFE_METHODS else MutationThrottle()
        return [*super().get_throttles(), mine]  # type: ignore[misc]

    def throttled(self, request: Request, wait: float) -> NoReturn:
        raise RateLimited(wait)
