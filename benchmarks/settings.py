"""The benchmark servers' Django settings: the test project (``tests.settings``), quiet.

- ``BENCH_DB``: ``sqlite`` (default; the file ``BENCH_SQLITE_PATH``) or ``postgresql``
  (the database ``BENCH_PG_NAME`` on ``SYNCAPP_TEST_PG_*``, which the harness creates and
  drops).
- ``BENCH_LAYER``: ``memory`` (default, the in-memory channel layer), ``redis``
  (``RedisChannelLayer`` on ``BENCH_REDIS_URL``, default redis://127.0.0.1:6379/0) or
  ``redis-pubsub`` (``RedisPubSubChannelLayer`` on the same).

Anyone may read and write (``benchmarks.permissions.Open``), and the per-connection
mutation rate limit, the per-user limits and the connection caps are lifted, so that a
single writer connection can burst and thousands of clients of one address connect.
"""

import os
import tempfile
from typing import Any

from tests import settings as base

globals().update({name: getattr(base, name) for name in dir(base) if name.isupper()})

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "benchmarks.asgi.application"

DB = os.environ.get("BENCH_DB", "sqlite")
DATABASES: dict[str, dict[str, Any]]
if DB == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "syncapp_bench"),
            "USER": os.environ.get("SYNCAPP_TEST_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("SYNCAPP_TEST_PG_PASSWORD", ""),
            "HOST": os.environ.get("SYNCAPP_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("SYNCAPP_TEST_PG_PORT", "5432"),
        }
    }
elif DB == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(
                "BENCH_SQLITE_PATH", os.path.join(tempfile.gettempdir(), "syncapp-bench.sqlite3")
            ),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                # WAL without an fsync per commit: what a production SQLite site sets, and
                # the writes are not what these benchmarks measure.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
else:
    raise RuntimeError(f"BENCH_DB must be sqlite or postgresql, not {DB!r}")

LAYER = os.environ.get("BENCH_LAYER", "memory")
CHANNEL_LAYERS: dict[str, dict[str, Any]]
if LAYER == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                        "socket_timeout": 10,
                        # redis-py 8's async pool refuses past its limit ("Too many
                        # connections") when hundreds of consumers group_add at once.
                        "max_connections": 2000,
                    }
                ],
                "capacity": 10_000,
                "expiry": 60,
            },
        }
    }
elif LAYER == "redis-pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")]},
        }
    }
elif LAYER == "memory":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10_000},
        }
    }
else:
    raise RuntimeError(f"BENCH_LAYER must be memory, redis or redis-pubsub, not {LAYER!r}")

SYNCAPP: dict[str, Any] = {
    **base.SYNCAPP,
    "PERMISSION_CLASS": "benchmarks.permissions.Open",
    "MUTATION_RATE": 1_000_000,
    "MUTATION_BURST": 1_000_000,
    # Every benchmark client is the same anonymous user on one address: no per-user
    # limits or connection caps (docs/security.md).
    "USER_MUTATION_RATE": None,
    "USER_READ_RATE": None,
    "USER_PRESENCE_RATE": None,
    "MAX_CONNECTIONS": None,
    "MAX_USER_CONNECTIONS": None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
