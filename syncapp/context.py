"""Where a change came from: who, which client, which mutation, which entry point.

Every op records the attribution current when it was appended::

    with syncapp.context.attribute(actor=request.user, source="command"):
        todo.save()
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncapp.models import Op


@dataclass(frozen=True, slots=True)
class Attribution:
    """The origin of the ops appended while it is current."""

    actor_id: Any = None
    client_id: str = ""
    mutation_id: uuid.UUID | None = None
    source: str = ""


_attribution: ContextVar[Attribution] = ContextVar(
    "syncapp_attribution",
    default=Attribution(),  # noqa: B039  (frozen: never mutated)
)
_collected: ContextVar[list[Op] | None] = ContextVar("syncapp_collected", default=None)


def current() -> Attribution:
    """The attribution in effect."""
    return _attribution.get()


@contextmanager
def attribute(
    *,
    actor: Any = None,
    client_id: str | None = None,
    mutation_id: uuid.UUID | None = None,
    source: str | None = None,
) -> Iterator[Attribution]:
    """Attribute the ops appended inside the block; unset arguments keep the outer values."""
    changes: dict[str, Any] = {}
    if actor is not None:
        changes["actor_id"] = actor.pk if hasattr(actor, "pk") else actor
    if client_id is not None:
        changes["client_id"] = client_id
    if mutation_id is not None:
        changes["mutation_id"] = mutation_id
    if source is not None:
        changes["source"] = source
    token = _attribution.set(replace(_attribution.get(), **changes))
    try:
        yield _attribution.get()
    finally:
        _attribution.reset(token)


@contextmanager
def collect_ops() -> Iterator[list[Op]]:
    """Collect the ops appended inside the block, in the order they were appended."""
    ops: list[Op] = []
    token = _collected.set(ops)
    try:
        yield ops
    finally:
        _collected.reset(token)


def note_appended(ops: list[Op]) -> None:
    """Called by the op log for every append."""
    collected = _collected.get()
    if collected is not None:
        collected.extend(ops)
