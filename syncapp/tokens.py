"""Short-lived signed tokens that authenticate a WebSocket without cookies."""

from __future__ import annotations

from typing import Any

from django.core import signing

from syncapp.conf import conf

SALT = "syncapp.ws-token"


class InvalidToken(Exception):
    """The token is malformed, forged or expired."""


def issue(user: Any) -> str:
    """A token for ``user``, valid for ``SYNCAPP["TOKEN_TTL"]``."""
    return signing.dumps({"u": str(user.pk)}, salt=SALT, compress=True)


def user_id(token: str) -> str:
    """The user id a valid token carries; :class:`InvalidToken` otherwise."""
    try:
        data = signing.loads(token, salt=SALT, max_age=conf.TOKEN_TTL)
    except signing.BadSignature as exc:  # SignatureExpired is one too
        raise InvalidToken(str(exc)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("u"), str):
        raise InvalidToken("Malformed token.")
    return str(data["u"])
