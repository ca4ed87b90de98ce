"""The client's errors. Each has a stable ``code``, like the server's (docs/protocol.md)."""

from __future__ import annotations

from typing import ClassVar


class ClientError(Exception):
    """Base class of the client's errors."""

    code: ClassVar[str] = "client_error"


class ClientClosed(ClientError):
    """The client was closed while the call was waiting."""

    code = "closed"


class ConnectionFailed(ClientError):
    """Every connection attempt the backoff allowed failed."""

    code = "connection_failed"


class HandshakeRejected(ClientError):
    """The server refused the WebSocket handshake with an HTTP status (an Origin it does
    not allow, a wrong path); trying again would get the same answer."""

    code = "handshake_rejected"

    def __init__(self, status: int, url: str) -> None:
        self.status = status
        self.url = url
        super().__init__(f"{url} refused the WebSocket handshake with HTTP {status}.")


class TokenRejected(ClientError):
    """The server closed with 4401 and no fresh token could fix it."""

    code = "token_rejected"


class ProtocolRejected(ClientError):
    """The server closed with 4400: it does not speak this client's protocol."""

    code = "protocol_error"


class ServerError(ClientError):
    """The server refused a frame with an ``error`` frame; ``code`` is the server's."""

    code = "server_error"

    def __init__(self, code: str, message: str) -> None:
        self.error_code = code
        self.message = message
        super().__init__(f"{code}: {message}" if message else code)


class SubscriptionError(ServerError):
    """The server refused or ended a subscription (``permission_denied``, ...)."""

    code = "subscription_error"

    def __init__(self, stream: str, code: str, message: str) -> None:
        self.stream = stream
        super().__init__(code, message)


class MutationError(ServerError):
    """The server refused a ``mutate`` frame as a whole; none of its mutations was applied."""

    code = "mutation_error"


class FrameTooLarge(ClientError):
    """A frame over the server's ``max_frame_bytes``; sending it would close the connection."""

    code = "too_large"

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"The frame is {size} bytes; the server accepts at most {limit}.")
