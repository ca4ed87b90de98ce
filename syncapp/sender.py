"""Channel-layer sends from the threads that apply mutations, without waiting for them.

Under an ASGI server a mutation runs in a thread of ``sync_to_async``, and its ops are
broadcast after commit. ``async_to_sync(layer.group_send)`` would make that thread wait
for the event loop, which may be busy for tens of milliseconds writing the previous ops
to a thousand sockets; every mutation after it would wait too. Instead the message is
queued for the loop, and one task per loop and layer sends the queue in order.

Nothing is lost that the layer would have kept: the ops are committed before they are
queued, and a message lost with its process (or dropped by the layer) is read from the
log by every hub that follows the stream (invariant 3, ``syncapp.hub``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections import deque
from typing import Any

from asgiref.sync import SyncToAsync

logger = logging.getLogger("syncapp.broadcast")


def serving_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop this thread works for (set by ``sync_to_async``), or None
    outside such a thread (a management command, WSGI, the loop's own thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return None  # the loop's own thread: the caller can await
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop: asyncio.AbstractEventLoop | None = getattr(local, "main_event_loop", None)
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    return loop


class Sender:
    """Sends queued ``group_send`` messages on one loop through one layer, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, layer: Any) -> None:
        self.loop = loop
        self.layer = layer
        self.queue: deque[tuple[str, dict[str, Any]]] = deque()
        self.lock = threading.Lock()
        self.draining = False

    def put(self, group: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for ``group``; callable from any thread, never waits."""
        with self.lock:
            self.queue.append((group, message))
            if self.draining:
                return
            self.draining = True
        self.loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    self.draining = False
                    return
                group, message = self.queue.popleft()
            try:
                await self.layer.group_send(group, message)
            except Exception:
                logger.warning(
                    "Could not broadcast ops %s..%s of %s",
                    message.get("first"),
                    message.get("last"),
                    message.get("stream"),
                    exc_info=True,
                )


_senders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Sender]] = (
    weakref.WeakKeyDictionary()
)
_senders_lock = threading.Lock()


def send_later(loop: asyncio.AbstractEventLoop, layer: Any, group: str, message: Any) -> None:
    """Queue ``message`` for ``group`` on ``loop``'s sender for ``layer``."""
    with _senders_lock:
        by_layer = _senders.setdefault(loop, {})
        sender = by_layer.get(id(layer))
        if sender is None or sender.layer is not layer:
            sender = by_layer[id(layer)] = Sender(loop, layer)
    sender.put(group, message)
