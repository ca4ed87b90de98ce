"""Frames from server to client (docs/protocol.md, "Server to client"), decoded with msgspec.

The client-to-server frames are :mod:`syncapp.protocol`'s, so both ends encode them from
one definition. These are lenient where the server's are strict: unknown keys are ignored
and unknown frame types are skipped, so a newer server can add to protocol 1 without
breaking older clients.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from msgspec import Struct

from syncapp.protocol import ClientFrame, MutationResult, ObjectState, OpMessage

logger = logging.getLogger("syncapp.client")

ServerRef = str | int


class _ServerFrame(Struct, kw_only=True, tag_field="type"):
    ref: ServerRef | None = None


class WelcomeFrame(_ServerFrame, tag="welcome"):
    """The connection's parameters, in answer to ``hello``."""

    protocol: int
    heartbeat_ms: int
    max_frame_bytes: int
    max_batch: int | None = None
    # This connection's member id in presence, and the server's time (ISO 8601, UTC).
    connection_id: str | None = None
    time: str | None = None


class SnapshotFrame(_ServerFrame, tag="snapshot"):
    """Every object of a stream as of ``seq``."""

    stream: str
    epoch: str
    seq: int
    objects: list[ObjectState]


class OpsFrame(_ServerFrame, tag="ops"):
    """One or more ops of a stream, in seq order."""

    stream: str
    ops: list[OpMessage]


class SubscribedFrame(_ServerFrame, tag="subscribed"):
    """The subscription is live; everything up to ``head`` was sent."""

    stream: str
    epoch: str
    head: int


class UnsubscribedFrame(_ServerFrame, tag="unsubscribed"):
    stream: str


class ResetFrame(_ServerFrame, tag="reset"):
    """The position cannot be resumed; the subscription is dropped."""

    stream: str
    epoch: str
    reason: str


class AckFrame(_ServerFrame, tag="ack"):
    """One result per mutation of a ``mutate`` frame, in order."""

    results: list[MutationResult]


class PongFrame(_ServerFrame, tag="pong"):
    ts: int | float | None = None


class ErrorFrame(_ServerFrame, tag="error"):
    """A frame was refused; the connection goes on."""

    code: str
    message: str = ""
    stream: str | None = None
    retry_after_ms: int | None = None


class PresenceFrame(_ServerFrame, tag="presence"):
    stream: str
    joins: dict[str, Any] = {}
    leaves: list[Any] = []


class PresenceStateFrame(_ServerFrame, tag="presence_state"):
    stream: str
    members: dict[str, Any] = {}


ServerFrame = (
    WelcomeFrame
    | SnapshotFrame
    | OpsFrame
    | SubscribedFrame
    | UnsubscribedFrame
    | ResetFrame
    | AckFrame
    | PongFrame
    | ErrorFrame
    | PresenceFrame
    | PresenceStateFrame
)

SERVER_FRAME_TYPES = frozenset(
    {
        "welcome",
        "snapshot",
        "ops",
        "subscribed",
        "unsubscribed",
        "reset",
        "ack",
        "pong",
        "error",
        "presence",
        "presence_state",
    }
)


class MalformedFrame(ValueError):
    """A frame of a known type that does not have that type's shape."""


class _Envelope(Struct):
    type: str | None = None


_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)
_envelope = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()


def decode(data: str | bytes) -> ServerFrame | None:
    """The frame in ``data``; ``None`` for a type this client does not know."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        # Only now look at the type on its own: the common case parses once.
        try:
            kind = _envelope.decode(data).type
        except msgspec.DecodeError:
            kind = None
        if kind is not None and kind not in SERVER_FRAME_TYPES:
            logger.debug("Ignoring a frame of unknown type %r.", kind)
            return None
        raise MalformedFrame(str(exc)) from exc


def encode(frame: ClientFrame) -> bytes:
    """``frame`` as the JSON text the server expects (sent as a text frame)."""
    return _encoder.encode(frame)
