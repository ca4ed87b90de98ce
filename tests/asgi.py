"""The ASGI application of the test project (HTTP and the WebSocket)."""

import os

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

django_asgi = get_asgi_application()

from syncapp.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_asgi, "websocket": websocket_application(prefix="sync/")}
)
