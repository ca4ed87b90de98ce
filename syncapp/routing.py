"""Mounting the WebSocket: ``websocket_application()`` in your ASGI ``ProtocolTypeRouter``.

```python
from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

django_asgi = get_asgi_application()

from syncapp.routing import websocket_application  # after Django is set up

application = ProtocolTypeRouter(
    {"http": django_asgi, "websocket": websocket_application(prefix="sync/")}
)
```
"""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.urls import URLPattern, path

from syncapp.consumers import SyncConsumer
from syncapp.middleware import SyncOriginValidator, TokenAuthMiddleware


def websocket_urlpatterns(prefix: str = "sync/") -> list[URLPattern]:
    """The consumer at ``<prefix>ws/``; ``prefix`` matches your ``include("syncapp.urls")``."""
    return [path(f"{prefix}ws/", SyncConsumer.as_asgi())]


def websocket_application(prefix: str = "sync/") -> Any:
    """The WebSocket side: Origin check, session then token authentication, the consumer."""
    return SyncOriginValidator(
        AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns(prefix))))
    )
