"""Real servers for the live tests: a private redis-server and daphne processes per test
module, on loopback, sharing the database of the current pytest run (PostgreSQL).

The processes start when a test first asks for them (so nothing starts on the SQLite
pass, where ``_needs_postgresql`` skips first) and stop when the module ends. A test may
kill one; the next test that asks for it gets it started again.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from tests.conftest import service_missing
from tests.live.clients import Credentials, LongPollClient, SseClient, WsClient
from tests.live.servers import Cluster


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("live"))
    yield cluster
    # The servers hold connections to the test database: they go before it is dropped.
    cluster.stop()


@pytest.fixture
def live(_needs_postgresql: None, transactional_db: None, _cluster: Cluster) -> Cluster:
    """This module's servers, on the database this run created (``transaction=True``, so
    that what a test writes is committed and the servers see it)."""
    if shutil.which("redis-server") is None:
        service_missing("redis-server is not installed: the live tests start their own")
    _cluster.db_name = connection.settings_dict["NAME"]
    return _cluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """A failing live test shows the servers' output."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("live")
    if report.failed and isinstance(cluster, Cluster):
        for process in cluster.processes():
            report.sections.append((f"{process.label} {process.name} output", process.tail()))
    return report


@pytest.fixture
def auth(user: Any) -> Credentials:
    """Basic-auth credentials of the ``user`` fixture."""
    return (user.username, "pw")


@pytest.fixture
def stream(board: Any) -> str:
    """The stream of the ``board`` fixture's cards."""
    return f"board:{board.pk}"


@pytest.fixture
async def ws_client(auth: Credentials) -> AsyncIterator[Callable[..., WsClient]]:
    """Makes WebSocket clients as ``user``; closes them at the end."""
    made: list[WsClient] = []

    def make(client_id: str, **options: Any) -> WsClient:
        made.append(WsClient(auth, client_id, **options))
        return made[-1]

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture
async def sse_client(auth: Credentials, stream: str) -> AsyncIterator[Callable[[], SseClient]]:
    """Makes SSE readers of ``stream`` as ``user``; closes them at the end."""
    made: list[SseClient] = []

    def make() -> SseClient:
        made.append(SseClient(auth, stream))
        return made[-1]

    yield make
    for client in made:
        await client.close()


@pytest.fixture
async def long_poll_client(
    auth: Credentials, stream: str
) -> AsyncIterator[Callable[[str, int], LongPollClient]]:
    """Makes long-polling readers of ``stream`` as ``user``; stops them at the end."""
    made: list[LongPollClient] = []

    def make(epoch: str, after: int) -> LongPollClient:
        made.append(LongPollClient(auth, stream, epoch, after))
        return made[-1]

    yield make
    for client in made:
        await client.close()
