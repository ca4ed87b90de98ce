"""Settings of the daphne processes that ``tests/live/`` starts.

The test settings, pointed at the database the current pytest run created
(``SYNCAPP_LIVE_DB_NAME``) and at a private Redis (``SYNCAPP_LIVE_REDIS_URL``), with short
intervals so that recovery is quick and a small outbox so that a slow consumer is cut
off after a few frames.
"""

import json
import os
from typing import Any

from tests import settings as base

# Everything from the test settings (as `import *` would, but with the overrides below
# free to have types of their own).
globals().update({name: getattr(base, name) for name in dir(base) if name.isupper()})

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["SYNCAPP_LIVE_DB_NAME"],
        "USER": os.environ.get("SYNCAPP_TEST_PG_USER", "postgres"),
        "PASSWORD": os.environ.get("SYNCAPP_TEST_PG_PASSWORD", ""),
        "HOST": os.environ.get("SYNCAPP_TEST_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("SYNCAPP_TEST_PG_PORT", "5432"),
    }
}

# As docs/deployment.md recommends: one channel per process receives every stream's ops.
CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": os.environ["SYNCAPP_LIVE_REDIS_URL"], "socket_timeout": 10}],
            # The fault tests (tests/live/test_faults.py) shrink these for their own
            # processes: a tiny capacity overflows, a short group_expiry forgets members.
            "capacity": int(os.environ.get("SYNCAPP_LIVE_LAYER_CAPACITY", "10000")),
            "expiry": 60,
            "group_expiry": int(os.environ.get("SYNCAPP_LIVE_GROUP_EXPIRY", "86400")),
        },
    }
}

# WebSocket origins default to these hosts: the clients send http://127.0.0.1:<port>.
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

SYNCAPP: dict[str, Any] = {
    **base.SYNCAPP,
    "CHECK_INTERVAL": 0.5,
    # Short, so that the presence of a killed process expires within the test.
    "PRESENCE_TTL": 2.0,
    "OUTBOX_BYTES": 64 * 1024,
}
# A test module may set more (tests/live/test_abuse.py: tight rate limits).
SYNCAPP.update(json.loads(os.environ.get("SYNCAPP_LIVE_SYNCAPP", "{}")))

# tests/testapp/faults.py: a card saved with this title SIGKILLs its process right after
# the commit (empty: off). Only the processes of tests/live/test_faults.py set it.
SYNCAPP_TEST_KILL_ON_TITLE = os.environ.get("SYNCAPP_LIVE_KILL_TITLE", "")

# What the hub and the transports log ends up in the process's stderr, which the tests
# print when they fail.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "syncapp": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "channels_redis": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "django": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
