"""Shared fixtures. Services (PostgreSQL, Redis) are required when
``SYNCAPP_REQUIRE_SERVICES=1`` (CI sets it) and skipped with a hint otherwise."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest
from django.db import connection
from rest_framework.test import APIClient

REQUIRE_SERVICES = os.environ.get("SYNCAPP_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("SYNCAPP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def service_missing(message: str) -> None:
    """Fail in CI, skip elsewhere: a missing service must never pass silently in CI."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (SYNCAPP_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(message)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("postgresql"):
            item.fixturenames.append("_needs_postgresql")


@pytest.fixture
def _needs_postgresql(request):
    if connection.vendor != "postgresql":
        pytest.skip(
            "runs on PostgreSQL: `scripts/test` runs a PostgreSQL pass when one is reachable "
            "(or run SYNCAPP_TEST_DB=postgresql scripts/test --db postgresql)"
        )


@pytest.fixture
async def hub_closed():
    """For tests that start this event loop's hub (WebSocket, SSE, long-poll): close it
    afterwards, leaving its channel-layer groups and its database connection."""
    yield
    from tests.ws import close_hub

    await close_hub()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Each test starts with full per-user buckets (user pks repeat across tests)."""
    from syncapp import limits

    limits.reset()


@pytest.fixture
def redis_url():
    parsed = urlparse(REDIS_URL)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=1):
            pass
    except OSError:
        service_missing(
            f"Redis is not reachable at {REDIS_URL}: start redis-server or set "
            "SYNCAPP_TEST_REDIS_URL"
        )
    return REDIS_URL


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ada", password="pw")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bea", password="pw")


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def board(db):
    from tests.testapp.models import Board

    return Board.objects.create(name="Board")


def new_id() -> str:
    return str(uuid.uuid4())


def pytest_sessionfinish(session, exitstatus):
    """A run in which no test passed is a failure, not a green build."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or session.config.option.collectonly:
        return
    if exitstatus == 0 and not reporter.stats.get("passed"):
        session.exitstatus = 1
