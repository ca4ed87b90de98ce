"""What happens to a stream, and feeds that deliver it to whoever is listening."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from syncapp.protocol import OpMessage

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SnapshotLoaded:
    """The stream's objects were replaced by a snapshot as of ``(epoch, seq)``."""

    stream: str
    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class OpApplied:
    """An op was applied to the stream's objects (each op once, in seq order)."""

    op: OpMessage


@dataclass(frozen=True, slots=True)
class GapDetected:
    """An op did not follow the last one; the client asked the server for what is missing."""

    stream: str
    epoch: str | None
    seq: int
    received_epoch: str
    received_seq: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The server could not resume the stream; a snapshot follows."""

    stream: str
    epoch: str
    reason: str


StreamEvent = SnapshotLoaded | OpApplied | GapDetected | StreamReset

Listener = Callable[[StreamEvent], None]


class _End:
    """Put in a feed's queue after the last event."""


_END = _End()


class Feed(Generic[T]):
    """An async iterator over a stream's events from the moment it was created.

    It buffers without bound: a consumer that stops reading should close it (``with``,
    or :meth:`close`). It ends when the stream is unsubscribed or the client closes, and
    raises the error when the subscription failed.
    """

    def __init__(
        self,
        pick: Callable[[StreamEvent], T | None],
        on_close: Callable[[Feed[T]], None],
    ) -> None:
        self._pick = pick
        self._on_close = on_close
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue()
        self._error: BaseException | None = None
        self._closed = False

    def _push(self, event: StreamEvent) -> None:
        item = self._pick(event)
        if item is not None:
            self._queue.put_nowait(item)

    def _end(self, error: BaseException | None = None) -> None:
        if not self._closed:
            self._error = error
            self._closed = True
            self._queue.put_nowait(_END)

    def close(self) -> None:
        """Stop receiving events; iteration ends after what is already buffered."""
        self._end()
        self._on_close(self)

    def __aiter__(self) -> Feed[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if isinstance(item, _End):
            # Leave the marker for any other task iterating the same feed.
            self._queue.put_nowait(item)
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        return item

    def __enter__(self) -> Feed[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
