"""The permission hook: who may read a stream, who may write an object.

Every read (subscribe, replay, snapshot, long-poll, SSE, presence) asks
:func:`check_read`; every mutation asks :func:`check_write`. Set your own class with
``SYNCAPP["PERMISSION_CLASS"]``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist

from syncapp.conf import conf
from syncapp.exceptions import NotAuthenticated, PermissionDenied

if TYPE_CHECKING:
    from syncapp.mixins import SyncModel
    from syncapp.protocol import Mutation


class BasePermission:
    """Override the two hooks. Objects of one stream share its readers (fan-out needs it)."""

    def can_read(self, user: Any, stream: str) -> bool:
        """May ``user`` read every object and op of ``stream``?"""
        return True

    def can_write(
        self, user: Any, stream: str, instance: SyncModel | None, mutation: Mutation
    ) -> bool:
        """May ``user`` apply ``mutation`` to ``instance`` (None when it does not exist yet)?"""
        return True


class AllowAny(BasePermission):
    """Anyone may read and write. For demos and tests only."""


class IsAuthenticated(BasePermission):
    """Authenticated users may read and write everything; the default."""

    def can_read(self, user: Any, stream: str) -> bool:
        return bool(user is not None and user.is_authenticated)

    def can_write(
        self, user: Any, stream: str, instance: SyncModel | None, mutation: Mutation
    ) -> bool:
        return bool(user is not None and user.is_authenticated)


@lru_cache(maxsize=4)
def _instance(path: str) -> BasePermission:
    cls = conf.import_setting("PERMISSION_CLASS")
    return cls()  # type: ignore[no-any-return]


def get_permission() -> BasePermission:
    """The configured permission object."""
    return _instance(conf.PERMISSION_CLASS)


def _deny(user: Any, message: str) -> PermissionDenied | NotAuthenticated:
    if user is None or not user.is_authenticated:
        return NotAuthenticated()
    return PermissionDenied(message)


def check_read(user: Any, stream: str) -> None:
    """Raise unless ``user`` may read ``stream``."""
    if not get_permission().can_read(user, stream):
        raise _deny(user, f"You may not read {stream}.")


def check_write(user: Any, stream: str, instance: SyncModel | None, mutation: Mutation) -> None:
    """Raise unless ``user`` may read ``stream`` and apply ``mutation`` there."""
    permission = get_permission()
    if not permission.can_read(user, stream) or not permission.can_write(
        user, stream, instance, mutation
    ):
        raise _deny(user, f"You may not change this object in {stream}.")


def can_still_read(user: Any, stream: str) -> bool:
    """Whether ``user``, reloaded from the database, may still read ``stream``: after a
    revocation, the user object a connection holds may be stale."""
    if user is not None and user.is_authenticated and hasattr(user, "refresh_from_db"):
        try:
            user.refresh_from_db()
        except ObjectDoesNotExist:
            return False
    return may_read(user, stream)


def may_read(user: Any, stream: str) -> bool:
    """Whether ``user``, as just loaded from the database, may read ``stream``: an inactive
    user is nobody (as Django's ModelBackend), otherwise the permission hook decides."""
    if user is not None and user.is_authenticated and not getattr(user, "is_active", True):
        return False
    return get_permission().can_read(user, stream)


def revoke(user: Any, stream: str | None = None) -> None:
    """End ``user``'s live reads of ``stream`` (of every stream when None) wherever the
    permission hook now says no: WebSocket subscriptions, SSE streams and waiting
    long-polls, on every process, within seconds. Call it after changing what the hook
    answers; inside a transaction it waits for the commit. From async code, wrap it in
    ``sync_to_async``."""
    from django.db import transaction

    from syncapp.hub import announce_revocation, user_key

    user_id = user_key(user) if hasattr(user, "pk") else str(user)
    transaction.on_commit(lambda: announce_revocation(user_id, stream))
