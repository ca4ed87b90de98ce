"""Per-user rate limits and connection caps, shared by every process when there is Redis.

A user (an authenticated user's pk; for anonymous clients, their address) has one token
bucket per kind of work: ``mutate`` (mutate frames and mutation requests), ``read``
(subscribe frames, snapshot, ops and long-poll requests, SSE opens) and ``presence``
(presence frames). Every connection and request of the user draws from the same bucket,
whatever the process: in Redis when the channel layer (or ``PRESENCE_REDIS``) names one,
in this process's memory otherwise. The per-connection buckets of the consumer
(``MUTATION_RATE``, ``PRESENCE_MAX_RATE``) come on top: one tab cannot starve the others.

WebSocket connections are capped per process (``MAX_CONNECTIONS``) and per user
(``MAX_USER_CONNECTIONS``, across processes with Redis: each connection holds a lease
that its process renews, so the connections of a process that died stop counting within
:func:`lease_seconds`).

A Redis that does not answer does not take the site down: the limits fail open (and
log a warning) until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncapp.conf import conf
from syncapp.ratelimit import TokenBucket

logger = logging.getLogger("syncapp.limits")

PREFIX = "syncapp:limit"

# kind -> the settings of its per-user rate and burst
KINDS = {
    "mutate": ("USER_MUTATION_RATE", "USER_MUTATION_BURST"),
    "read": ("USER_READ_RATE", "USER_READ_BURST"),
    "presence": ("USER_PRESENCE_RATE", "USER_PRESENCE_BURST"),
}

# A token bucket in a hash {tokens, ts}, on Redis's clock: the wait in seconds, as text
# (0 when the tokens were taken).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return tostring(wait)
"""

# A lease on one of a user's connection slots: 1 if taken (or renewed), 0 when the user
# already holds ``cap`` live ones.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
return 1
"""

# Renew a held slot (never re-create a released one), on Redis's clock, and keep the key
# alive as long as its slots: without the EXPIRE the key would vanish one lease after
# the user's last new connection, and with it the count.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: int


def limit(kind: str) -> Limit | None:
    """The per-user limit of ``kind``; None when it is turned off."""
    rate_name, burst_name = KINDS[kind]
    rate = getattr(conf, rate_name)
    if rate is None:
        return None
    return Limit(float(rate), int(getattr(conf, burst_name)))


def identity(user: Any, address: str | None) -> str:
    """Whose bucket a request or connection draws from: ``u:<pk>`` for a user,
    ``a:<address>`` for an anonymous client (its address as the server sees it: behind
    a proxy, run the server with its proxy-headers option)."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"u:{user.pk}"
    return f"a:{address or '-'}"


def lease_seconds() -> float:
    """How long a connection's slot outlives its last renewal (a dead process's slots
    stop counting after this): four of the heartbeat sweeps that renew it, 50 s by
    default."""
    return float(4 * conf.HEARTBEAT_MS / 2000)


# Backends


class MemoryBackend:
    """This process: buckets and connection counts in dicts (one process, or no Redis)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.slots: dict[str, set[str]] = {}
        self._pruned = clock()

    def take(self, kind: str, ident: str, rule: Limit, cost: float = 1.0) -> float:
        with self.lock:
            self._prune()
            key = (kind, ident)
            bucket = self.buckets.get(key)
            if bucket is None or bucket.rate != rule.rate or bucket.burst != rule.burst:
                bucket = self.buckets[key] = TokenBucket(rule.rate, rule.burst, self.clock)
            return bucket.take(cost)

    async def atake(self, kind: str, ident: str, rule: Limit, cost: float = 1.0) -> float:
        return self.take(kind, ident, rule, cost)

    def _prune(self) -> None:
        """Forget the buckets that have refilled: a full bucket is the same as none."""
        now = self.clock()
        if now - self._pruned < 60:
            return
        self._pruned = now
        for key, bucket in list(self.buckets.items()):
            if bucket.tokens + (now - bucket.updated) * bucket.rate >= bucket.burst:
                del self.buckets[key]

    async def acquire(self, ident: str, slot: str, cap: int) -> bool:
        with self.lock:
            held = self.slots.setdefault(ident, set())
            if slot not in held and len(held) >= cap:
                return False
            held.add(slot)
            return True

    async def renew(self, ident: str, slot: str) -> None:
        pass  # nothing expires in memory: a connection releases its slot when it closes

    async def renew_many(self, slots: list[tuple[str, str]]) -> None:
        pass

    async def release(self, ident: str, slot: str) -> None:
        with self.lock:
            held = self.slots.get(ident)
            if held is not None:
                held.discard(slot)
                if not held:
                    del self.slots[ident]


REDIS_RETRY_AFTER = 5.0
"""Seconds the limits fail open without asking Redis after it failed to answer."""


class RedisBackend:
    """Every process: buckets and connection leases in Redis, changed by Lua scripts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._warned = 0.0
        # After a failure Redis is left alone for a while: every frame and request would
        # otherwise wait for its timeout (2 s) while it is unreachable.
        self._down_until = 0.0
        self.clock: Callable[[], float] = time.monotonic

    def _down(self) -> bool:
        return self.clock() < self._down_until

    def _sync_client(self) -> Any:
        if self._sync is None:
            import redis

            self._sync = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        return self._sync

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            import redis.asyncio as aredis

            client = self._async[loop] = aredis.Redis.from_url(
                self.url, socket_timeout=2, socket_connect_timeout=2
            )
        return client

    def _failed(self, what: str) -> None:
        now = self.clock()
        self._down_until = now + REDIS_RETRY_AFTER
        if now - self._warned > 10:
            self._warned = now
            logger.warning("Rate limits fail open: Redis did not answer (%s)", what, exc_info=True)

    def take(self, kind: str, ident: str, rule: Limit, cost: float = 1.0) -> float:
        if self._down():
            return 0.0
        try:
            wait = self._sync_client().eval(
                _TAKE, 1, f"{PREFIX}:{kind}:{ident}", rule.rate, rule.burst, cost
            )
        except Exception:
            self._failed("take")
            return 0.0
        return float(wait)

    async def atake(self, kind: str, ident: str, rule: Limit, cost: float = 1.0) -> float:
        if self._down():
            return 0.0
        try:
            wait = await self._async_client().eval(
                _TAKE, 1, f"{PREFIX}:{kind}:{ident}", rule.rate, rule.burst, cost
            )
        except Exception:
            self._failed("take")
            return 0.0
        return float(wait)

    async def acquire(self, ident: str, slot: str, cap: int) -> bool:
        if self._down():
            return True
        try:
            got = await self._async_client().eval(
                _ACQUIRE, 1, f"{PREFIX}:conns:{ident}", slot, cap, lease_seconds()
            )
        except Exception:
            self._failed("acquire")
            return True
        return bool(int(got))

    async def renew(self, ident: str, slot: str) -> None:
        if self._down():
            return
        try:
            await self._async_client().eval(
                _RENEW, 1, f"{PREFIX}:conns:{ident}", slot, lease_seconds()
            )
        except Exception:
            self._failed("renew")

    async def renew_many(self, slots: list[tuple[str, str]]) -> None:
        """Renew every (ident, slot) in one round trip (a process renews all of its
        connections' slots at each heartbeat sweep)."""
        if self._down():
            return
        try:
            async with self._async_client().pipeline(transaction=False) as pipe:
                for ident, slot in slots:
                    pipe.eval(_RENEW, 1, f"{PREFIX}:conns:{ident}", slot, lease_seconds())
                await pipe.execute()
        except Exception:
            self._failed("renew")

    async def release(self, ident: str, slot: str) -> None:
        if self._down():
            return
        try:
            await self._async_client().zrem(f"{PREFIX}:conns:{ident}", slot)
        except Exception:
            self._failed("release")


Backend = MemoryBackend | RedisBackend

_backends: dict[str | None, Backend] = {}
_backends_lock = threading.Lock()


def backend() -> Backend:
    """Redis when presence would use it (``PRESENCE_REDIS``, or a channels_redis layer's
    first host), this process's memory otherwise."""
    from syncapp.presence import redis_url

    url = redis_url()
    found = _backends.get(url)
    if found is None:
        with _backends_lock:
            found = _backends.get(url)
            if found is None:
                found = _backends[url] = RedisBackend(url) if url else MemoryBackend()
    return found


def reset() -> None:
    """Forget every bucket and slot of this process (tests, whose connections may end
    without the ``websocket.disconnect`` a server always sends)."""
    _backends.clear()
    _process.held.clear()


# The calls the transports make


def take(kind: str, ident: str, cost: float = 1.0) -> float:
    """Spend from ``ident``'s ``kind`` bucket: 0.0 if allowed, else the seconds to wait."""
    rule = limit(kind)
    if rule is None:
        return 0.0
    return backend().take(kind, ident, rule, cost)


async def atake(kind: str, ident: str, cost: float = 1.0) -> float:
    """:func:`take`, from async code."""
    rule = limit(kind)
    if rule is None:
        return 0.0
    return await backend().atake(kind, ident, rule, cost)


class Slots:
    """This process's WebSocket connections, counted against ``MAX_CONNECTIONS``."""

    def __init__(self) -> None:
        self.held: set[str] = set()


_process = Slots()


def reserve_process_slot(slot: str) -> bool:
    """Take one of this process's ``MAX_CONNECTIONS`` slots (no await: check-and-take is
    atomic on the event loop)."""
    cap = conf.MAX_CONNECTIONS
    if cap is not None and len(_process.held) >= cap:
        return False
    _process.held.add(slot)
    return True


def release_process_slot(slot: str) -> None:
    _process.held.discard(slot)


def process_connections() -> int:
    return len(_process.held)


async def acquire_user_slot(ident: str, slot: str) -> bool:
    """Take one of ``ident``'s ``MAX_USER_CONNECTIONS`` slots (always, with no cap)."""
    cap = conf.MAX_USER_CONNECTIONS
    if cap is None:
        return True
    return await backend().acquire(ident, slot, cap)


async def renew_user_slots(slots: list[tuple[str, str]]) -> None:
    """Renew many connections' slots at once (one Redis round trip)."""
    if conf.MAX_USER_CONNECTIONS is not None and slots:
        await backend().renew_many(slots)


async def release_user_slot(ident: str, slot: str) -> None:
    await backend().release(ident, slot)
