"""ASGI entry point: ``daphne demo_project.asgi:application`` (runserver uses it too)."""

import os

from channels.routing import ProtocolTypeRouter
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

django_asgi = get_asgi_application()
if settings.DEBUG:
    # Plain `daphne demo_project.asgi:application` serves /static/ too, as runserver does.
    django_asgi = ASGIStaticFilesHandler(django_asgi)

from syncapp.routing import websocket_application  # noqa: E402  (needs Django set up)

application = ProtocolTypeRouter(
    {"http": django_asgi, "websocket": websocket_application(prefix="sync/")}
)
