"""Long-poll: wait until a stream has ops after a position, woken through the process's
hub (the channel layer), never by polling the database."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from syncapp.hub import Batch, get_hub


class Waiter:
    """A hub listener that only wakes its request: any batch, reset or revocation."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()

    def deliver(self, batch: Batch) -> None:
        self.woken.set()

    def reset(self, epoch: str, reason: str) -> None:
        self.woken.set()

    def recheck(self, user_id: Any) -> None:
        self.woken.set()  # the request checks its permission again when it wakes

    def presence(self, frame: str) -> None:
        pass  # presence does not wake a long-poll


async def wait(stream: str, after: int, timeout: float) -> None:
    """Return once ``stream`` may have ops after ``after``, or after ``timeout`` seconds
    (joining the stream's feed counts against it too)."""
    hub = await get_hub()
    waiter = Waiter()
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                feed = await hub.follow(stream, waiter)
                if feed.last <= after:  # an op committed since the caller read is known
                    await waiter.woken.wait()
    finally:
        hub.unfollow(stream, waiter)
