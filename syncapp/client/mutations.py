"""Mutations on their way: ids assigned once, frames waiting for their ``ack``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from syncapp.client.backoff import Backoff
from syncapp.client.errors import MutationError
from syncapp.client.frames import AckFrame, ErrorFrame
from syncapp.protocol import Mutation, MutationRequest, MutationResult, with_id

T = TypeVar("T")

MutationLike = Mutation | MutationRequest | Mapping[str, Any]
"""A :class:`~syncapp.protocol.Mutation`, or a mapping of its keys (``id`` optional)."""

RETRYABLE_FRAME_ERRORS = frozenset({"internal_error"})
"""``error`` frame codes after which the same ``mutate`` frame may be sent again."""


def normalize(mutation: MutationLike) -> Mutation:
    """``mutation`` as a :class:`Mutation` with an id: the one it has, else a new UUID.

    The id is the idempotency key: it is chosen here once, and every retry and resend
    reuses the returned object, so the server can tell a retry from a new change.
    """
    if isinstance(mutation, Mutation):
        return mutation
    if isinstance(mutation, MutationRequest):
        return with_id(mutation, mutation.id or uuid.uuid4())
    data = dict(mutation)
    if data.get("id") is None:
        data["id"] = uuid.uuid4()
    return msgspec.convert(data, Mutation, strict=False)


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    """``items`` in frames of at most ``size`` (the server's ``MAX_BATCH``)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(eq=False, slots=True)
class PendingFrame:
    """One ``mutate`` frame waiting for its answer, across as many connections as it takes."""

    mutations: list[Mutation]
    answer: asyncio.Future[AckFrame | ErrorFrame]
    ref: int | None = None
    session: object | None = None
    """The connection it was last sent on; another one means it must be sent again."""
    size: int = 0
    """Bytes of the frame as last sent."""


@dataclass(slots=True)
class Outbox:
    """The ``mutate`` frames without an answer, in the order they were made."""

    _pending: dict[int, PendingFrame] = field(default_factory=dict)
    _by_ref: dict[int, PendingFrame] = field(default_factory=dict)

    def add(self, mutations: list[Mutation]) -> PendingFrame:
        pending = PendingFrame(mutations, asyncio.get_running_loop().create_future())
        self._pending[id(pending)] = pending
        return pending

    def remove(self, pending: PendingFrame) -> None:
        self._pending.pop(id(pending), None)
        if pending.ref is not None:
            self._by_ref.pop(pending.ref, None)

    def sending(self, pending: PendingFrame, ref: int, session: object) -> None:
        """``pending`` goes out as ``ref`` on ``session``."""
        if pending.ref is not None:
            self._by_ref.pop(pending.ref, None)
        pending.ref, pending.session = ref, session
        self._by_ref[ref] = pending

    def unsent(self, session: object) -> list[PendingFrame]:
        """What ``session`` has not carried yet, oldest first."""
        return [p for p in self._pending.values() if p.session is not session]

    def answer(self, ref: Any, frame: AckFrame | ErrorFrame) -> bool:
        """Deliver the answer to ``ref``; ``False`` if no frame waits for it."""
        pending = self._by_ref.get(ref) if isinstance(ref, int) else None
        if pending is None:
            return False
        self.remove(pending)
        if not pending.answer.done():
            pending.answer.set_result(frame)
        return True

    def largest_sent_on(self, session: object) -> PendingFrame | None:
        """The biggest frame ``session`` carried that has no answer."""
        sent = [p for p in self._pending.values() if p.session is session]
        return max(sent, key=lambda p: p.size, default=None)

    def fail(self, pending: PendingFrame, error: BaseException) -> None:
        self.remove(pending)
        if not pending.answer.done():
            pending.answer.set_exception(error)

    def fail_all(self, error: BaseException) -> None:
        for pending in list(self._pending.values()):
            self.fail(pending, error)

    def __len__(self) -> int:
        return len(self._pending)


Exchange = Callable[[list[Mutation]], Awaitable[AckFrame | ErrorFrame]]
"""Sends one ``mutate`` frame (on this connection or the next) and returns its answer."""
Sleep = Callable[[float], Awaitable[None]]


def retryable(results: Sequence[MutationResult]) -> list[int]:
    """Indexes of results whose error says "not final: retry with the same id"."""
    return [
        i for i, result in enumerate(results) if result.error is not None and result.error.retry
    ]


async def deliver(
    mutations: list[Mutation],
    exchange: Exchange,
    *,
    backoff: Backoff,
    sleep: Sleep,
    max_attempts: int,
) -> list[MutationResult]:
    """The results of one frame's ``mutations``, in order, retrying what is not final.

    Only the mutations whose result says ``retry`` go out again, under their ids: the
    others are final, and resending them would only fetch the stored result.
    """
    final: list[MutationResult | None] = [None] * len(mutations)
    todo = list(range(len(mutations)))
    failures = 0
    while todo:
        answer = await exchange([mutations[i] for i in todo])
        if isinstance(answer, ErrorFrame):
            if answer.code == "rate_limited":
                # Not a failure: nothing was applied, and the server said when to come back.
                wait = (answer.retry_after_ms or 0) / 1000
                await sleep(wait or backoff.delay(0))
                continue
            failures += 1
            if answer.code not in RETRYABLE_FRAME_ERRORS or failures >= max_attempts:
                raise MutationError(answer.code, answer.message)
            await sleep(backoff.delay(failures - 1))
            continue
        if len(answer.results) != len(todo):
            raise MutationError(
                "invalid", f"{len(answer.results)} results for {len(todo)} mutations."
            )
        for index, result in zip(todo, answer.results, strict=True):
            final[index] = result
        todo = [todo[i] for i in retryable(answer.results)]
        if todo:
            failures += 1
            if failures >= max_attempts:
                break  # the last results, ``retry`` and all, are the answer
            await sleep(backoff.delay(failures - 1))
    return [result for result in final if result is not None]
