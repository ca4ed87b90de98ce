"""One subscribed stream: its authoritative objects, its position, and who is watching it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from syncapp.client.errors import ClientClosed
from syncapp.client.events import (
    Feed,
    GapDetected,
    Listener,
    OpApplied,
    SnapshotLoaded,
    StreamEvent,
    StreamReset,
)
from syncapp.client.frames import (
    OpsFrame,
    PresenceFrame,
    PresenceStateFrame,
    ResetFrame,
    SnapshotFrame,
    SubscribedFrame,
)
from syncapp.protocol import ObjectState, OpMessage, Position, PrimaryKey, SubscribeFrame

logger = logging.getLogger("syncapp.client")

ObjectKey = tuple[str, PrimaryKey]
"""``(model label, pk)``, as the server sends them."""


def _pick_op(event: StreamEvent) -> OpMessage | None:
    return event.op if isinstance(event, OpApplied) else None


def _pick_event(event: StreamEvent) -> StreamEvent:
    return event


class StreamHandle:
    """A stream as the server last described it, kept up to date by the client.

    ``objects`` is authoritative: built from the snapshot and the ops that followed,
    each op applied exactly once and in seq order. Read it, do not write to it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[ObjectKey, ObjectState] = {}
        self.epoch: str | None = None
        self.seq = 0
        self.head: int | None = None
        """The head the server reported in its last ``subscribed``."""
        self.error: BaseException | None = None
        """Why the subscription ended, when the server ended it."""
        # No position worth resuming: never loaded, or the server said ``reset``.
        self._needs_snapshot = True
        # A subscribe is on its way: more gaps until its answer are the same gap.
        self._resyncing = False
        self._ref: int | None = None
        self._session: object | None = None
        self._live = False
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._feeds: set[Feed[Any]] = set()
        self._listeners: list[Listener] = []
        self._ended = False
        self.members: dict[str, Any] = {}
        """Who is present, by connection: ``{"user", "client_id", "state"}`` each."""
        # The state this client announces here (set_presence), None when it does not.
        self._presence: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<StreamHandle {self.name} epoch={self.epoch} seq={self.seq}>"

    def members_by_user(self) -> dict[Any, list[dict[str, Any]]]:
        """The members grouped by user: one entry per person, however many tabs or
        devices they have here. Anonymous members are keyed by their client id."""
        grouped: dict[Any, list[dict[str, Any]]] = {}
        for member, data in self.members.items():
            user = data.get("user") or {}
            key = user.get("id", f"client:{data.get('client_id') or member}")
            grouped.setdefault(key, []).append({"member": member, **data})
        return grouped

    def _on_presence(self, frame: PresenceFrame | PresenceStateFrame) -> None:
        if isinstance(frame, PresenceStateFrame):
            self.members = dict(frame.members)
            return
        self.members.update(frame.joins)
        for member in frame.leaves:
            self.members.pop(member, None)

    @property
    def position(self) -> Position | None:
        """Where the client is in the stream, or ``None`` before the first snapshot."""
        if self.epoch is None:
            return None
        return Position(epoch=self.epoch, seq=self.seq)

    @property
    def live(self) -> bool:
        """Whether the server confirmed the subscription on the current connection."""
        return self._live

    @property
    def ended(self) -> bool:
        """Whether the subscription is over (unsubscribed, refused, client closed)."""
        return self._ended

    def get(self, model: str, pk: PrimaryKey) -> ObjectState | None:
        """The object ``(model, pk)`` as the server holds it, or ``None``."""
        return self.objects.get((model, pk))

    def events(self) -> Feed[StreamEvent]:
        """Every :data:`StreamEvent` from now on: ``async for event in handle.events()``."""
        return self._feed(_pick_event)

    def ops(self) -> Feed[OpMessage]:
        """Every op applied from now on, once each, in seq order."""
        return self._feed(_pick_op)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event, synchronously; returns its remover.

        A listener runs inside the client's reader, so it should be quick; an exception
        from it is logged and does not stop the stream.
        """
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def wait_for(self, seq: int, *, timeout: float | None = None) -> None:
        """Wait until ops up to ``seq`` have been applied (``TimeoutError`` after ``timeout``)."""
        if self.seq >= seq and not self._needs_snapshot:
            return
        if self._ended:
            raise self.error or ClientClosed(f"The subscription to {self.name} ended.")
        waiter = asyncio.get_running_loop().create_future()
        entry = (seq, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_ready(self) -> None:
        """Wait for the server's first ``subscribed``, or raise why it never came."""
        await asyncio.shield(self._ready)

    # The client drives everything below; frames arrive in order on one connection.

    def _feed(self, pick: Callable[[StreamEvent], Any]) -> Feed[Any]:
        feed: Feed[Any] = Feed(pick, self._feeds.discard)
        if self._ended:
            feed._end(self.error)
        else:
            self._feeds.add(feed)
        return feed

    def _emit(self, event: StreamEvent) -> None:
        for feed in self._feeds:
            feed._push(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("A listener of stream %s failed.", self.name)

    def _advance(self) -> None:
        for seq, waiter in self._waiters:
            if seq <= self.seq and not waiter.done():
                waiter.set_result(None)

    def _subscribe_frame(self, ref: int, session: object) -> SubscribeFrame:
        """The subscribe to send now: from our position, or for a snapshot."""
        after = None if self._needs_snapshot else self.position
        self._ref = ref
        self._session = session
        self._resyncing = True
        self._live = False
        return SubscribeFrame(stream=self.name, after=after, ref=ref)

    def _sent_on(self, session: object) -> bool:
        return self._session is session

    def _on_snapshot(self, frame: SnapshotFrame) -> None:
        self.objects = {(obj.model, obj.pk): obj for obj in frame.objects}
        self.epoch, self.seq = frame.epoch, frame.seq
        self._needs_snapshot = False
        self._emit(SnapshotLoaded(self.name, frame.epoch, frame.seq))
        self._advance()

    def _on_ops(self, frame: OpsFrame) -> bool:
        """Apply what follows our position; ``True`` when a gap needs a resubscribe."""
        if self._needs_snapshot:
            # Before the snapshot (or after a reset) there is nothing to apply ops to;
            # the snapshot will include them.
            return False
        gap = False
        for op in frame.ops:
            if op.epoch == self.epoch:
                if op.seq <= self.seq:
                    continue  # seen already: a replay overlapping live delivery
                if op.seq == self.seq + 1:
                    self._apply(op)
                    continue
            # A missing seq or another epoch: everything after it in this frame is past
            # the gap too. One resubscribe per gap; its answer covers later ones.
            if not self._resyncing:
                self._emit(GapDetected(self.name, self.epoch, self.seq, op.epoch, op.seq))
                gap = True
            break
        self._advance()
        return gap

    def _apply(self, op: OpMessage) -> None:
        key = (op.model, op.pk)
        if op.op == "delete":
            self.objects.pop(key, None)
        else:
            current = self.objects.get(key)
            fields = dict(op.fields)
            if op.op == "update" and current is not None:
                fields = current.fields | fields
            self.objects[key] = ObjectState(
                model=op.model, pk=op.pk, version=op.version, fields=fields
            )
        self.seq = op.seq
        self._emit(OpApplied(op))

    def _on_subscribed(self, frame: SubscribedFrame) -> None:
        if frame.ref is not None and frame.ref != self._ref:
            return  # the answer to a subscribe that a later one replaced
        self._resyncing = False
        self._live = True
        self.head = frame.head
        if not self._ready.done():
            self._ready.set_result(None)

    def _on_reset(self, frame: ResetFrame) -> None:
        # Keep the objects until the snapshot replaces them: a reader sees old data
        # rather than none.
        self._needs_snapshot = True
        self._live = False
        self._emit(StreamReset(self.name, frame.epoch, frame.reason))

    def _on_disconnect(self) -> None:
        self._live = False
        self._resyncing = False
        self._session = None

    def _end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._live = False
        self.error = error
        failure = error or ClientClosed(f"The subscription to {self.name} ended.")
        if not self._ready.done():
            self._ready.set_exception(failure)
            # Nobody may be waiting; the failure is also in ``error``.
            self._ready.exception()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(failure)
        for feed in list(self._feeds):
            feed._end(error)
        self._feeds.clear()
