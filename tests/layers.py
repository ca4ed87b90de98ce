"""Channel layers that misbehave on purpose, as real ones do under load."""

from __future__ import annotations

from typing import Any

from channels.layers import InMemoryChannelLayer


class DroppingLayer(InMemoryChannelLayer):
    """Drops every ``drop_every``-th ops broadcast (capacity, expiry, a Redis restart)."""

    drop_every = 3

    def __init__(self, *args: Any, drop_every: int = 3, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop_every = drop_every
        self.sent = 0
        self.dropped = 0

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if message.get("type") == "syncapp.ops":
            self.sent += 1
            if self.sent % self.drop_every == 0:
                self.dropped += 1
                return
        await super().group_send(group, message)
