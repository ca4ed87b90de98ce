"""System checks: misconfiguration becomes an error or warning with a stable id.

docs/configuration.md lists every id with its fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import models, router
from django.utils.module_loading import import_string

from syncapp import registry
from syncapp.conf import DEFAULTS, conf, unknown_keys

IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"
HANDLED_ON_DELETE = (models.CASCADE, models.PROTECT, models.RESTRICT, models.DO_NOTHING)


@checks.register(checks.Tags.compatibility)
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Required apps, the SYNCAPP dict, time zones, databases, channel layers, hosts."""
    errors: list[checks.CheckMessage] = []
    for app in ("django.contrib.auth", "django.contrib.contenttypes"):
        if app not in settings.INSTALLED_APPS:
            errors.append(
                checks.Error(
                    f"syncapp needs {app} in INSTALLED_APPS.",
                    hint="Ops and conflicts refer to the user model.",
                    id="syncapp.E001",
                )
            )
    try:
        for key in DEFAULTS:
            getattr(conf, key)
        conf.import_setting("PERMISSION_CLASS")
    except ImproperlyConfigured as exc:
        errors.append(checks.Error(str(exc), id="syncapp.E007"))
        if not isinstance(getattr(settings, "SYNCAPP", {}), dict):
            return errors
    for key in unknown_keys():
        errors.append(
            checks.Warning(
                f"SYNCAPP has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="syncapp.W001",
            )
        )
    errors.extend(_check_channel_layer())
    for alias, db in settings.DATABASES.items():
        db_settings: dict[str, Any] = dict(db)
        if db_settings.get("ENGINE") == "django.db.backends.sqlite3":
            mode = (db_settings.get("OPTIONS") or {}).get("transaction_mode")
            if mode != "IMMEDIATE":
                errors.append(
                    checks.Warning(
                        f"The SQLite database {alias!r} does not use IMMEDIATE transactions.",
                        hint='Set DATABASES[...]["OPTIONS"]["transaction_mode"] = "IMMEDIATE" so '
                        "concurrent writers queue instead of failing with 'database is locked'.",
                        id="syncapp.W003",
                    )
                )
    if "*" in settings.ALLOWED_HOSTS and not settings.DEBUG:
        errors.append(
            checks.Warning(
                'ALLOWED_HOSTS contains "*", so the WebSocket Origin check accepts any site.',
                hint="List your hosts: cross-site WebSocket hijacking is checked against them.",
                id="syncapp.W004",
            )
        )
    errors.extend(_check_sse())
    if not settings.USE_TZ:
        errors.append(
            checks.Warning(
                "USE_TZ is False: op timestamps are meant to be UTC.",
                hint="Set USE_TZ = True.",
                id="syncapp.W006",
            )
        )
    return errors


def _check_channel_layer() -> list[checks.CheckMessage]:
    alias = conf.CHANNEL_LAYER
    if alias is None:
        return []
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    layer = layers.get(alias)
    if layer is None:
        return [
            checks.Warning(
                f"No channel layer {alias!r} in CHANNEL_LAYERS: ops are logged, not pushed live.",
                hint='Add CHANNEL_LAYERS, or set SYNCAPP["CHANNEL_LAYER"] = None to silence this.',
                id="syncapp.W005",
            )
        ]
    if layer.get("BACKEND") == IN_MEMORY_LAYER:
        reasons = _multi_process_signs()
        if reasons:
            return [
                checks.Warning(
                    "The in-memory channel layer only reaches clients of its own process, "
                    f"but {' and '.join(reasons)}, as deployments with several processes have.",
                    hint="Use channels_redis (docs/deployment.md), or silence syncapp.W002 "
                    "if this really runs as one process.",
                    id="syncapp.W002",
                )
            ]
    if layer.get("BACKEND") == REDIS_LAYER and _redis_major() >= 8:
        hosts = (layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
        short = [h for h in hosts if not _waits_past_brpop(h)]
        if short:
            return [
                checks.Warning(
                    "redis-py 8 times out a socket after 5 s, as long as RedisChannelLayer's "
                    "blocking receive waits: on a quiet layer every receive fails, and "
                    "hand-written consumers on this layer crash with TimeoutError every 5 s.",
                    hint='Give each host a longer read timeout, e.g. {"address": '
                    '"redis://...", "socket_timeout": 10} (docs/deployment.md).',
                    id="syncapp.W008",
                )
            ]
    return []


REDIS_LAYER = "channels_redis.core.RedisChannelLayer"


def _redis_major() -> int:
    try:
        from redis import __version__
    except ImportError:
        return 0
    head = __version__.split(".")[0]
    return int(head) if head.isdigit() else 0


def _waits_past_brpop(host: Any) -> bool:
    """Whether a channels_redis host entry reads for longer than its 5 s blocking pop
    (``socket_timeout`` in the host dict, or in its URL's query)."""
    if isinstance(host, dict):
        if "socket_timeout" in host:
            timeout = host["socket_timeout"]
            return timeout is None or (isinstance(timeout, int | float) and timeout > 5)
        host = host.get("address")
    if not isinstance(host, str):
        return False
    from urllib.parse import parse_qs, urlsplit

    values = parse_qs(urlsplit(host).query).get("socket_timeout")
    try:
        return values is not None and float(values[-1]) > 5
    except ValueError:
        return False


SHARED_CACHES = ("redis", "memcache", "db.DatabaseCache")


def _multi_process_signs() -> list[str]:
    """Settings that suggest several server processes."""
    signs = []
    if not settings.DEBUG:
        signs.append("DEBUG is off")
    engines = {str(db.get("ENGINE", "")) for db in settings.DATABASES.values()}
    if any("sqlite" not in engine for engine in engines):
        signs.append("the database is a server")
    caches = getattr(settings, "CACHES", {}) or {}
    if any(
        any(kind in str(cache.get("BACKEND", "")) for kind in SHARED_CACHES)
        for cache in caches.values()
    ):
        signs.append("the cache is shared")
    return signs


@checks.register(checks.Tags.models)
def check_models(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Every synced model: a stream, a valid declaration, capturing managers, one database."""
    from syncapp.mixins import SyncModel, SyncQuerySet
    from syncapp.models import Op

    errors: list[checks.CheckMessage] = []
    if app_configs is None:
        candidates: list[type[models.Model]] = list(registry.synced_models())
    else:
        candidates = [m for app in app_configs for m in app.get_models() if registry.is_synced(m)]
    for model in candidates:
        label = model._meta.label
        if model.get_sync_stream is SyncModel.get_sync_stream:  # type: ignore[attr-defined]
            errors.append(
                checks.Error(
                    f"{label} does not say which stream its objects belong to.",
                    hint="Implement get_sync_stream(self) -> str.",
                    obj=model,
                    id="syncapp.E002",
                )
            )
        try:
            registry.build_spec(model)  # type: ignore[arg-type]
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), obj=model, id="syncapp.E003"))
        for kind, manager in (("default", model._default_manager), ("base", model._base_manager)):
            queryset_class = getattr(manager, "_queryset_class", None)
            if not (isinstance(queryset_class, type) and issubclass(queryset_class, SyncQuerySet)):
                errors.append(
                    checks.Error(
                        f"The {kind} manager of {label} does not use SyncQuerySet, so its "
                        "update() and bulk writes would not be recorded.",
                        hint="Build custom managers with SyncManager or "
                        "Manager.from_queryset(<a SyncQuerySet subclass>).",
                        obj=model,
                        id="syncapp.E004",
                    )
                )
        for field in model._meta.concrete_fields:
            on_delete = getattr(getattr(field, "remote_field", None), "on_delete", None)
            # Django runs lazy handlers (SET_NULL, SET(<constant>)) as QuerySet.update() on
            # the base manager, which records ops; the others (SET_DEFAULT, SET(<callable>))
            # become raw UPDATEs.
            if (
                on_delete is not None
                and on_delete not in HANDLED_ON_DELETE
                and not getattr(on_delete, "lazy_sub_objs", False)
            ):
                errors.append(
                    checks.Error(
                        f"{label}.{field.name} uses on_delete={_name(on_delete)}, which Django "
                        "applies with raw SQL updates that syncapp cannot record.",
                        hint="Use CASCADE, SET_NULL, SET(<a constant>), PROTECT or RESTRICT.",
                        obj=field,
                        id="syncapp.E005",
                    )
                )
        if router.db_for_write(model) != router.db_for_write(Op):
            errors.append(
                checks.Error(
                    f"{label} and syncapp's op log are routed to different databases, so a "
                    "change and its op cannot commit together.",
                    obj=model,
                    id="syncapp.E006",
                )
            )
    return errors


def _name(on_delete: Any) -> str:
    if hasattr(on_delete, "deconstruct"):
        return "SET(<callable>)"
    return str(getattr(on_delete, "__name__", on_delete))


SSE_SETTINGS = {
    "EVENTSTREAM_STORAGE_CLASS": "syncapp.sse.OpLogStorage",
    "EVENTSTREAM_CHANNELMANAGER_CLASS": "syncapp.sse.ChannelManager",
}


def _check_sse() -> list[checks.CheckMessage]:
    """The SSE endpoint needs django-eventstream pointed at the op log and the hook; a
    cross-origin SSE client needs Last-Event-ID allowed."""
    found: list[checks.CheckMessage] = []
    for name, expected in SSE_SETTINGS.items():
        value = getattr(settings, name, None)
        try:
            ok = value is not None and issubclass(import_string(value), import_string(expected))
        except ImportError:
            ok = False
        if not ok:
            found.append(
                checks.Error(
                    f"{name} is {value!r}: syncapp's SSE endpoint needs {expected!r} (or a "
                    "subclass) to replay from the op log and ask the permission hook.",
                    hint=f'Set {name} = "{expected}".',
                    id="syncapp.E008",
                )
            )
    cross_origin = getattr(settings, "EVENTSTREAM_ALLOW_ORIGIN", None) or getattr(
        settings, "EVENTSTREAM_ALLOW_ORIGINS", None
    )
    allowed = str(getattr(settings, "EVENTSTREAM_ALLOW_HEADERS", "") or "").lower()
    if cross_origin and "last-event-id" not in allowed:
        found.append(
            checks.Warning(
                "EVENTSTREAM_ALLOW_ORIGIN(S) is set but EVENTSTREAM_ALLOW_HEADERS does not "
                "allow Last-Event-ID, so cross-origin SSE clients cannot resume.",
                hint='Set EVENTSTREAM_ALLOW_HEADERS = "Last-Event-ID".',
                id="syncapp.W007",
            )
        )
    if apps.is_installed("corsheaders"):
        headers = [h.lower() for h in getattr(settings, "CORS_ALLOW_HEADERS", ()) or ()]
        if headers and "last-event-id" not in headers:
            found.append(
                checks.Warning(
                    "django-cors-headers is installed but CORS_ALLOW_HEADERS does not allow "
                    "Last-Event-ID, so cross-origin SSE clients cannot resume.",
                    hint='Add "last-event-id" to CORS_ALLOW_HEADERS.',
                    id="syncapp.W007",
                )
            )
    return found
