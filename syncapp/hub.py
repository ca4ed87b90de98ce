"""The fan-out hub: one per process (per event loop), one channel-layer subscription per
followed stream, the same encoded text handed to every local listener.

A :class:`Feed` follows one stream for this process. It joins the stream's group once,
keeps the recent ops in a ring (so resuming clients rarely touch the database), and
hands its listeners a contiguous, duplicate-free sequence of batches: when the channel
layer drops a message (invariant 3), the feed reads the missing range from the log once,
for all of its listeners.

Listeners are WebSocket subscriptions, SSE taps and long-poll waiters. Delivering a batch
to them makes no database query and encodes nothing: the ops were encoded once, before
they were broadcast.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer
from django.db import close_old_connections, connections

from syncapp import broadcast, encoding, limits, oplog, presence
from syncapp.conf import conf
from syncapp.exceptions import ResetRequired

logger = logging.getLogger("syncapp.hub")


def idle_timeout(exc: BaseException) -> bool:
    """Whether a channel-layer ``receive()`` failed only because the layer was quiet.

    redis-py 8 gives every connection a 5 s socket timeout, as long as channels_redis's
    blocking pop waits: on a layer with no message for 5 s, ``receive()`` raises redis's
    ``TimeoutError``. That is not a failure to back off from (backing off would delay the
    next op by up to 5 s after a quiet spell). ``docs/deployment.md`` shows the
    ``socket_timeout`` that avoids it; a message popped just as the read timed out is
    recovered by the hub's periodic check (``CHECK_INTERVAL``).
    """
    try:
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - channels_redis needs redis
        return False
    # Only a read on an established connection: redis-py raises the same class when it
    # cannot connect or write, and an unreachable Redis must back off and rejoin.
    return isinstance(exc, RedisTimeoutError) and str(exc).startswith("Timeout reading")


T = TypeVar("T")

CONTROL_GROUP = "syncapp.control"
REVOKE = "syncapp.revoke"
PROBE = "syncapp.probe"
# How long a feed without listeners stays, so a reconnect storm finds its ring warm.
FEED_LINGER = 30.0
# Batches a feed holds while it reads the log; past it, the log alone fills the gap.
PENDING_LIMIT = 1000
REPAIR_PAGE = 1000
# The longest a flush waits for the previous one's share of the loop (seconds).
MAX_FLUSH_WAIT = 0.1


class Frames(dict[tuple[str, str, int, int], str]):
    """What one flush builds once for every connection: ``ops`` frames of several
    consecutive batches, by (stream, epoch, first seq, last seq); and in ``wire``, frames
    framed as daphne's sockets take them (:meth:`consumers.ServerSocket.write_text`)."""

    __slots__ = ("wire",)

    def __init__(self) -> None:
        super().__init__()
        self.wire: dict[str, bytes] = {}


@dataclass(slots=True)
class Batch:
    """Consecutive ops of one stream, already encoded."""

    stream: str
    epoch: str
    first: int
    last: int
    ops: list[str]
    _frame: str | None = field(default=None, repr=False)

    def frame(self) -> str:
        """The ``ops`` frame carrying this batch, built once for every listener."""
        if self._frame is None:
            self._frame = (
                '{"type":"ops","stream":'
                + encoding.dumps(self.stream)
                + ',"ops":['
                + ",".join(self.ops)
                + "]}"
            )
        return self._frame

    def split(self, max_bytes: int) -> list[Batch]:
        """This batch as consecutive batches of at most ``max_bytes`` of ops each (a
        single larger op stays whole)."""
        parts: list[Batch] = []
        start, size = 0, 0
        for index, text in enumerate(self.ops):
            if index > start and size + len(text) > max_bytes:
                parts.append(self._slice(start, index))
                start, size = index, 0
            size += len(text)
        parts.append(self._slice(start, len(self.ops)))
        return parts

    def _slice(self, start: int, end: int) -> Batch:
        return Batch(
            self.stream, self.epoch, self.first + start, self.first + end - 1, self.ops[start:end]
        )

    def after(self, seq: int) -> Batch:
        """The part of this batch after ``seq``."""
        if seq < self.first:
            return self
        return Batch(self.stream, self.epoch, seq + 1, self.last, self.ops[seq + 1 - self.first :])

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Batch:
        return cls(
            message["stream"], message["epoch"], message["first"], message["last"], message["ops"]
        )

    @classmethod
    def from_page(cls, page: oplog.Page) -> Batch | None:
        if not page.ops:
            return None
        texts = [op.encoded for op in page.ops]
        return cls(page.stream, page.epoch, page.ops[0].seq, page.ops[-1].seq, texts)


class Listener(Protocol):
    """Something in this process that wants a stream's ops."""

    def deliver(self, batch: Batch) -> None:
        """The next batch, contiguous with the last one; must not block."""

    def reset(self, epoch: str, reason: str) -> None:
        """The stream's history was reset or trimmed past this listener: it is detached."""

    def recheck(self, user_id: Any) -> None:
        """``user_id`` (every user when None) may have lost access: check those readers."""

    def presence(self, frame: str) -> None:
        """A ``presence`` frame for the stream's readers, encoded once for all of them."""


class Feed:
    """One stream followed by this process."""

    def __init__(self, hub: Hub, name: str) -> None:
        self.hub = hub
        self.name = name
        self.group = broadcast.stream_group(name)
        self.listeners: set[Listener] = set()
        self.epoch = ""
        self.last = 0
        self.ring: deque[tuple[int, str]] = deque(maxlen=conf.RING_SIZE)
        self.ready = asyncio.Event()
        self._pending: list[Batch] = []
        self._repairing = False
        self.starting: asyncio.Task[None]
        self._linger: asyncio.TimerHandle | None = None
        self.closed = False

    async def start(self) -> None:
        """Join the group, then take the head as the baseline: an op committed in between
        is both in the log and on its way, and arrives once."""
        await self.hub.group_add(self.group)
        head = await self.hub.run_db(oplog.head_of, self.name)
        self.epoch, self.last = head.epoch, head.head
        self.ready.set()
        for batch in self._drain():
            self._accept(batch)

    def recent(self, after: int) -> list[str] | None:
        """Ops after ``after`` from memory, or None if the ring does not reach back."""
        if after == self.last:
            return []
        if after > self.last or not self.ring or after < self.ring[0][0] - 1:
            return None
        start = after + 1 - self.ring[0][0]
        return [text for _, text in list(self.ring)[start:]]

    def on_batch(self, batch: Batch) -> None:
        if not self.ready.is_set() or self._repairing:
            self._pending.append(batch)
            if len(self._pending) > PENDING_LIMIT:
                # All of it is in the log, which the repair reads up to the head anyway.
                self._pending.clear()
            return
        self._accept(batch)

    def _drain(self) -> list[Batch]:
        pending, self._pending = self._pending, []
        return sorted(pending, key=lambda b: b.first)

    def _accept(self, batch: Batch) -> None:
        if self.closed:
            return
        if batch.epoch != self.epoch:
            # Another epoch, or a late message from the previous one: the log decides.
            self.hub.spawn(self._check_epoch(batch))
            return
        if batch.last <= self.last:
            return  # already delivered
        if batch.first > self.last + 1:
            # A gap: the channel layer lost something. Read it from the log, once.
            self._pending.append(batch)
            self._start_repair()
            return
        self._deliver(batch.after(self.last))

    async def _check_epoch(self, batch: Batch) -> None:
        head = await self.hub.run_db(oplog.head_of, self.name)
        if head.epoch != self.epoch and not self.closed:
            self.hub.drop(self, head.epoch, "epoch_changed")

    def _deliver(self, batch: Batch) -> None:
        self.last = batch.last
        self.ring.extend(zip(range(batch.first, batch.last + 1), batch.ops, strict=True))
        for listener in list(self.listeners):
            try:
                listener.deliver(batch)
            except Exception:
                # Its failure stays its own: the listeners after it still get the batch.
                # A subscription that missed it sees the gap at its next batch.
                logger.exception(
                    "A listener of %s failed to take ops %s..%s", self.name, batch.first, batch.last
                )

    def resync(self) -> None:
        """Catch up with the log after a period when messages may have been lost."""
        if self.ready.is_set() and not self.closed:
            self._start_repair()

    def _start_repair(self) -> None:
        if not self._repairing and not self.closed and not self.hub.closed:
            self._repairing = True
            self.hub.spawn(self._repair())

    async def _repair(self) -> None:
        try:
            while True:
                page = await self.hub.run_db(
                    partial(oplog.read, self.name, epoch=self.epoch, after=self.last),
                    limit=REPAIR_PAGE,
                )
                batch = Batch.from_page(page)
                if batch is not None:
                    # Rare when the channel layer is healthy: worth a line in the log.
                    logger.info(
                        "Feed %s read ops %s..%s from the log", self.name, batch.first, batch.last
                    )
                    self._deliver(batch)
                if len(page.ops) < REPAIR_PAGE:
                    break
        except ResetRequired as exc:
            self._repairing = False
            self.hub.drop(self, exc.epoch, exc.reason)
            return
        except Exception:
            logger.exception("Could not repair the feed of %s", self.name)
            self._repairing = False
            self.hub.loop.call_later(1.0, self._start_repair)
            return
        self._repairing = False
        for batch in self._drain():
            self._accept(batch)

    def linger(self) -> None:
        if self._linger is None:
            self._linger = self.hub.loop.call_later(FEED_LINGER, self._expire)

    def keep(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _expire(self) -> None:
        self._linger = None
        if not self.listeners:
            self.hub.close_feed(self)


class Hub:
    """This process's fan-out: channel-layer messages in, feeds and listeners out."""

    # Swappable, as DRF's throttles' `timer` is: tests inject time.
    timer: Callable[[], float] = staticmethod(lambda: asyncio.get_running_loop().time())

    def __init__(self, layer: BaseChannelLayer | None, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.channel = ""
        self.feeds: dict[str, Feed] = {}
        self.connections: set[Any] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._probe_seen = 0.0
        self._started = asyncio.Event()
        self._revoked: dict[str | None, int] = {}
        self.closed = False
        self._sweeper: asyncio.Task[None] | None = None
        # Connections with frames to send, written once per turn of the event loop.
        self._unflushed: list[Any] = []
        self._flush_scheduled = False
        self._flush_started = self._flush_ended = self._flush_took = 0.0
        self._settling = False
        # The hub's own thread for the database: its reads never run in (and never close
        # the connection of) a request's or a consumer's thread.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncapp-hub")

    # lifecycle

    async def start(self) -> None:
        self.presence = presence.Presence(self, presence.make_store())
        self.presence.start()
        if self.layer is not None:
            self.channel = await self.layer.new_channel("syncapp.hub.")
            await self._join_control()
            self.spawn(self._receive_loop())
            self.spawn(self._maintain())
        self._started.set()

    async def _join_control(self) -> None:
        await self.group_add(CONTROL_GROUP)
        await self.group_add(self._probe_group)

    @property
    def _probe_group(self) -> str:
        return "syncapp.probe." + self.channel.replace("!", ".").replace("syncapp.hub.", "")[-60:]

    async def run_db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` in the hub's database thread."""
        return await self.loop.run_in_executor(
            self._db, partial(_with_connection, function, *args, **kwargs)
        )

    async def close(self) -> None:
        """Stop this hub: leave every group, cancel its tasks (tests and shutdown)."""
        self.closed = True
        _hubs.pop(self.loop, None)
        await self.presence.close()
        for task in list(self._tasks):
            task.cancel()
        for feed in list(self.feeds.values()):
            feed.closed = True
            await self.group_discard(feed.group)
        self.feeds.clear()
        if self.layer is not None and self.channel:
            await self.group_discard(CONTROL_GROUP)
            await self.group_discard(self._probe_group)
        await self.loop.run_in_executor(self._db, connections.close_all)
        self._db.shutdown(wait=False)

    def spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("A hub task failed", exc_info=task.exception())

    async def group_add(self, group: str) -> None:
        if self.layer is not None:
            await self.layer.group_add(group, self.channel)

    async def group_discard(self, group: str) -> None:
        if self.layer is not None:
            await self.layer.group_discard(group, self.channel)

    def schedule_flush(self, connection: Any) -> None:
        """Have ``connection.flush()`` called once the listeners of this turn of the event
        loop have queued what they got: the batches that reach a connection before the
        flush go out in one frame, and a delivery to a socket costs no task of its own.

        Flushes take at most half of the loop's time while there is other work: the next
        one waits as long after the last as the last took, counting the turn after it in
        which the server writes what it buffered (daphne). A lone op goes out at once;
        under a burst the work that makes ops (applying mutations, reading the channel
        layer) keeps going, and the ops that came meanwhile share a frame."""
        self._unflushed.append(connection)
        if not self._flush_scheduled and not self._settling:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        wait = min(self._flush_ended + self._flush_took - self.loop.time(), MAX_FLUSH_WAIT)
        if wait > 0:
            self.loop.call_later(wait, self._flush)
        else:
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_started = self.loop.time()
        self._flush_scheduled = False
        self._settling = True
        connections, self._unflushed = self._unflushed, []
        frames = Frames()
        for connection in connections:
            try:
                connection.flush(frames)
            except Exception:
                logger.exception("Could not write to a connection")
        self.loop.call_soon(self._settle, True)

    def _settle(self, again: bool) -> None:
        """The end of a flush: two turns later, after the I/O of the turn that follows it."""
        if again:
            self.loop.call_soon(self._settle, False)
            return
        self._settling = False
        self._flush_ended = self.loop.time()
        self._flush_took = self._flush_ended - self._flush_started
        if self._unflushed and not self._flush_scheduled:
            self._schedule_flush()

    def watch_heartbeats(self) -> None:
        """Start closing silent connections (once per hub)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = self.spawn(self._sweep())

    async def _sweep(self) -> None:
        while self.connections:
            await asyncio.sleep(conf.HEARTBEAT_MS / 2000)
            now = self.timer()
            slots = [
                slot
                for connection in list(self.connections)
                if (slot := connection.check_heartbeat(now)) is not None
            ]
            if slots:
                # Every live connection's user slot, renewed in one round trip.
                self.spawn(limits.renew_user_slots(slots))

    # feeds

    async def follow(self, stream: str, listener: Listener) -> Feed:
        """Attach ``listener`` to ``stream``'s feed, once the feed knows its baseline.

        The feed starts in a task of the hub's: a listener that goes away meanwhile
        (cancelled) does not stop it for the others, and a start that fails fails for
        every listener waiting on it."""
        feed = self.feeds.get(stream)
        if feed is None or feed.closed:
            feed = self.feeds[stream] = Feed(self, stream)
            feed.starting = self.spawn(feed.start())
        else:
            feed.keep()
        feed.listeners.add(listener)
        try:
            await asyncio.shield(feed.starting)
        except BaseException:
            feed.listeners.discard(listener)
            if feed.starting.done() and not feed.starting.cancelled() and feed.starting.exception():
                self.close_feed(feed)
            elif not feed.listeners:
                feed.linger()
            raise
        return feed

    def unfollow(self, stream: str, listener: Listener) -> None:
        feed = self.feeds.get(stream)
        if feed is None:
            return
        feed.listeners.discard(listener)
        if not feed.listeners:
            feed.linger()

    def close_feed(self, feed: Feed) -> None:
        feed.closed = True
        feed.keep()
        if self.feeds.get(feed.name) is feed:
            del self.feeds[feed.name]
            self.spawn(self.group_discard(feed.group))

    def drop(self, feed: Feed, epoch: str, reason: str) -> None:
        """The feed can no longer continue (epoch changed, trimmed): reset its listeners."""
        listeners = list(feed.listeners)
        feed.listeners.clear()
        self.close_feed(feed)
        for listener in listeners:
            listener.reset(epoch, reason)

    # messages

    async def _receive_loop(self) -> None:
        assert self.layer is not None
        failures = 0
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if idle_timeout(exc):
                    continue
                failures += 1
                logger.warning("Channel layer receive failed; retrying", exc_info=True)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            if failures:
                failures = 0
                self.spawn(self.rejoin())
            try:
                self.dispatch(message)
            except Exception:
                logger.exception("Could not handle a channel-layer message")

    def dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == broadcast.MESSAGE_TYPE:
            feed = self.feeds.get(message["stream"])
            if feed is not None and not feed.closed:
                feed.on_batch(Batch.from_message(message))
        elif kind == presence.MESSAGE_TYPE:
            feed = self.feeds.get(message["stream"])
            if feed is not None and not feed.closed and feed.listeners:
                text = presence.frame(message)
                for listener in list(feed.listeners):
                    listener.presence(text)
        elif kind == REVOKE:
            self._revoke(message.get("user"), message.get("stream"))
        elif kind == PROBE:
            self._probe_seen = self.timer()

    def revocations(self, user_id: str | None) -> tuple[int, int]:
        """How many revocations this hub heard for everyone, and for ``user_id``."""
        return self._revoked.get(None, 0), self._revoked.get(user_id, 0)

    def _revoke(self, user_id: str | None, stream: str | None) -> None:
        self._revoked[user_id] = self._revoked.get(user_id, 0) + 1
        feeds: Iterable[Feed] = (
            self.feeds.values() if stream is None else filter(None, [self.feeds.get(stream)])
        )
        for feed in list(feeds):
            for listener in list(feed.listeners):
                listener.recheck(user_id)

    async def rejoin(self) -> None:
        """Join every group again and catch up from the log: after the channel layer lost
        this process's memberships (a Redis restart), or after receive errors."""
        try:
            await self._join_control()
            for feed in list(self.feeds.values()):
                await self.group_add(feed.group)
        except Exception:
            logger.warning("Could not rejoin the channel-layer groups", exc_info=True)
            return
        for feed in list(self.feeds.values()):
            feed.resync()

    async def _maintain(self) -> None:
        """Every CHECK_INTERVAL: probe that group messages still arrive (a restarted Redis
        forgets memberships), catch up feeds that missed their latest ops, and renew the
        memberships before they expire."""
        assert self.layer is not None
        last_refresh = self.timer()
        while True:
            sent = self.timer()
            try:
                await self.layer.group_send(self._probe_group, {"type": PROBE})
            except Exception:
                logger.warning("Channel layer probe failed", exc_info=True)
            await asyncio.sleep(conf.CHECK_INTERVAL.total_seconds())
            lost = self._probe_seen < sent
            if lost or self.timer() - last_refresh > conf.GROUP_REFRESH.total_seconds():
                if lost:
                    logger.warning("Channel-layer groups stopped delivering; rejoining")
                last_refresh = self.timer()
                await self.rejoin()
            # Also while the channel layer is down: ops keep flowing from the log.
            await self._check_tails()

    async def _check_tails(self) -> None:
        """One query for every followed stream's head; feeds behind it read the log."""
        feeds = {name: feed for name, feed in self.feeds.items() if feed.ready.is_set()}
        if not feeds:
            return
        try:
            heads = await self.run_db(_heads, list(feeds))
        except Exception:
            logger.warning("Could not read the streams' heads", exc_info=True)
            return
        for name, (epoch, head) in heads.items():
            feed = feeds[name]
            if epoch != feed.epoch or head > feed.last:
                feed.resync()


def _with_connection(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    close_old_connections()
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


def _heads(names: list[str]) -> dict[str, tuple[str, int]]:
    from syncapp.models import Stream

    rows = Stream.objects.using(oplog.db_alias()).filter(name__in=names)
    return {name: (epoch, head) for name, epoch, head in rows.values_list("name", "epoch", "head")}


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()
_hub_lock: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def current_hub() -> Hub | None:
    """This event loop's hub, if it has one."""
    return _hubs.get(asyncio.get_running_loop())


async def get_hub() -> Hub:
    """This event loop's hub, started on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is not None:
        await hub._started.wait()
        return hub
    lock = _hub_lock.setdefault(loop, asyncio.Lock())
    async with lock:
        hub = _hubs.get(loop)
        if hub is None:
            alias = conf.CHANNEL_LAYER
            layer = get_channel_layer(alias) if alias is not None else None
            hub = Hub(layer, loop)
            await hub.start()
            _hubs[loop] = hub
    return hub


def user_key(user: Any) -> str | None:
    """How revocations name a user: its pk as text (a UUID does not cross every channel
    layer), None for anonymous users."""
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)


def announce_revocation(user_id: str | None, stream: str | None) -> None:
    """Tell every process's hub to recheck ``user_id``'s listeners (all users when None)."""
    alias = conf.CHANNEL_LAYER
    layer = get_channel_layer(alias) if alias is not None else None
    if layer is not None:
        async_to_sync(layer.group_send)(
            CONTROL_GROUP, {"type": REVOKE, "user": user_id, "stream": stream}
        )
