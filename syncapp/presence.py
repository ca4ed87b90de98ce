"""Presence: who is here in a stream, with a small state each (cursor, typing, ...).

Ephemeral by design: never in the op log, never in the database. A connection becomes a
member of a stream it is subscribed to by sending ``presence {stream, state}``, and
stops being one when it unsubscribes, loses access, or closes. Each process keeps its
own members in a store shared by every process (Redis, with a time-to-live the process
renews; the process's memory when there is one process), and announces changes to the
stream's channel-layer group, which each process's hub hands to its subscribers.

A member of a process that died without saying goodbye stops being renewed; whichever
process first finds it expired removes it and announces its leave. Entries are renewed
every third of ``PRESENCE_TTL`` and expire two thirds of it after their last renewal;
sweeps run every sixth: such a member is gone within ``PRESENCE_TTL``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from django.conf import settings
from django.utils.module_loading import import_string

from syncapp import broadcast, encoding
from syncapp.conf import conf

if TYPE_CHECKING:
    from syncapp.hub import Hub

logger = logging.getLogger("syncapp.presence")

MESSAGE_TYPE = "syncapp.presence"
REDIS_LAYERS = (
    "channels_redis.core.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer",
)


def public_user(user: Any) -> dict[str, Any] | None:
    """The default ``SYNCAPP["PRESENCE_USER"]``: who a member is, as others see it."""
    if user is None or not user.is_authenticated:
        return None
    return {"id": user.pk, "name": user.get_username()}


@lru_cache(maxsize=4)
def _user_function(path: str) -> Callable[[Any], Any]:
    return import_string(path)  # type: ignore[no-any-return]


def describe(user: Any) -> Any:
    return _user_function(conf.PRESENCE_USER)(user)


class Store(Protocol):
    """Where every process's members live, each entry with an expiry."""

    async def put(self, stream: str, member: str, data: str, ttl: float) -> None: ...

    async def remove(self, stream: str, member: str) -> bool:
        """Remove a member; True if this call removed it."""

    async def members(self, stream: str) -> dict[str, str]:
        """The members that have not expired, as the JSON text each was put with."""

    async def expire(self, stream: str) -> list[str]:
        """Remove the expired members; the ones this call removed."""


class MemoryStore:
    """One process: members in a dict."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.streams: dict[str, dict[str, tuple[str, float]]] = {}

    async def put(self, stream: str, member: str, data: str, ttl: float) -> None:
        self.streams.setdefault(stream, {})[member] = (data, self.clock() + ttl)

    async def remove(self, stream: str, member: str) -> bool:
        return self.streams.get(stream, {}).pop(member, None) is not None

    async def members(self, stream: str) -> dict[str, str]:
        now = self.clock()
        return {m: d for m, (d, until) in self.streams.get(stream, {}).items() if until > now}

    async def expire(self, stream: str) -> list[str]:
        now = self.clock()
        entries = self.streams.get(stream, {})
        gone = [m for m, (_, until) in entries.items() if until <= now]
        for member in gone:
            del entries[member]
        return gone


class RedisStore:
    """Several processes: per stream, a hash of members and a sorted set of expiries."""

    def __init__(self, url: str, prefix: str = "syncapp:presence") -> None:
        import redis.asyncio as redis

        self.client: Any = redis.from_url(url, decode_responses=True)
        self.prefix = prefix

    def _keys(self, stream: str) -> tuple[str, str]:
        return f"{self.prefix}:{stream}:m", f"{self.prefix}:{stream}:t"

    async def put(self, stream: str, member: str, data: str, ttl: float) -> None:
        members, expiries = self._keys(stream)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(members, member, data)
            pipe.zadd(expiries, {member: time.time() + ttl})
            # The keys themselves outlive any member by a margin, then go.
            pipe.expire(members, int(ttl * 4) + 1)
            pipe.expire(expiries, int(ttl * 4) + 1)
            await pipe.execute()

    async def remove(self, stream: str, member: str) -> bool:
        members, expiries = self._keys(stream)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(expiries, member)
            pipe.hdel(members, member)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def members(self, stream: str) -> dict[str, str]:
        members, expiries = self._keys(stream)
        alive: list[str] = await self.client.zrangebyscore(expiries, time.time(), "+inf")
        if not alive:
            return {}
        values: list[str | None] = await self.client.hmget(members, alive)
        return {m: v for m, v in zip(alive, values, strict=True) if v is not None}

    async def expire(self, stream: str) -> list[str]:
        members, expiries = self._keys(stream)
        gone: list[str] = await self.client.zrangebyscore(expiries, "-inf", time.time())
        removed = []
        for member in gone:
            # ZREM tells which process removed it: that one alone announces the leave.
            if await self.client.zrem(expiries, member):
                await self.client.hdel(members, member)
                removed.append(member)
        return removed

    async def close(self) -> None:
        await self.client.aclose()


def redis_url() -> str | None:
    """``PRESENCE_REDIS``, or the first host of a channels_redis channel layer."""
    if conf.PRESENCE_REDIS:
        return str(conf.PRESENCE_REDIS)
    layer = (getattr(settings, "CHANNEL_LAYERS", {}) or {}).get(conf.CHANNEL_LAYER or "")
    if not layer or layer.get("BACKEND") not in REDIS_LAYERS:
        return None
    hosts = (layer.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
    host = hosts[0]
    if isinstance(host, str):
        return host
    if isinstance(host, dict) and "address" in host:
        return str(host["address"])
    if isinstance(host, list | tuple):
        return f"redis://{host[0]}:{host[1]}"
    return None


@dataclass
class Local:
    """One member of this process: a connection in a stream."""

    stream: str
    member: str
    info: dict[str, Any]
    state: dict[str, Any]
    sent: float = 0.0  # when its state was last announced
    flush: asyncio.TimerHandle | None = field(default=None, repr=False)

    def data(self) -> dict[str, Any]:
        return {**self.info, "state": self.state}


class Presence:
    """This process's members, and what it tells and hears about everyone's."""

    def __init__(self, hub: Hub, store: Store) -> None:
        self.hub = hub
        self.store = store
        self.local: dict[tuple[str, str], Local] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = self.hub.spawn(self._maintain())

    async def state(self, stream: str) -> dict[str, Any]:
        """Every member of ``stream``, for ``presence_state``."""
        return {m: msgspec.json.decode(d) for m, d in (await self.store.members(stream)).items()}

    async def set(
        self, stream: str, member: str, info: dict[str, Any], state: dict[str, Any]
    ) -> None:
        """A member joins or changes its state; announced at most PRESENCE_RATE times a
        second per member, the latest state winning."""
        key = (stream, member)
        local = self.local.get(key)
        if local is None:
            local = self.local[key] = Local(stream, member, info, state)
            await self._announce(local)
            return
        local.state = state
        interval = 1.0 / conf.PRESENCE_RATE
        wait = local.sent + interval - self.hub.timer()
        if wait <= 0 and local.flush is None:
            await self._announce(local)
        elif local.flush is None:
            local.flush = self.hub.loop.call_later(
                max(wait, 0.0), lambda: self.hub.spawn(self._flush(local))
            )

    async def _flush(self, local: Local) -> None:
        local.flush = None
        if self.local.get((local.stream, local.member)) is local:
            await self._announce(local)

    async def _announce(self, local: Local) -> None:
        local.sent = self.hub.timer()
        data = local.data()
        await self.store.put(local.stream, local.member, encoding.dumps(data), _lifetime())
        await self._send(local.stream, joins={local.member: data})

    async def leave(self, stream: str, member: str) -> None:
        local = self.local.pop((stream, member), None)
        if local is None:
            return
        if local.flush is not None:
            local.flush.cancel()
        if await self.store.remove(stream, member):
            await self._send(stream, leaves=[member])

    async def leave_all(self, member: str) -> None:
        for stream, owner in list(self.local):
            if owner == member:
                await self.leave(stream, member)

    async def _send(
        self,
        stream: str,
        joins: dict[str, Any] | None = None,
        leaves: list[str] | None = None,
    ) -> None:
        message = {
            "type": MESSAGE_TYPE,
            "stream": stream,
            "joins": joins or {},
            "leaves": leaves or [],
        }
        if self.hub.layer is not None:
            try:
                await self.hub.layer.group_send(broadcast.stream_group(stream), message)
                return
            except Exception:
                logger.warning("Could not announce presence in %s", stream, exc_info=True)
        self.hub.dispatch(message)  # one process without a layer: deliver here

    async def _maintain(self) -> None:
        """Sweep the expired members of followed streams every sixth of the TTL; renew
        this process's own every third."""
        sweeps = 0
        while True:
            await asyncio.sleep(conf.PRESENCE_TTL.total_seconds() / 6)
            sweeps += 1
            try:
                if sweeps % 2 == 0:
                    for local in list(self.local.values()):
                        data = encoding.dumps(local.data())
                        await self.store.put(local.stream, local.member, data, _lifetime())
                for stream in list(self.hub.feeds):
                    gone = await self.store.expire(stream)
                    if gone:
                        await self._send(stream, leaves=gone)
            except Exception:
                logger.warning("Presence upkeep failed", exc_info=True)

    async def close(self) -> None:
        for stream, member in list(self.local):
            await self.leave(stream, member)
        if self.task is not None:
            self.task.cancel()
        closer = getattr(self.store, "close", None)
        if closer is not None:
            await closer()


def _lifetime() -> float:
    """How long an entry lives after its last renewal: two thirds of the TTL, renewed every
    third, so that a live member never lapses and a dead one is gone within the TTL."""
    return float(conf.PRESENCE_TTL.total_seconds()) * 2 / 3


def frame(message: dict[str, Any]) -> str:
    """The ``presence`` frame of a channel-layer presence message, encoded once."""
    return encoding.dumps(
        {
            "type": "presence",
            "stream": message["stream"],
            "joins": message.get("joins") or {},
            "leaves": message.get("leaves") or [],
        }
    )


def make_store() -> Store:
    url = redis_url()
    return RedisStore(url) if url else MemoryStore()
