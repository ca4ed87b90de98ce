"""Fixtures for the client's tests: a fake server, and clients whose backoff never waits."""

from __future__ import annotations

import asyncio

import pytest

from syncapp.client import Backoff, SyncClient
from tests.client.fake_server import FakeServer


class FakeSleep:
    """Records the delays asked for and returns at once, after letting other tasks run."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
async def server():
    async with FakeServer() as fake:
        yield fake


@pytest.fixture
def sleep():
    return FakeSleep()


@pytest.fixture
async def make_client(sleep):
    clients: list[SyncClient] = []

    def make(urls, **kwargs) -> SyncClient:
        kwargs.setdefault("sleep", sleep)
        kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.1, random=lambda: 0.5))
        client = SyncClient(urls, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
