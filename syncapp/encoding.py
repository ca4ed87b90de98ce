"""The one JSON encoding of ops and frames, shared by every transport."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from django.utils import timezone

from syncapp import registry

if TYPE_CHECKING:
    from syncapp.models import Op

_encoder = msgspec.json.Encoder()


def dumps(value: Any) -> str:
    """Compact JSON text."""
    return _encoder.encode(value).decode()


def iso(moment: datetime) -> str:
    """A timestamp in ISO 8601, UTC, with a ``Z``."""
    global _last_iso
    last = _last_iso
    if last[0] is moment:  # the ops of one write share their timestamp object
        return last[1]
    text = (moment.astimezone(UTC) if timezone.is_aware(moment) else moment).isoformat()
    text = text.replace("+00:00", "Z")
    _last_iso = (moment, text)
    return text


_last_iso: tuple[object, str] = (object(), "")


def op_dict(op: Op, stream: str, epoch: str) -> dict[str, Any]:
    """An op in the protocol's shape (docs/protocol.md, "Op")."""
    spec = registry.by_label(op.model)
    pk: Any = spec.pk_value(op.object_pk) if spec is not None else op.object_pk
    return {
        "stream": stream,
        "epoch": epoch,
        "seq": op.seq,
        "model": op.model,
        "pk": pk,
        "op": op.kind,
        # Sorted, so an op read back from the log (PostgreSQL's jsonb reorders keys) is the
        # same text as the one broadcast live.
        "fields": dict(sorted(op.fields.items())),
        "version": op.version,
        "mutation": str(op.mutation_id) if op.mutation_id else None,
        "ts": iso(op.created_at),
    }


def encode_op(op: Op, stream: str, epoch: str) -> str:
    """An op as JSON text: encoded once, then sent as is to every subscriber."""
    return dumps(op_dict(op, stream, epoch))
