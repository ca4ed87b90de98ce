"""Settings for syncapp's own tests: its test app, SQLite or PostgreSQL.

``SYNCAPP_TEST_DB=postgresql`` runs the suite on PostgreSQL (``SYNCAPP_TEST_PG_*`` say
where; the default is the local server with trust auth).
"""

import os
import tempfile

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "syncapp",
    "tests.testapp",
    "demo_project.todos",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "/static/"

TEST_DB = os.environ.get("SYNCAPP_TEST_DB", "sqlite")
if TEST_DB == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("SYNCAPP_TEST_PG_NAME", "syncapp"),
            "USER": os.environ.get("SYNCAPP_TEST_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("SYNCAPP_TEST_PG_PASSWORD", ""),
            "HOST": os.environ.get("SYNCAPP_TEST_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("SYNCAPP_TEST_PG_PORT", "5432"),
            # One test database per run, so runs on a shared server never collide.
            "TEST": {
                "NAME": os.environ.get("SYNCAPP_TEST_PG_TEST_NAME", f"test_syncapp_{os.getpid()}")
            },
        }
    }
elif TEST_DB == "sqlite":
    # A file, not ":memory:": Django shares an in-memory test database between threads
    # in SQLite's shared-cache mode, whose table locks fail at once instead of waiting,
    # and the hub and the consumers read from their own threads.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": ":memory:",
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL;",
            },
            "TEST": {
                "NAME": os.path.join(tempfile.gettempdir(), f"syncapp-test-{os.getpid()}.sqlite3")
            },
        }
    }
else:
    raise RuntimeError(f"SYNCAPP_TEST_DB must be sqlite or postgresql, not {TEST_DB!r}")

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

SYNCAPP = {"PERMISSION_CLASS": "tests.testapp.permissions.TestPermission"}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "syncapp",
    "OAS_VERSION": "3.1.0",
    "POSTPROCESSING_HOOKS": [],
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SILENCED_SYSTEM_CHECKS = ["syncapp.W002"]
ASGI_APPLICATION = "tests.asgi.application"
EVENTSTREAM_STORAGE_CLASS = "syncapp.sse.OpLogStorage"
EVENTSTREAM_CHANNELMANAGER_CLASS = "syncapp.sse.ChannelManager"
