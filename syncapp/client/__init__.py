"""An asyncio client for protocol version 1 (docs/client.md)."""

from syncapp.client.backoff import Backoff
from syncapp.client.client import ConnectionState, SyncClient
from syncapp.client.connection import TokenProvider
from syncapp.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionFailed,
    FrameTooLarge,
    HandshakeRejected,
    MutationError,
    ProtocolRejected,
    ServerError,
    SubscriptionError,
    TokenRejected,
)
from syncapp.client.events import (
    Feed,
    GapDetected,
    OpApplied,
    SnapshotLoaded,
    StreamEvent,
    StreamReset,
)
from syncapp.client.streams import StreamHandle

__all__ = [
    "Backoff",
    "ClientClosed",
    "ClientError",
    "ConnectionFailed",
    "ConnectionState",
    "Feed",
    "FrameTooLarge",
    "GapDetected",
    "HandshakeRejected",
    "MutationError",
    "OpApplied",
    "ProtocolRejected",
    "ServerError",
    "SnapshotLoaded",
    "StreamEvent",
    "StreamHandle",
    "StreamReset",
    "SubscriptionError",
    "SyncClient",
    "TokenProvider",
    "TokenRejected",
]
