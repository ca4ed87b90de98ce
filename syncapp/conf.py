"""syncapp's settings: one ``SYNCAPP`` dict, read lazily, with documented defaults.

Nothing is read at import time. A value is read and checked on first use, then kept
until ``SYNCAPP`` changes (Django's ``setting_changed``, which ``override_settings`` and
pytest-django's ``settings`` fixture send), as DRF's ``api_settings`` does: the fan-out
reads some of them once per delivery. ``docs/configuration.md`` describes each key.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # Who may read a stream and write an object (a dotted path to a BasePermission).
    "PERMISSION_CLASS": "syncapp.permissions.IsAuthenticated",
    # Largest HTTP body, in bytes, the API accepts (413 past it).
    "MAX_BODY_BYTES": 1024 * 1024,
    # Most mutations one request or frame may carry.
    "MAX_BATCH": 100,
    # Idempotency records are kept at least this long, then expired by
    # ``manage.py syncapp_expire_idempotency``.
    "IDEMPOTENCY_TTL": timedelta(hours=24),
    # A mutation still "in progress" after this long is taken to have died with its
    # process, and a retry may run it.
    "IDEMPOTENCY_LEASE": timedelta(seconds=30),
    # A client clock more than this far ahead of server time is clamped to it.
    "MAX_CLOCK_SKEW": timedelta(minutes=1),
    # The node id the server's own clock stamps carry (lww ties go to the greater id).
    "SERVER_NODE_ID": "~server",
    # Retention of the op log, applied by ``manage.py syncapp_trim``: ops older than
    # MAX_AGE, and ops beyond the newest MAX_OPS of a stream, are trimmed. None keeps all.
    "RETENTION_MAX_AGE": timedelta(days=30),
    "RETENTION_MAX_OPS": None,
    # Default and largest ``limit`` of the ops endpoint.
    "OPS_PAGE_SIZE": 100,
    "OPS_PAGE_MAX": 1000,
    # The channel layer alias that broadcasts use; None turns broadcasting off.
    "CHANNEL_LAYER": "default",
    # Register a REST viewset for every synced model under ``api/models/<label>/``.
    "MODEL_VIEWSETS": True,
    # WebSocket: clients ping this often; silence for this many intervals closes (4408).
    "HEARTBEAT_MS": 25_000,
    "HEARTBEAT_TIMEOUT_INTERVALS": 3,
    # Largest WebSocket text frame, in bytes (1009 past it).
    "MAX_FRAME_BYTES": 512 * 1024,
    "MAX_SUBSCRIPTIONS": 100,
    # mutate frames per second per connection, and the burst allowed above that rate.
    "MUTATION_RATE": 50,
    "MUTATION_BURST": 100,
    # Per user (an authenticated user, or an anonymous client's address), shared by all
    # of the user's connections and requests, across processes when there is Redis
    # (docs/security.md): mutate frames and mutation requests...
    "USER_MUTATION_RATE": 100,
    "USER_MUTATION_BURST": 200,
    # ...subscribe frames, snapshot, ops and long-poll requests, SSE opens...
    "USER_READ_RATE": 50,
    "USER_READ_BURST": 200,
    # ...and presence frames, per second and in a burst. A rate of None turns it off.
    "USER_PRESENCE_RATE": 120,
    "USER_PRESENCE_BURST": 240,
    # WebSocket connections per process and per user (across processes with Redis);
    # a handshake past a cap is refused (HTTP 429/503 or close 4429). None: no cap.
    "MAX_CONNECTIONS": 10_000,
    "MAX_USER_CONNECTIONS": 50,
    # Frames of one connection the server may hold unread (daphne queues them without
    # limit); past this, the server stops reading from the client until half are served.
    "INBOUND_FRAMES": 256,
    # A connection closes (4503, "resume") once more than this waits to be sent to it.
    "OUTBOX_BYTES": 4 * 1024 * 1024,
    # Origins allowed to open WebSockets; None: the hosts of ALLOWED_HOSTS.
    "ALLOWED_ORIGINS": None,
    # Lifetime of the connection tokens issued by api/ws-token/.
    "TOKEN_TTL": timedelta(seconds=60),
    # Presence: members not renewed for this long are gone (a process that died).
    "PRESENCE_TTL": timedelta(seconds=15),
    # A member's state is announced at most this often per second (latest wins)...
    "PRESENCE_RATE": 10,
    # ...and a connection may send at most this many presence frames per second
    # (bursts of PRESENCE_BURST) before they are refused.
    "PRESENCE_MAX_RATE": 60,
    "PRESENCE_BURST": 120,
    # Largest presence state, in bytes of JSON.
    "PRESENCE_MAX_BYTES": 1024,
    # Redis for presence across processes; None: the channels_redis layer's first host,
    # or this process's memory without one.
    "PRESENCE_REDIS": None,
    # What others see of a member's user: a dotted path to a function of the user.
    "PRESENCE_USER": "syncapp.presence.public_user",
    # django-eventstream storage for channels that are not syncapp's (a dotted path).
    "SSE_FALLBACK_STORAGE": None,
    # Longest `wait` the ops endpoint accepts (long-poll).
    "LONG_POLL_MAX_WAIT": timedelta(seconds=30),
    # Recent ops each process keeps per followed stream, to resume without the database.
    "RING_SIZE": 1000,
    # How often each process renews its channel-layer group memberships (they expire).
    "GROUP_REFRESH": timedelta(hours=1),
    # How often each process checks that group messages still arrive and that the streams
    # it follows have no op it missed (a dropped last message has no successor to reveal
    # the gap).
    "CHECK_INTERVAL": timedelta(seconds=5),
}

_DURATIONS = {
    "IDEMPOTENCY_TTL",
    "IDEMPOTENCY_LEASE",
    "MAX_CLOCK_SKEW",
    "RETENTION_MAX_AGE",
    "TOKEN_TTL",
    "LONG_POLL_MAX_WAIT",
    "GROUP_REFRESH",
    "CHECK_INTERVAL",
    "PRESENCE_TTL",
}
_POSITIVE_INTS = {
    "MAX_BODY_BYTES",
    "MAX_BATCH",
    "OPS_PAGE_SIZE",
    "OPS_PAGE_MAX",
    "HEARTBEAT_MS",
    "HEARTBEAT_TIMEOUT_INTERVALS",
    "MAX_FRAME_BYTES",
    "MAX_SUBSCRIPTIONS",
    "MUTATION_RATE",
    "MUTATION_BURST",
    "OUTBOX_BYTES",
    "RING_SIZE",
    "PRESENCE_RATE",
    "PRESENCE_MAX_RATE",
    "PRESENCE_BURST",
    "PRESENCE_MAX_BYTES",
    "USER_MUTATION_BURST",
    "INBOUND_FRAMES",
    "USER_READ_BURST",
    "USER_PRESENCE_BURST",
}
# Positive ints, or None to turn the limit off.
_OPTIONAL_INTS = {
    "RETENTION_MAX_OPS",
    "USER_MUTATION_RATE",
    "USER_READ_RATE",
    "USER_PRESENCE_RATE",
    "MAX_CONNECTIONS",
    "MAX_USER_CONNECTIONS",
}


class Settings:
    """Attribute access to ``settings.SYNCAPP`` with defaults, e.g. ``conf.MAX_BATCH``."""

    def reload(self) -> None:
        """Forget the values read so far (``SYNCAPP`` changed)."""
        for name in DEFAULTS:
            self.__dict__.pop(name, None)

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "SYNCAPP", {})
        if not isinstance(value, dict):
            raise ImproperlyConfigured("settings.SYNCAPP must be a dict.")
        return value

    def __getattr__(self, name: str) -> Any:
        # Only called for a name not read yet: once read, the value is an attribute.
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown syncapp setting {name!r}.")
        value = _coerce(name, self.user_settings.get(name, DEFAULTS[name]))
        self.__dict__[name] = value
        return value

    def import_setting(self, name: str) -> Any:
        """Import the object a dotted-path setting names, with an error naming the setting."""
        path = getattr(self, name)
        if not isinstance(path, str):
            raise ImproperlyConfigured(
                f"SYNCAPP[{name!r}] must be a dotted path string, not {path!r}."
            )
        try:
            return import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"SYNCAPP[{name!r}] = {path!r} could not be imported: {exc}"
            ) from exc


def _coerce(name: str, value: Any) -> Any:
    if name in _DURATIONS:
        if value is None and name == "RETENTION_MAX_AGE":
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = timedelta(seconds=value)
        if not isinstance(value, timedelta) or value < timedelta(0):
            raise ImproperlyConfigured(
                f"SYNCAPP[{name!r}] must be a timedelta or a number of seconds >= 0, not {value!r}."
            )
    elif (name in _POSITIVE_INTS or (name in _OPTIONAL_INTS and value is not None)) and (
        not isinstance(value, int) or isinstance(value, bool) or value < 1
    ):
        raise ImproperlyConfigured(f"SYNCAPP[{name!r}] must be a positive int, not {value!r}.")
    return value


def unknown_keys() -> list[str]:
    """Keys of ``settings.SYNCAPP`` that syncapp does not know (likely typos)."""
    return sorted(set(conf.user_settings) - set(DEFAULTS))


conf = Settings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "SYNCAPP":
        conf.reload()


setting_changed.connect(_reload, dispatch_uid="syncapp.conf.reload")
