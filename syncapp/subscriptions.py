"""One stream followed by one WebSocket connection.

Resuming (invariant 4): the subscription attaches to the stream's feed first, so live
batches are buffered from then on; it sends what the client missed (the snapshot, then
ops from the feed's ring or the log); then it sends the buffer, dropping what was sent
already, and goes live. From then on the feed hands it contiguous batches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from syncapp import oplog, permissions
from syncapp.conf import conf
from syncapp.exceptions import ResetRequired
from syncapp.hub import Batch, Feed, user_key
from syncapp.protocol import Position, Ref

if TYPE_CHECKING:
    from syncapp.consumers import SyncConsumer

logger = logging.getLogger("syncapp.subscriptions")


class Subscription:
    """A hub listener that writes to one connection."""

    def __init__(self, connection: SyncConsumer, stream: str) -> None:
        self.connection = connection
        self.stream = stream
        self.user_id = user_key(connection.user)
        self.epoch = ""
        self.last = 0
        self.live = False
        self.closed = False
        self.feed: Feed | None = None
        self._buffer: list[Batch] = []
        self._buffered = 0
        # Presence changes heard before presence_state was sent; replayed after it (a
        # join sets, a leave removes: replaying one the state already holds is harmless).
        self._presence: list[str] | None = []

    # Listener

    def deliver(self, batch: Batch) -> None:
        if self.ended():
            return
        if not self.live:
            self._hold(batch)
            return
        if batch.first > self.last + 1:
            # The feed hands out contiguous batches; if that ever fails, read the log.
            self.live = False
            self._hold(batch)
            if self.feed is not None:
                self.connection.spawn(self._resume(self.feed))
            return
        self._send(batch)

    def _hold(self, batch: Batch) -> None:
        """Buffer a live batch while catching up. Past OUTBOX_BYTES the buffer is dropped:
        its ops are in the log, which the catch-up keeps reading until it meets the feed."""
        self._buffer.append(batch)
        self._buffered += sum(len(text) for text in batch.ops)
        if self._buffered > conf.OUTBOX_BYTES:
            self._buffer.clear()
            self._buffered = 0

    async def _resume(self, feed: Feed) -> None:
        try:
            await self._catch_up(feed)
        except ResetRequired as exc:
            self.reset(exc.epoch, exc.reason)

    def reset(self, epoch: str, reason: str) -> None:
        if self.ended():
            return
        self.connection.push_frame(
            {"type": "reset", "stream": self.stream, "epoch": epoch, "reason": reason}
        )
        self.connection.end_subscription(self)

    def presence(self, frame: str) -> None:
        if self.ended():
            return
        if self._presence is not None:
            self._presence.append(frame)
        else:
            self.connection.push(frame)

    def recheck(self, user_id: Any) -> None:
        if user_id is None or user_id == self.user_id:
            self.connection.spawn(self._recheck())

    async def _recheck(self) -> None:
        allowed = await database_sync_to_async(permissions.can_still_read)(
            self.connection.user, self.stream
        )
        if not allowed and not self.ended():
            self.connection.push_error(
                "permission_denied", f"Access to {self.stream} was revoked.", stream=self.stream
            )
            self.connection.end_subscription(self)

    # starting

    async def start(self, after: Position | None, ref: Ref | None) -> None:
        """Send what the client missed, then go live. A reset ends the subscription; so
        does a failure, with an ``internal_error`` for this stream alone."""
        try:
            await self._start(after, ref)
        except ResetRequired as exc:
            self.reset(exc.epoch, exc.reason)
        except Exception:
            logger.exception("Could not start the subscription to %s", self.stream)
            if not self.ended():
                self.connection.push_error(
                    "internal_error",
                    f"The server failed to subscribe to {self.stream}; subscribe again.",
                    ref,
                    stream=self.stream,
                )
                self.connection.end_subscription(self)

    async def _start(self, after: Position | None, ref: Ref | None) -> None:
        hub = self.connection.hub
        revocations = hub.revocations(self.user_id)
        self.feed = await hub.follow(self.stream, self)
        if hub.revocations(self.user_id) != revocations:
            await self._recheck()  # revoked between the permission check and now
        if after is None:
            snap = await database_sync_to_async(oplog.snapshot)(self.stream)
            if self.ended():
                return
            self.connection.push_frame(
                {
                    "type": "snapshot",
                    "stream": snap.stream,
                    "epoch": snap.epoch,
                    "seq": snap.seq,
                    "objects": snap.objects,
                }
            )
            self.epoch, self.last = snap.epoch, snap.seq
        else:
            self.epoch, self.last = after.epoch, after.seq
        await self._catch_up(self.feed)
        if self.ended():
            return
        frame: dict[str, Any] = {
            "type": "subscribed",
            "stream": self.stream,
            "epoch": self.epoch,
            "head": self.last,
        }
        if ref is not None:
            frame["ref"] = ref
        self.connection.push_frame(frame)
        members = await hub.presence.state(self.stream)
        if self.ended():
            return
        self.connection.push_frame(
            {"type": "presence_state", "stream": self.stream, "members": members}
        )
        heard, self._presence = self._presence or [], None
        for text in heard:
            self.connection.push(text)

    async def _catch_up(self, feed: Feed) -> None:
        page_size = conf.OPS_PAGE_MAX
        while not self.ended():
            if self.epoch == feed.epoch and not feed.closed:
                recent = feed.recent(self.last)
                if recent is not None:
                    if recent:
                        batch = Batch(self.stream, self.epoch, self.last + 1, feed.last, recent)
                        if not await self._send_paced(batch):
                            return
                    # What arrived meanwhile is buffered, contiguous with the ring.
                    if self._flush():
                        return
                    await asyncio.sleep(0)  # never spin without yielding
                    continue  # the buffer does not join up: read again
            page = await database_sync_to_async(oplog.read)(
                self.stream, epoch=self.epoch, after=self.last, limit=page_size
            )
            read = Batch.from_page(page)
            if read is not None and not await self._send_paced(read):
                return
            # Caught up with the log as it was read: the rest is buffered, in order.
            if len(page.ops) < page_size and self._flush():
                return

    async def _send_paced(self, batch: Batch) -> bool:
        """Send a catch-up in frames the client can take without tripping OUTBOX_BYTES;
        False once the subscription or the connection ended."""
        for part in batch.split(max(1, conf.OUTBOX_BYTES // 4)):
            if not await self.connection.writable() or self.ended():
                return False
            self._send(part)
        return True

    def _flush(self) -> bool:
        """Send the buffer and go live; False if it does not join up with what was sent."""
        buffered, self._buffer = self._buffer, []
        self._buffered = 0
        for batch in buffered:
            if batch.epoch != self.epoch:
                self.reset(batch.epoch, "epoch_changed")
                return True
            if batch.last <= self.last:
                continue
            if batch.first > self.last + 1:
                for later in buffered:
                    if later.last > self.last:
                        self._hold(later)
                return False
            self._send(batch)
        self.live = True
        return True

    def _send(self, batch: Batch) -> None:
        if self.ended() or batch.last <= self.last:
            return
        part = batch.after(self.last)
        self.last = part.last
        self.connection.push(part)

    def ended(self) -> bool:
        """Closed, or its connection is closing (it may change across an await)."""
        return self.closed or self.connection.closing

    def close(self) -> None:
        self.closed = True
        self.connection.hub.unfollow(self.stream, self)
