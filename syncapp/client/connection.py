"""Opening one WebSocket: the URL with its token, the Origin header, the handshake."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI
from websockets.typing import Origin
from websockets.uri import parse_uri

TokenProvider = Callable[[], Awaitable[str]]
"""An async callable returning a fresh token (``POST <prefix>api/ws-token/``)."""

_ORIGIN_SCHEMES = {"ws": "http", "wss": "https"}


def validate_url(url: str) -> str:
    """``url`` if it is a ``ws://`` or ``wss://`` URL, else ``ValueError``."""
    try:
        parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(str(exc)) from exc
    return url


def derive_origin(url: str) -> str:
    """The Origin a browser page on the server's own site would send: ws->http, wss->https.

    The server refuses handshakes whose Origin is missing or not allowed (by default the
    hosts of ``ALLOWED_HOSTS``), so a client without a page of its own claims the
    server's.
    """
    parts = urlsplit(url)
    return f"{_ORIGIN_SCHEMES[parts.scheme.lower()]}://{parts.netloc.rpartition('@')[2]}"


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``token`` set as its ``token`` query parameter (replacing any)."""
    if token is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


async def open_websocket(
    url: str,
    *,
    origin: str,
    headers: Mapping[str, str],
    open_timeout: float,
    close_timeout: float,
    max_message_bytes: int | None,
) -> ClientConnection:
    """Perform the handshake; the errors are websockets' (``InvalidStatus``, ``OSError``...)."""
    return await connect(
        url,
        origin=Origin(origin),
        additional_headers=dict(headers),
        open_timeout=open_timeout,
        close_timeout=close_timeout,
        max_size=max_message_bytes,
        # The protocol has its own heartbeats (``ping`` frames, ``heartbeat_ms``), which
        # also prove the server's event loop is alive, not just its TCP stack.
        ping_interval=None,
    )
