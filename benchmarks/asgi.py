"""The benchmark servers' ASGI application.

- ``/sync/ws/``: syncapp's WebSocket (``syncapp.routing.websocket_application``).
- ``/plain/ws/?stream=<stream>``: :class:`PlainConsumer`, what people write by hand.
- ``/bare/ws/``: :class:`BareConsumer`, a Channels consumer that only accepts (the memory
  baseline).
- ``/dcrf/ws/`` (with ``BENCH_DCRF=1``): djangochannelsrestframework's model observer.
- HTTP: the test project (syncapp's REST API under ``/sync/``).
"""

import json
import os
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

django_asgi = get_asgi_application()

from syncapp.broadcast import stream_group  # noqa: E402
from syncapp.routing import websocket_application  # noqa: E402


class PlainConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """A hand-written Channels consumer: one group per stream, ``send_json`` per event.

    It joins the stream's channel-layer group, the one syncapp's after-commit
    ``group_send`` targets (``syncapp.broadcast``), so that the writes and the message on
    the layer are exactly syncapp's, and sends each event's ops to its socket with
    ``send_json`` (each consumer decodes the ops and encodes the frame again, as
    hand-written code does with a dict it was sent).
    """

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.stream = query.get("stream", [""])[0]
        self.group = stream_group(self.stream)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "subscribed", "stream": self.stream})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def syncapp_ops(self, event: dict[str, Any]) -> None:
        ops = [json.loads(text) for text in event["ops"]]
        await self.send_json({"type": "ops", "stream": event["stream"], "ops": ops})

    # syncapp's hub also sends control messages to groups it joins; this consumer joins
    # none of those, but a probe or revocation must not crash it.
    async def syncapp_probe(self, event: dict[str, Any]) -> None:
        return

    async def syncapp_revoke(self, event: dict[str, Any]) -> None:
        return


class BareConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """The least a Channels WebSocket consumer holds: accepted, in no group, idle."""

    async def connect(self) -> None:
        await self.accept()
        await self.send_json({"type": "subscribed"})


routes = [
    path("plain/ws/", PlainConsumer.as_asgi()),
    path("bare/ws/", BareConsumer.as_asgi()),
]

if os.environ.get("BENCH_DCRF"):
    # Only in the processes of the djangochannelsrestframework peer: its model observer
    # hooks every Card's post_init and post_save in the process, which would tax the
    # other peers' writes.
    from djangochannelsrestframework.consumers import AsyncAPIConsumer
    from djangochannelsrestframework.observer import model_observer

    from tests.testapp.models import Card

    class DcrfConsumer(AsyncAPIConsumer):  # type: ignore[misc]
        """djangochannelsrestframework's model observer, as its README sets it up: every
        consumer subscribes to the Card observer; each saved Card is serialized once
        (in the writer's thread), group_sent, and sent by each consumer with
        ``send_json`` (in the ``ops`` shape the benchmark clients count)."""

        async def accept(self, subprotocol: Any = None) -> None:
            await super().accept(subprotocol)
            await self.card_activity.subscribe()
            await self.send_json({"type": "subscribed"})

        @model_observer(Card)
        async def card_activity(self, message: Any, observer: Any = None, **kwargs: Any) -> None:
            await self.send_json({"type": "ops", "ops": [message]})

        @card_activity.serializer  # type: ignore[no-redef]
        def card_activity(self, instance: Any, action: Any, **kwargs: Any) -> dict[str, Any]:
            return {
                "action": action.value,
                "pk": str(instance.pk),
                "fields": {"board": str(instance.board_id), "title": instance.title},
            }

    routes.append(path("dcrf/ws/", DcrfConsumer.as_asgi()))

plain = URLRouter(routes)
sync = websocket_application(prefix="sync/")


async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/plain/...`` and ``/bare/...`` to the hand-written consumers (no Origin check, no
    auth), the rest to syncapp."""
    app = plain if scope["path"].startswith(("/plain/", "/bare/", "/dcrf/")) else sync
    await app(scope, receive, send)


application = ProtocolTypeRouter({"http": django_asgi, "websocket": websocket})
