"""WebSocket close codes (docs/protocol.md, "Close codes") and what the client does on each."""

from __future__ import annotations

from typing import Literal

NORMAL = 1000
GOING_AWAY = 1001
ABNORMAL = 1006
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
PROTOCOL_ERROR = 4400
TOKEN_REJECTED = 4401
HEARTBEAT_TIMEOUT = 4408
TOO_SLOW = 4503

# The code this client closes with when the server stopped answering. Private range
# (4000-4999), distinct from the server's 4408 so logs on both ends tell who gave up.
CLIENT_HEARTBEAT_TIMEOUT = 4000

Disposition = Literal["reconnect", "refresh_token", "stop"]


def disposition(code: int | None) -> Disposition:
    """What to do after the connection closed with ``code`` (``None``: no close frame).

    Everything but the two codes that say "the same request will fail again" is worth a
    reconnect with backoff: restarts (1012), crashes (1011), the server's heartbeat
    timeout (4408), falling behind (4503), a lost network, and also a plain 1000/1001,
    because a client that wants to stay connected has no reason to give up when the
    server goes away: a load balancer will send it to a live process.
    """
    if code == PROTOCOL_ERROR:
        return "stop"
    if code == TOKEN_REJECTED:
        return "refresh_token"
    return "reconnect"
