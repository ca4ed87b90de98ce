"""Conflict policies: decide, field by field, what a mutation's value does to the row.

Policies (docs/conflicts.md): ``lww`` (last writer wins on hybrid logical clocks),
``version`` (optimistic concurrency), ``manual`` (keep the stale write for a person),
``counter`` (deltas that all count), or a dotted path to a resolver: a callable taking a
:class:`FieldContext` and returning :class:`Apply`, :class:`Keep` or :class:`Queue`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from syncapp import clocks
from syncapp.clocks import Stamp
from syncapp.exceptions import MutationRejected


@dataclass(frozen=True, slots=True)
class Apply:
    """Write ``value``; stamp the field with ``clock`` (None: a fresh server stamp)."""

    value: Any
    clock: Stamp | None = None


@dataclass(frozen=True, slots=True)
class Keep:
    """Keep the server's value; the mutation's result is ``conflict``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Queue:
    """Keep the server's value and record the write as a ``Conflict`` for a person."""

    reason: str


Outcome = Apply | Keep | Queue


@dataclass(frozen=True, slots=True)
class FieldContext:
    """Everything a policy knows about one field of one mutation."""

    name: str
    policy: str
    field_scoped: bool
    client_value: Any
    server_value: Any
    base_version: int | None
    object_version: int
    field_version: int
    client_clock: Stamp | None
    stored_clock: Stamp | None
    user: Any


Resolver = Callable[[FieldContext], Outcome]


def _stale(ctx: FieldContext) -> bool:
    if ctx.base_version is None:
        raise MutationRejected(
            f"{ctx.name} uses the {ctx.policy!r} policy: send base_version, the version your "
            "change was based on.",
            code="base_version_required",
            fields={ctx.name: ["base_version is required."]},
        )
    changed_at = ctx.field_version if ctx.field_scoped else ctx.object_version
    return changed_at > ctx.base_version


def lww(ctx: FieldContext) -> Outcome:
    """The write wins if its clock is newer than the field's; writes without one get now."""
    if ctx.client_clock is None:
        return Apply(ctx.client_value, clocks.server_clock().now(after=ctx.stored_clock))
    if ctx.stored_clock is None or ctx.client_clock > ctx.stored_clock:
        return Apply(ctx.client_value, ctx.client_clock)
    return Keep("A newer write to this field won.")


def version(ctx: FieldContext) -> Outcome:
    """The write wins unless what it checks changed after ``base_version``."""
    if not _stale(ctx) or ctx.client_value == ctx.server_value:
        return Apply(ctx.client_value)
    return Keep("Changed on the server after your base_version.")


def manual(ctx: FieldContext) -> Outcome:
    """Like ``version``, but a stale write is queued for a person to resolve."""
    if not _stale(ctx) or ctx.client_value == ctx.server_value:
        return Apply(ctx.client_value)
    return Queue("Changed on the server after your base_version; queued for resolution.")


def counter(ctx: FieldContext) -> Outcome:
    """The client value is already ``server value + delta`` (see ``mutations``)."""
    return Apply(ctx.client_value)


BUILTIN: dict[str, Resolver] = {
    "lww": lww,
    "version": version,
    "manual": manual,
    "counter": counter,
}


@cache
def resolver_for(policy: str) -> Resolver:
    """The function that implements ``policy``: a built-in name or a dotted path."""
    if policy in BUILTIN:
        return BUILTIN[policy]
    return import_string(policy)  # type: ignore[no-any-return]


def decide(ctx: FieldContext) -> Outcome:
    """Run the field's policy; a resolver returning something else is a programming error."""
    outcome = resolver_for(ctx.policy)(ctx)
    if not isinstance(outcome, Apply | Keep | Queue):
        raise TypeError(f"Resolver for {ctx.policy!r} returned {outcome!r}, not Apply/Keep/Queue.")
    return outcome
