"""Reading streaming HTTP responses (SSE) in tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class EventReader:
    """Parses a text/event-stream response into events as they arrive."""

    def __init__(self, response: Any) -> None:
        self.chunks = aiter(response.streaming_content)
        self.buffer = ""

    async def next(self, timeout: float = 5) -> dict[str, str]:
        while "\n\n" not in self.buffer:
            chunk = await asyncio.wait_for(anext(self.chunks), timeout)
            self.buffer += chunk.decode()
        raw, self.buffer = self.buffer.split("\n\n", 1)
        event: dict[str, str] = {}
        for line in raw.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            event[key] = value.removeprefix(" ")
        if not event:
            return await self.next(timeout)
        return event

    async def next_named(self, name: str, timeout: float = 5) -> dict[str, str]:
        while True:
            event = await self.next(timeout)
            if event.get("event") == name:
                return event
            if event.get("event") not in ("stream-open", "keep-alive"):
                raise AssertionError(f"expected {name}, got {event}")

    async def ops(self, count: int, timeout: float = 5) -> list[dict[str, Any]]:
        return [
            json.loads((await self.next_named("message", timeout))["data"]) for _ in range(count)
        ]

    async def close(self) -> None:
        await self.chunks.aclose()
