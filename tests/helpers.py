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


def board_create(name: str, stream: str = "boards", **fields: Any) -> dict[str, Any]:
    """A board create as a client sends it (in a ``mutate`` frame, or as JSON to the
    mutations endpoint); ``fields`` beside the name."""
    return {
        "id": str(uuid.uuid4()),
        "stream": stream,
        "model": "testapp.board",
        "pk": str(uuid.uuid4()),
        "op": "create",
        "fields": {"name": name, **fields},
    }


def in_progress_record(user: Any, m: Mutation, started_at: Any) -> Any:
    """The idempotency record of ``m`` as a writer that started at ``started_at`` and
    still holds it leaves it."""
    from syncapp.models import IdempotencyRecord
    from syncapp.protocol import fingerprint

    return IdempotencyRecord.objects.create(
        owner=f"user:{user.pk}",
        key=m.id,
        fingerprint=fingerprint(m),
        status=IdempotencyRecord.Status.IN_PROGRESS,
        lease=uuid.uuid4(),
        created_at=started_at,
        started_at=started_at,
    )


def eventstream_text(stream: str, after: int, limit: int = 10_000) -> str:
    """What django-eventstream's own loop sends for ``stream``'s ops after ``after``
    through OpLogStorage: the SSE text syncapp's catch-up must match byte for byte."""
    from django_eventstream.utils import make_id, sse_encode_event

    from syncapp.sse import OpLogStorage, channel_for

    channel = channel_for(stream)
    return "".join(
        sse_encode_event(event.type, event.data, event_id=make_id({channel: event.id}))
        for event in OpLogStorage().get_events(channel, after, limit)
    )
