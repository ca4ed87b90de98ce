"""Settings of the mutation and SSE-replay benchmarks (``benchmarks.mutations``,
``benchmarks.sse_replay``): the benchmark settings (``benchmarks.settings``: ``BENCH_DB``,
``BENCH_SQLITE_PATH``, ``BENCH_PG_NAME``), plus django-eventstream as an app of its own so
that its database storage (``django_eventstream.Event``) is there to compare against.

- ``BENCH_EVENTSTREAM_STORAGE``: ``oplog`` (default; syncapp's ``OpLogStorage`` and
  ``ChannelManager``, as docs/quickstart.md sets them up) or ``model``
  (django-eventstream's own ``DjangoModelStorage`` and ``DefaultChannelManager``, as its
  README sets them up).

- ``BENCH_PG_POOL``: ``1`` (the mutation benchmark's default) gives PostgreSQL Django's
  connection pool (``OPTIONS["pool"]``, needs ``psycopg-pool``), as Django advises under
  ASGI instead of persistent connections; unset, every frame and request opens a
  connection of its own (Django's default, ``CONN_MAX_AGE = 0``).

URLs: the test project's (syncapp under ``/sync/``) and django-eventstream's own view at
``/events/<channel>/``. They are built on first use (``__getattr__``), not when the
settings load, since syncapp's URLs read the settings.
"""

import os
from typing import Any

from benchmarks import settings as bench
from tests import settings as base

globals().update({name: getattr(bench, name) for name in dir(bench) if name.isupper()})

if os.environ.get("BENCH_PG_POOL") == "1" and bench.DB == "postgresql":
    DATABASES = {
        alias: {**settings, "OPTIONS": {**settings.get("OPTIONS", {}), "pool": True}}
        for alias, settings in bench.DATABASES.items()
    }

INSTALLED_APPS = [*base.INSTALLED_APPS, "django_eventstream"]
ROOT_URLCONF = "benchmarks.mut_settings"

STORAGE = os.environ.get("BENCH_EVENTSTREAM_STORAGE", "oplog")
if STORAGE == "oplog":
    EVENTSTREAM_STORAGE_CLASS = "syncapp.sse.OpLogStorage"
    EVENTSTREAM_CHANNELMANAGER_CLASS = "syncapp.sse.ChannelManager"
elif STORAGE == "model":
    EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"
    EVENTSTREAM_CHANNELMANAGER_CLASS = "django_eventstream.channelmanager.DefaultChannelManager"
else:
    raise RuntimeError(f"BENCH_EVENTSTREAM_STORAGE must be oplog or model, not {STORAGE!r}")


def __getattr__(name: str) -> Any:
    if name == "urlpatterns":
        from django.urls import path
        from django_eventstream.views import events

        from tests.urls import urlpatterns as test_urls

        def channel_events(request: Any, channel: str) -> Any:
            return events(request, channels=[channel])

        return [*test_urls, path("events/<str:channel>/", channel_events)]
    raise AttributeError(name)
