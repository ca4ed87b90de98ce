"""Small helpers the tests share."""

from __future__ import annotations

import uuid
from typing import Any

from syncapp.models import Op
from syncapp.protocol import Mutation


def ops(stream: str) -> list[Op]:
    """The ops of ``stream``, in seq order."""
    return list(Op.objects.filter(stream__name=stream).order_by("seq"))


def kinds(stream: str) -> list[tuple[int, str]]:
    return [(op.seq, op.kind) for op in ops(stream)]


def mutation(**kwargs: Any) -> Mutation:
    """A Mutation with a fresh id unless given."""
    kwargs.setdefault("id", uuid.uuid4())
    kwargs.setdefault("fields", {})
    return Mutation(**kwargs)
