"""ASGI middleware for the WebSocket: the Origin check and token authentication."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user_model

from syncapp import tokens
from syncapp.conf import conf

AUTH_ERROR = "syncapp.auth_error"
# The server's own ASGI send, before session middleware wraps it: the consumer reads the
# server's write buffer through it (see consumers.ServerSocket).
SERVER_SEND = "syncapp.server_send"


class SyncOriginValidator(OriginValidator):  # type: ignore[misc]
    """Refuses handshakes (HTTP 403, before accept) whose Origin is missing, ``null`` or
    not allowed: ``SYNCAPP["ALLOWED_ORIGINS"]``, by default the hosts of ALLOWED_HOSTS;
    with ``ALLOWED_HOSTS = ["*"]``, only the site's own origin."""

    def __init__(self, application: Any) -> None:
        super().__init__(application, [])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = _header(scope, b"origin")
        if self.allowed(urlparse(origin) if origin else None, _header(scope, b"host")) or (
            not origin and _has_token(scope)
        ):
            # Browsers always send Origin on a WebSocket handshake: a missing one is a
            # client of another kind, let in only with a ?token=, which then authenticates
            # it instead of any session cookie (docs/security.md).
            return await self.application({**scope, SERVER_SEND: send}, receive, send)
        return await WebsocketDenier()(scope, receive, send)

    @property
    def allowed_origins(self) -> list[str]:
        configured = conf.ALLOWED_ORIGINS
        if configured is not None:
            return list(configured)
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = ["localhost", "127.0.0.1", "[::1]"]
        return hosts

    @allowed_origins.setter
    def allowed_origins(self, value: Any) -> None:
        pass  # computed from settings on each handshake

    def allowed(self, origin: Any, host: str) -> bool:
        """Whether a handshake with this Origin (parsed) to this Host may proceed."""
        # A missing, "null" or host-less Origin is never a site we serve, whatever "*".
        if origin is None or not origin.hostname:
            return False
        if conf.ALLOWED_ORIGINS is None and "*" in self.allowed_origins:
            # ALLOWED_HOSTS = ["*"] accepts any Host, not any site: same origin only.
            return bool(host) and origin.netloc.lower() == host.lower()
        return bool(self.valid_origin(origin))


class TokenAuthMiddleware(BaseMiddleware):  # type: ignore[misc]
    """Authenticates ``?token=`` (from ``api/ws-token/``); a bad token is remembered in
    the scope so that the consumer closes with 4401 instead of acting anonymous."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token = _token(scope)
        if token:
            scope = dict(scope)
            try:
                scope["user"] = await database_sync_to_async(_user)(tokens.user_id(token))
            except tokens.InvalidToken:
                scope[AUTH_ERROR] = "invalid_token"
        return await super().__call__(scope, receive, send)


def _user(user_id: str) -> Any:
    model = get_user_model()
    user = model._default_manager.filter(pk=user_id).first()
    if user is None or not user.is_active:
        raise tokens.InvalidToken("No such active user.")
    return user


def _token(scope: dict[str, Any]) -> str | None:
    """The handshake's ``?token=`` (the last one), if any."""
    query: dict[str, list[str]] = parse_qs(scope.get("query_string", b"").decode("latin1"))
    tokens_given = query.get("token")
    return tokens_given[-1] if tokens_given else None


def _has_token(scope: dict[str, Any]) -> bool:
    return bool(_token(scope))


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin1"))
    return ""
