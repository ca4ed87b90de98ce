"""``SyncClient``: one logical connection to a syncapp server that outlives real ones."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Literal

from syncapp.client import codes
from syncapp.client.backoff import Backoff
from syncapp.client.connection import TokenProvider, validate_url
from syncapp.client.errors import (
    ClientClosed,
    ClientError,
    FrameTooLarge,
    ProtocolRejected,
    SubscriptionError,
)
from syncapp.client.frames import (
    AckFrame,
    ErrorFrame,
    OpsFrame,
    PresenceFrame,
    PresenceStateFrame,
    ResetFrame,
    ServerFrame,
    SnapshotFrame,
    SubscribedFrame,
    WelcomeFrame,
)
from syncapp.client.mutations import (
    RETRYABLE_FRAME_ERRORS,
    MutationLike,
    Outbox,
    PendingFrame,
    Sleep,
    chunks,
    deliver,
    normalize,
)
from syncapp.client.reconnect import Reconnect
from syncapp.client.session import Dial, Outcome, Session
from syncapp.client.streams import StreamHandle
from syncapp.protocol import (
    CLIENT_ID_PATTERN,
    PROTOCOL_VERSION,
    STREAM_PATTERN,
    MutateFrame,
    Mutation,
    MutationResult,
    UnsubscribeFrame,
)
from syncapp.protocol import (
    PresenceFrame as PresenceSetFrame,
)

logger = logging.getLogger("syncapp.client")

ConnectionState = Literal["idle", "connecting", "connected", "waiting", "closed"]

# Errors after which the server sends a stream no more (refused, or access revoked).
_ENDS_SUBSCRIPTION = frozenset({"not_authenticated", "permission_denied"})


class SyncClient:
    """An asyncio client for protocol version 1 (docs/client.md).

    It connects, says ``hello``, follows streams from snapshots and ops, and sends
    mutations. When the connection drops it reconnects with backoff (to the next URL,
    when there are several), resubscribes every stream from its last position and
    resends every mutation that has no answer yet, under the same id.

    Override the ``on_*`` hooks in a subclass to watch the connection.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        client_id: str | None = None,
        token: str | TokenProvider | None = None,
        headers: Mapping[str, str] | None = None,
        origin: str | None = None,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_message_bytes: int | None = 64 * 2**20,
        max_batch: int = 100,
        max_mutation_attempts: int = 8,
    ) -> None:
        listed = [urls] if isinstance(urls, str) else list(urls)
        if not listed:
            raise ValueError("SyncClient needs at least one URL.")
        if client_id is not None and not re.match(CLIENT_ID_PATTERN, client_id):
            raise ValueError(f"client_id must match {CLIENT_ID_PATTERN}.")
        if max_batch < 1 or max_mutation_attempts < 1:
            raise ValueError("max_batch and max_mutation_attempts must be at least 1.")
        self.urls: tuple[str, ...] = tuple(validate_url(url) for url in listed)
        self.client_id = client_id or f"py-{uuid.uuid4().hex}"
        self.backoff = backoff or Backoff()
        self._token = token
        self._dial = Dial(
            origin, dict(headers or {}), open_timeout, close_timeout, max_message_bytes
        )
        self._sleep = sleep
        self._max_batch = max_batch
        self._max_mutation_attempts = max_mutation_attempts

        self.state: ConnectionState = "idle"
        self.url: str | None = None
        """The URL of the current (or last) connection."""
        self.welcome: WelcomeFrame | None = None
        """The current (or last) connection's parameters."""
        self.connection_count = 0
        """Connections that reached ``welcome``; more than one means it reconnected."""
        self.error: BaseException | None = None
        """Why the client stopped on its own (``None`` while running or after ``close()``)."""

        self._streams: dict[str, StreamHandle] = {}
        self._outbox = Outbox()
        self._session: Session | None = None
        self._connected = asyncio.Event()
        self._refs = itertools.count(1)
        self._run_task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()
        self._closing = False

    # Hooks: no-ops to override.

    def on_connect(self, welcome: WelcomeFrame) -> None:
        """A connection reached ``welcome``; resubscribing follows."""

    def on_disconnect(self, code: int | None, reason: str) -> None:
        """A connection that reached ``welcome`` closed (``code`` ``None``: no close frame)."""

    def on_error(self, frame: ErrorFrame) -> None:
        """The server sent an ``error`` frame (the client handles it after this)."""

    def on_presence(self, frame: PresenceFrame | PresenceStateFrame) -> None:
        """A ``presence`` or ``presence_state`` frame arrived."""

    # Lifecycle.

    async def connect(self) -> None:
        """Start connecting, and keep reconnecting; return once connected.

        Raises what stopped the client if it stops first: :class:`ConnectionFailed`
        after ``backoff.max_attempts`` failures in a row, :class:`TokenRejected`,
        :class:`ProtocolRejected`, :class:`HandshakeRejected`.
        """
        if self._closing:
            raise ClientClosed("The client is closed.")
        if self._run_task is None:
            self._run_task = asyncio.create_task(self._run(), name=f"syncapp {self.client_id}")
        await self.wait_connected()

    async def wait_connected(self) -> None:
        """Wait until a connection is ready; raise if the client stops first."""
        run = self._started()
        if self._connected.is_set():
            return
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({waiter, run}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._connected.is_set():
            raise self._stop_error()

    async def wait_closed(self) -> None:
        """Wait until the client stops; raise what stopped it, unless it was ``close()``."""
        await asyncio.wait({self._started()})
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Close the connection and stop; waiting calls get :class:`ClientClosed`."""
        self._closing = True
        run = self._run_task
        if run is not None and not run.done():
            run.cancel()
            try:
                await run
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._shutdown(None)

    async def __aenter__(self) -> SyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # Streams.

    @property
    def streams(self) -> Mapping[str, StreamHandle]:
        """The subscribed streams by name."""
        return MappingProxyType(self._streams)

    async def subscribe(self, stream: str) -> StreamHandle:
        """Follow ``stream``; return its handle once the server confirmed it.

        The first subscribe loads a snapshot; later ones (after a reconnect, a gap) resume
        from the handle's position. Subscribing again returns the same handle. Raises
        :class:`SubscriptionError` if the server refuses.
        """
        self._check_running()
        if not re.match(STREAM_PATTERN, stream):
            raise ValueError(f"Stream names match {STREAM_PATTERN}.")
        handle = self._streams.get(stream)
        if handle is None:
            handle = self._streams[stream] = StreamHandle(stream)
            if self._session is not None:
                await self._send_subscribe(self._session, handle)
        await handle.wait_ready()
        return handle

    async def set_presence(self, stream: str, state: Mapping[str, object]) -> None:
        """Be present in ``stream`` (followed with :meth:`subscribe`) with ``state``: a
        cursor, a typing flag, anything small. The server forwards it to the stream's
        other readers, at most ``PRESENCE_RATE`` times a second, the latest winning; the
        client announces it again after every reconnect."""
        handle = self._streams.get(stream)
        if handle is None:
            raise ClientError(f"Subscribe to {stream} before setting presence there.")
        handle._presence = dict(state)
        if self._session is not None and handle.live:
            await self._send_presence(self._session, handle)

    async def unsubscribe(self, stream: str) -> None:
        """Stop following ``stream``; its handle's feeds end."""
        handle = self._streams.pop(stream, None)
        if handle is None:
            return
        handle._end()
        if self._session is not None:
            await self._session.send(UnsubscribeFrame(stream=stream, ref=next(self._refs)))

    # Mutations.

    async def mutate(self, mutations: Iterable[MutationLike]) -> list[MutationResult]:
        """Send ``mutations``; return their results, in the same order.

        Each mutation keeps its id (one is assigned if it has none) through every resend
        and retry: a frame whose ``ack`` was lost to a disconnect goes out again after the
        reconnect, results marked ``error.retry`` are retried with backoff up to
        ``max_mutation_attempts`` times (then returned as they are), and ``rate_limited``
        waits ``retry_after_ms``. More than ``max_batch`` mutations go in several frames,
        one after the other. Raises :class:`MutationError` when the server refuses a frame
        as a whole, :class:`FrameTooLarge` for one over ``max_frame_bytes``.
        """
        self._check_running()
        batch = [normalize(mutation) for mutation in mutations]
        results: list[MutationResult] = []
        welcome = self.welcome
        size = min(self._max_batch, (welcome.max_batch if welcome else None) or self._max_batch)
        for frame in chunks(batch, size):
            results += await deliver(
                frame,
                self._exchange,
                backoff=self.backoff,
                sleep=self._sleep,
                max_attempts=self._max_mutation_attempts,
            )
        return results

    async def _exchange(self, mutations: list[Mutation]) -> AckFrame | ErrorFrame:
        """Send one ``mutate`` frame, now or on the next connection; wait for its answer."""
        pending = self._outbox.add(mutations)
        try:
            if self._session is not None:
                await self._send_mutate(self._session, pending)
            return await pending.answer
        finally:
            self._outbox.remove(pending)

    # The connection loop.

    async def _run(self) -> None:
        policy = Reconnect(self.backoff, can_refresh_token=callable(self._token))
        for attempt in itertools.count():
            # Round robin: after a failure the next URL is as likely to work as this one,
            # and a killed process must not hold its clients back from the others.
            url = self.urls[attempt % len(self.urls)]
            try:
                delay = policy.after(url, await self._attempt(url))
            except ClientError as exc:
                self._shutdown(exc)
                return
            except Exception as exc:  # a bug: stop loudly rather than spin
                logger.exception("The syncapp client stopped.")
                self._shutdown(exc)
                return
            if delay is not None:
                self.state = "waiting"
                logger.info("Reconnecting in %.2f s.", delay)
                await self._sleep(delay)

    async def _attempt(self, url: str) -> Outcome:
        self.state = "connecting"
        try:
            token = await self._fetch_token()
        except Exception as exc:  # like a failed connection: the token service may be back
            logger.warning("Fetching a token failed: %r", exc)
            return Outcome(None, f"no token: {exc!r}", welcomed=False)
        session = await Session.open(url, token, self._dial)
        if isinstance(session, Outcome):
            return session
        try:
            welcome = await session.hello(self.client_id, self._dial.open_timeout, self.on_error)
            if isinstance(welcome, Outcome):
                return welcome
            if welcome.protocol != PROTOCOL_VERSION:
                raise ProtocolRejected(f"{url} speaks protocol {welcome.protocol}.")
            self._opened(session, welcome)
            outcome = Outcome(None, "connection lost", welcomed=True)
            try:
                await self._replay(session)
                outcome = await session.run(functools.partial(self._dispatch, session))
            finally:
                self._closed(session, outcome)
            return outcome
        finally:
            await session.close()

    def _opened(self, session: Session, welcome: WelcomeFrame) -> None:
        self._session = session
        self.welcome, self.url = welcome, session.url
        self.connection_count += 1
        self.state = "connected"
        self._connected.set()
        self.on_connect(welcome)

    def _closed(self, session: Session, outcome: Outcome) -> None:
        if self._session is session:
            self._session = None
        self._connected.clear()
        if outcome.code == codes.MESSAGE_TOO_BIG and session.welcome is not None:
            # The server refused a frame we sent, so sending it again would only close the
            # next connection too. Which one it was is not said; the largest is the suspect.
            culprit = self._outbox.largest_sent_on(session)
            if culprit is not None:
                limit = session.welcome.max_frame_bytes
                self._outbox.fail(culprit, FrameTooLarge(culprit.size, limit))
        for handle in self._streams.values():
            handle._on_disconnect()
        self.on_disconnect(outcome.code, outcome.reason)

    async def _replay(self, session: Session) -> None:
        """Bring a new connection up to date: every stream from its position, then every
        mutation without an answer, under the same ids."""
        for handle in list(self._streams.values()):
            if not handle._sent_on(session) and not handle.ended:
                await self._send_subscribe(session, handle)
        for pending in self._outbox.unsent(session):
            await self._send_mutate(session, pending)

    # Frames in, in the order they arrive on one connection.

    async def _dispatch(self, session: Session, frame: ServerFrame) -> None:
        if isinstance(frame, AckFrame):
            if not self._outbox.answer(frame.ref, frame):
                logger.warning("An ack for ref %r, which nothing waits for.", frame.ref)
        elif isinstance(frame, ErrorFrame):
            self._on_error_frame(session, frame)
        elif isinstance(frame, PresenceFrame | PresenceStateFrame):
            presence_of = self._streams.get(frame.stream)
            if presence_of is not None:
                presence_of._on_presence(frame)
            self.on_presence(frame)
        elif isinstance(frame, OpsFrame | SnapshotFrame | SubscribedFrame | ResetFrame):
            handle = self._streams.get(frame.stream)
            if handle is None:
                return  # unsubscribed meanwhile
            if isinstance(frame, OpsFrame):
                if handle._on_ops(frame):
                    await self._send_subscribe(session, handle)
            elif isinstance(frame, SnapshotFrame):
                handle._on_snapshot(frame)
            elif isinstance(frame, SubscribedFrame):
                handle._on_subscribed(frame)
                if handle._presence is not None:  # announce again, after a reconnect too
                    await self._send_presence(session, handle)
            else:
                handle._on_reset(frame)
                await self._send_subscribe(session, handle)

    def _on_error_frame(self, session: Session, frame: ErrorFrame) -> None:
        self.on_error(frame)
        if frame.ref is not None and self._outbox.answer(frame.ref, frame):
            return
        handle = None
        if frame.ref is not None:
            handle = next((h for h in self._streams.values() if h._ref == frame.ref), None)
        if handle is None and frame.stream is not None and frame.code in _ENDS_SUBSCRIPTION:
            handle = self._streams.get(frame.stream)
        if handle is None:
            logger.warning("The server sent error %s: %s", frame.code, frame.message)
        elif frame.code in RETRYABLE_FRAME_ERRORS or frame.code == "rate_limited":
            # A rate limit says how long to wait; an internal error gets a short backoff.
            delay = max(self.backoff.delay(0), (frame.retry_after_ms or 0) / 1000)
            self._later(delay, lambda: self._resubscribe(session, handle))
        else:
            del self._streams[handle.name]
            handle._end(SubscriptionError(handle.name, frame.code, frame.message))

    async def _resubscribe(self, session: Session, handle: StreamHandle) -> None:
        if self._session is session and self._streams.get(handle.name) is handle:
            await self._send_subscribe(session, handle)

    def _later(self, delay: float, work: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await self._sleep(delay)
            await work()

        task = asyncio.create_task(run())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    # Frames out.

    async def _send_subscribe(self, session: Session, handle: StreamHandle) -> None:
        await session.send(handle._subscribe_frame(next(self._refs), session))

    async def _send_presence(self, session: Session, handle: StreamHandle) -> None:
        state = handle._presence or {}
        await session.send(PresenceSetFrame(stream=handle.name, state=state, ref=next(self._refs)))

    async def _send_mutate(self, session: Session, pending: PendingFrame) -> None:
        ref = next(self._refs)
        self._outbox.sending(pending, ref, session)
        try:
            pending.size = await session.send(MutateFrame(mutations=pending.mutations, ref=ref))
        except FrameTooLarge as exc:
            self._outbox.fail(pending, exc)

    # Helpers.

    async def _fetch_token(self) -> str | None:
        # Called for every connection: tokens are short-lived and only checked when
        # connecting, so the previous connection's token may have expired.
        if self._token is None or isinstance(self._token, str):
            return self._token
        return await self._token()

    def _started(self) -> asyncio.Task[None]:
        if self._run_task is None:
            raise ClientError("Call connect() (or use `async with`) first.")
        return self._run_task

    def _check_running(self) -> None:
        if self._started().done() or self._closing:
            raise self._stop_error()

    def _stop_error(self) -> BaseException:
        return self.error or ClientClosed("The client is closed.")

    def _shutdown(self, error: BaseException | None) -> None:
        """Stop for good: end every stream and fail every waiting call."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.error = error
        self._connected.clear()
        for task in self._timers:
            task.cancel()
        if error is not None:
            logger.error("The syncapp client stopped: %s", error)
        for handle in self._streams.values():
            handle._end(error)
        self._outbox.fail_all(error or ClientClosed("The client is closed."))
