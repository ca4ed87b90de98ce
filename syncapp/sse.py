"""The SSE transport, through django-eventstream, with the op log as its storage.

The event id is the seq (django-eventstream writes it as ``<channel>:<seq>``), so the
browser's ``Last-Event-ID`` resumes from the log; a position the log cannot serve gets
django-eventstream's ``stream-reset``. A request that resumes from a position is caught
up by :class:`EventsView` itself, straight from the log in large pages, then handed to
django-eventstream for the live part. Live events come from the process's hub: while a
stream has SSE readers in this process, one tap hands each batch to django-eventstream's
listeners. Settings (docs/quickstart.md)::

    EVENTSTREAM_STORAGE_CLASS = "syncapp.sse.OpLogStorage"
    EVENTSTREAM_CHANNELMANAGER_CLASS = "syncapp.sse.ChannelManager"
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast
from urllib.parse import quote, unquote

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.module_loading import import_string
from django_eventstream.channelmanager import DefaultChannelManager
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase
from django_eventstream.utils import (
    add_default_headers,
    make_id,
    sse_encode_error,
    sse_encode_event,
)
from django_eventstream.views import events, get_listener_manager
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request

from syncapp import oplog, permissions
from syncapp.api.renderers import MsgspecJSONRenderer
from syncapp.api.views import ERRORS, STREAM_PARAM, AsyncSyncAPIView
from syncapp.conf import conf
from syncapp.exceptions import InvalidInput, ResetRequired
from syncapp.hub import Batch, Hub, get_hub
from syncapp.models import Stream

logger = logging.getLogger("syncapp.sse")

PREFIX = "syncapp:"
EVENT_TYPE = "message"
_LAST_ID = re.compile(r"^[0-9]{1,19}$")
MAX_SEQ = 2**63 - 1  # as everywhere else: a seq is a signed 64-bit integer
_EVENT_ID = re.compile(r"^event: (message|stream-reset)\nid: \S*:([0-9]+)$", re.MULTILINE)
_EPOCH = re.compile(r'^data: \{"stream":"[^"]*","epoch":"([^"]*)"', re.MULTILINE)


def channel_for(stream: str) -> str:
    """The django-eventstream channel of a stream."""
    return PREFIX + stream


def stream_of(channel: str) -> str | None:
    """The stream of a syncapp channel; None for other channels."""
    return channel[len(PREFIX) :] if channel.startswith(PREFIX) else None


@lru_cache(maxsize=1)
def _fallback(path: str | None) -> StorageBase | None:
    return import_string(path)() if path else None


class OpLogStorage(StorageBase):  # type: ignore[misc]
    """django-eventstream storage that reads syncapp channels from the op log; other
    channels go to ``SYNCAPP["SSE_FALLBACK_STORAGE"]`` if set."""

    def append_event(self, channel: str, event_type: str, data: Any) -> Event:
        if stream_of(channel) is None and (fallback := _fallback(conf.SSE_FALLBACK_STORAGE)):
            return fallback.append_event(channel, event_type, data)
        raise TypeError(
            f"{channel}: syncapp streams are written through the ORM, not send_event()."
        )

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        stream = stream_of(channel)
        if stream is None:
            fallback = _fallback(conf.SSE_FALLBACK_STORAGE)
            return fallback.get_events(channel, last_id, limit) if fallback else []
        try:
            page = oplog.read(stream, epoch=None, after=last_id, limit=limit)
        except ResetRequired as exc:
            head = oplog.head_of(stream).head
            raise EventDoesNotExist(f"Cannot resume {stream}: {exc.reason}", head) from exc
        except InvalidInput as exc:
            raise EventDoesNotExist(exc.message, oplog.head_of(stream).head) from exc
        return [Event(channel, EVENT_TYPE, op.encoded, id=op.seq) for op in page.ops]

    def get_current_id(self, channel: str) -> int:
        stream = stream_of(channel)
        if stream is None:
            fallback = _fallback(conf.SSE_FALLBACK_STORAGE)
            return fallback.get_current_id(channel) if fallback else 0
        return oplog.head_of(stream).head


class ChannelManager(DefaultChannelManager):  # type: ignore[misc]
    """Who may read a syncapp channel: the permission hook, as everywhere else."""

    def can_read_channel(self, user: Any, channel: str) -> bool:
        stream = stream_of(channel)
        if stream is None:
            return bool(super().can_read_channel(user, channel))
        return permissions.get_permission().can_read(user or AnonymousUser(), stream)

    def is_channel_reliable(self, channel: str) -> bool:
        return stream_of(channel) is not None or bool(super().is_channel_reliable(channel))


class Tap:
    """The one hub listener per stream and process that feeds django-eventstream."""

    def __init__(self, hub: Hub, stream: str) -> None:
        self.hub = hub
        self.stream = stream
        self.channel = channel_for(stream)
        self.readers = 0
        self._following: asyncio.Task[Any] | None = None

    async def follow(self) -> None:
        """Attach to the stream's feed, once for all of this process's readers."""
        if self._following is None:
            self._following = self.hub.spawn(self.hub.follow(self.stream, self))
        following = self._following
        try:
            await asyncio.shield(following)
        except Exception:
            if self._following is following:
                self._following = None  # the next reader tries again
            raise

    def deliver(self, batch: Batch) -> None:
        manager = get_listener_manager()
        for seq, text in zip(range(batch.first, batch.last + 1), batch.ops, strict=True):
            manager.add_to_queues(self.channel, Event(self.channel, EVENT_TYPE, text, id=seq))

    def reset(self, epoch: str, reason: str) -> None:
        # The history was reset (or trimmed past the feed): follow the stream afresh. A
        # reader that meets an op of the new epoch is sent a reset and closed (_once).
        self._following = None
        if self.readers:
            self.hub.spawn(self.follow())

    def recheck(self, user_id: Any) -> None:
        self.hub.spawn(self._recheck(user_id))

    def presence(self, frame: str) -> None:
        pass  # presence is a WebSocket feature

    async def _recheck(self, user_id: Any) -> None:
        denied = await self.hub.run_db(_denied_readers, self.stream, user_id)
        manager = get_listener_manager()
        for reader in denied:
            manager.kick(reader, self.channel)


def _denied_readers(stream: str, user_id: Any) -> list[Any]:
    """The ids, among those reading ``stream`` here, whose access the hook now refuses."""
    manager = get_listener_manager()
    channel = channel_for(stream)
    with manager.lock:
        readers = {listener.user_id for listener in manager.listeners_by_channel.get(channel, ())}
    if user_id is not None:
        readers = {reader for reader in readers if str(reader) == user_id}
    users = get_user_model()._default_manager.in_bulk(r for r in readers if r != "anonymous")
    denied = []
    for reader in readers:
        user = AnonymousUser() if reader == "anonymous" else users.get(reader)
        if user is None or not permissions.may_read(user, stream):
            denied.append(reader)
    return denied


_taps: dict[tuple[Hub, str], Tap] = {}


async def _after_reset(body: AsyncIterator[Any], channel: str, head: int) -> AsyncIterator[Any]:
    """django-eventstream's own ``stream-reset`` event after its opening, then ``body``."""
    reset = _reset_event(channel, head)
    first = True
    async for chunk in body:
        if first:
            first = False
            chunk = (chunk.decode() if isinstance(chunk, bytes) else chunk) + reset
        yield chunk


async def _once(
    body: AsyncIterator[Any], channel: str, epoch: str, after: int
) -> AsyncGenerator[Any]:
    """``body`` without the events it repeats, and ended by a reset at a new epoch.

    When an event arrives while django-eventstream reads its storage, it throws the
    queue away and reads again from the position the request started at, so it sends
    what it sent already (its own FIXME). Ops carry their seq in the event id, so the
    repeats are dropped here and every op goes out once, in order.

    SSE ids carry no epoch: after the stream's history is reset, django-eventstream
    would go on from its old position in the new history. The first op of another epoch
    ends the response with a ``stream-reset`` (django-eventstream's own event) instead:
    the client loads a snapshot and reconnects from it.
    """
    last = after
    async for chunk in body:
        text = chunk.decode() if isinstance(chunk, bytes) else str(chunk)
        kept = []
        for block in text.split("\n\n"):
            if block.startswith("event: stream-error"):
                # django-eventstream goes on reading after it reports an error (a kicked
                # reader whose stale user the hook still accepts): the error ends it.
                kept.append(block)
                yield "\n\n".join(kept).encode() + b"\n\n"
                return
            match = _EVENT_ID.search(block)
            if match is not None:
                seq = int(match[2])
                if match[1] == "stream-reset":
                    last = seq  # the stream restarts at the head
                elif (found := _EPOCH.search(block)) is not None and found[1] != epoch:
                    kept.append(_reset_event(channel, 0).rstrip("\n"))
                    yield "\n\n".join(kept).encode() + b"\n\n"
                    return
                elif seq <= last:
                    continue
                else:
                    last = seq
            kept.append(block)
        out = "\n\n".join(kept)
        if out.strip():
            yield out.encode()


def _reset_event(channel: str, seq: int) -> str:
    return str(
        sse_encode_event(
            "stream-reset",
            {"channels": [channel]},
            event_id=make_id({channel: seq}),
            json_encode=True,
        )
    )


async def _tapped(stream: str, body: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``body`` with this process's tap on ``stream`` held open while it streams."""
    hub = await get_hub()
    tap = _taps.get((hub, stream))
    if tap is None:
        tap = _taps[(hub, stream)] = Tap(hub, stream)
    tap.readers += 1
    try:
        await tap.follow()
        async for chunk in body:
            yield chunk
    finally:
        tap.readers -= 1
        if tap.readers == 0:
            hub.unfollow(stream, tap)
            if _taps.get((hub, stream)) is tap:
                del _taps[(hub, stream)]


def _position(request: HttpRequest, channel: str) -> int | None:
    """The seq the request resumes after, if it names one for ``channel``.

    django-eventstream fails mid-stream on ids like ``<channel>:abc``: they are refused
    here instead, with :class:`InvalidInput`.
    """
    value = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId") or ""
    found: list[int] = []
    for part in filter(None, value.split(",")):
        name, _, last = part.rpartition(":")
        if unquote(name) == channel:
            if not _LAST_ID.match(last.strip()) or int(last) > MAX_SEQ:
                raise InvalidInput(
                    "Last-Event-ID must be <channel>:<seq>.", code="invalid_position"
                )
            found.append(int(last))
    if len(found) > 1:
        raise InvalidInput("Last-Event-ID names the stream twice.", code="invalid_position")
    return found[0] if found else None


# The catch-up: a request that resumes from a position is served from the log by syncapp
# itself, in large pages of already formatted events, then handed to django-eventstream.

#: What django-eventstream's stream opens with: padding, then ``stream-open``.
OPENING = ":" + " " * 2048 + "\n\n" + "event: stream-open\ndata:\n\n"
#: Rows per query of the catch-up: a small first page so that the client starts at once,
#: then large ones.
CATCH_UP_PAGES = (1000, 5000)


class PageEncoder:
    """Formats rows of :func:`syncapp.oplog.read_rows` as the SSE text that
    django-eventstream writes for the same ops through :class:`OpLogStorage`, byte for
    byte: ``event: message``, ``id: <channel>:<seq>``, ``data:`` the op's JSON as it was
    encoded when it was written."""

    def __init__(self, channel: str, epoch: str) -> None:
        self.epoch = epoch
        self.id_prefix = f"event: {EVENT_TYPE}\nid: {quote(channel)}:"
        self.id_prefix_bytes = self.id_prefix.encode()

    def encode(self, page: oplog.RowPage) -> bytes:
        """The ops of ``page`` as one piece of SSE text (UTF-8)."""
        rows, seqs = page.rows, range(page.first, page.first + len(page.rows))
        if rows and isinstance(rows[0][0], bytes):  # SQLite's: framed as bytes
            raw = self.id_prefix_bytes
            return b"".join(
                [
                    b"%b%d\ndata: %b\n\n" % (raw, seq, blob)
                    for seq, (blob,) in zip(seqs, cast("list[tuple[bytes]]", rows), strict=True)
                ]
            )
        prefix = self.id_prefix
        return "".join(
            [
                f"{prefix}{seq}\ndata: {text}\n\n"
                for seq, (text,) in zip(seqs, cast("list[tuple[str]]", rows), strict=True)
            ]
        ).encode()


@dataclass(frozen=True, slots=True)
class _Page:
    """One page of the catch-up: SSE text, and where it leaves the reader."""

    text: bytes
    last: int  # the seq of the last op in ``text`` (the position when there are none)
    more: bool  # the head is past ``last``
    end: str | None = None  # SSE text that ends the response: a reset, a stream-error


def _read_page(
    user: Any, stream: str, channel: str, after: int, limit: int, encoder: PageEncoder
) -> _Page:
    """One page of the catch-up after seq ``after``, read and formatted in one thread hop;
    the permission hook is asked again (with the user reloaded) first, as
    django-eventstream does for each of its pages."""
    if not permissions.can_still_read(user, stream):
        message = f"Permission denied to channels: {channel}"
        error = str(sse_encode_error("forbidden", message, extra={"channels": [channel]}))
        return _Page(b"", after, False, end=error)
    try:
        page = oplog.read_rows(stream, epoch=encoder.epoch, after=after, limit=limit)
    except ResetRequired as exc:
        if exc.reason == "epoch_changed":
            # As for a live op of another epoch (_once): the client loads a snapshot.
            return _Page(b"", after, False, end=_reset_event(channel, 0))
        # Trimmed past the position while it was read: django-eventstream's reset, then
        # live from the head, as OpLogStorage does.
        head = oplog.head_of(stream).head
        return _Page(_reset_event(channel, head).encode(), head, False)
    last = after + len(page.rows)
    return _Page(encoder.encode(page), last, last < page.head)


async def _catch_up(
    user: Any, http: HttpRequest, stream: str, epoch: str, after: int
) -> AsyncIterator[bytes]:
    """The response of a request that resumes after seq ``after``: django-eventstream's
    opening, every op after ``after`` from the log, one chunk a page (the next page is
    read while this one is sent), then django-eventstream's live stream from the last
    op sent, so nothing is missed and nothing repeats (it reads the log from there
    before it waits, and _once drops what it repeats)."""
    channel = channel_for(stream)
    yield OPENING.encode()
    encoder = PageEncoder(channel, epoch)
    read = sync_to_async(_read_page)
    limits = iter(CATCH_UP_PAGES)
    limit = next(limits)
    pending: asyncio.Future[_Page] | None = asyncio.ensure_future(
        read(user, stream, channel, after, limit, encoder)
    )
    position = after
    try:
        while pending is not None:
            page = await pending
            pending = None
            position = page.last
            if page.more:
                limit = next(limits, limit)
                pending = asyncio.ensure_future(
                    read(user, stream, channel, position, limit, encoder)
                )
            if page.text:
                yield page.text
            if page.end is not None:
                yield page.end.encode()
                return
    finally:
        if pending is not None:
            pending.cancel()
    # The live part: django-eventstream's own stream, from the last op sent.
    http.META["HTTP_LAST_EVENT_ID"] = make_id({channel: position})
    response = await sync_to_async(events)(http, channels=[channel])
    if not (isinstance(response, StreamingHttpResponse) and response.is_async):
        yield response.content  # an error, as an SSE event
        return
    body = _without_opening(aiter(response.streaming_content))  # type: ignore[arg-type]
    async with aclosing(body), aclosing(_once(body, channel, epoch, position)) as live:
        async for chunk in live:
            yield chunk


async def _without_opening(body: AsyncIterator[Any]) -> AsyncGenerator[Any]:
    """django-eventstream's stream without its opening (sent already by the catch-up)."""
    first = True
    async for chunk in body:
        if first:
            first = False
            text = chunk.decode() if isinstance(chunk, bytes) else str(chunk)
            chunk = text.removeprefix(OPENING)
            if not chunk:
                continue
        yield chunk


def _plain(http: HttpRequest) -> bool:
    """Whether django-eventstream would serve ``http`` as a plain stream (not a GRIP
    request, no signed ``es-meta`` naming channels or a user): those take its own path."""
    grip = getattr(http, "grip", None)
    return not http.GET.get("es-meta") and not (grip is not None and grip.proxied)


def _readable_head(user: Any, stream: str) -> Stream:
    """The stream's head row, once the permission hook lets ``user`` read it (one thread
    hop for both)."""
    permissions.check_read(user, stream)
    return oplog.head_of(stream)


class EventStreamRenderer(MsgspecJSONRenderer):
    """Lets ``Accept: text/event-stream`` through content negotiation; errors stay JSON."""

    media_type = "text/event-stream"
    format = "sse"


class EventsView(AsyncSyncAPIView):
    """``GET <prefix>api/streams/<stream>/events/``: the stream's ops as Server-Sent Events."""

    renderer_classes = [MsgspecJSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="sync_events",
        parameters=[
            STREAM_PARAM,
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                description="<channel>:<seq>, as the last event's id; resumes after it.",
            ),
            OpenApiParameter(
                "lastEventId", str, description="The same, for clients that cannot set the header."
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Events named `message`, each one op as JSON; "
                "`stream-reset` when the position cannot be resumed.",
            ),
            **ERRORS,
        },
    )
    async def get(self, request: Request, stream: str) -> HttpResponseBase:
        oplog.validate_stream_name(stream)
        channel = channel_for(stream)
        http = request._request
        head = await sync_to_async(_readable_head)(request.user, stream)
        after = _position(http, channel)
        reset = after is not None and not (head.oldest_seq - 1 <= after <= head.head)
        if after is None or reset:
            # Start at the head, and say so: left to itself, django-eventstream would
            # re-read from the request's position when an op arrives while it reads, and
            # skip that op (no position) or reset a second time (an unresumable one).
            after = head.head
        if not reset and after < head.head and _plain(http):
            caught_up = StreamingHttpResponse(
                _tapped(stream, _catch_up(request.user, http, stream, head.epoch, after)),
                content_type="text/event-stream",
            )
            add_default_headers(caught_up, request=http)
            return caught_up
        # What django-eventstream parses is exactly the position checked here.
        http.META["HTTP_LAST_EVENT_ID"] = make_id({channel: after})
        response = await sync_to_async(events)(http, channels=[channel])
        if isinstance(response, StreamingHttpResponse) and response.is_async:
            body: AsyncIterator[Any] = aiter(response.streaming_content)  # type: ignore[arg-type]
            if reset:
                body = _after_reset(body, channel, after)
            response.streaming_content = _tapped(stream, _once(body, channel, head.epoch, after))
        return response  # type: ignore[no-any-return]
