"""The benchmark servers' ASGI application.

- ``/sync/ws/``: syncapp's WebSocket (``syncapp.routing.websocket_application``).
- ``/plainsave/ws/?stream=<stream>`` (with ``BENCH_PLAIN_SAVE=1``):
  :class:`PlainSaveConsumer`, what people write by hand: a ``post_save`` receiver
  ``group_send``s each saved card once committed; the consumer ``send_json``s it.
- ``/plain/ws/?stream=<stream>``: :class:`PlainConsumer`, a hand-written consumer on
  syncapp's own after-commit broadcast (one message per transaction).
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

from benchmarks import gcsettle  # noqa: E402
from syncapp.broadcast import stream_group  # noqa: E402
from syncapp.routing import websocket_application  # noqa: E402


class PlainConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """A hand-written Channels consumer on syncapp's broadcast: one group per stream,
    ``send_json`` per event.

    It joins the stream's channel-layer group, the one syncapp's after-commit
    ``group_send`` targets (``syncapp.broadcast``), so that the writes and the message on
    the layer are exactly syncapp's, and sends each event's ops to its socket with
    ``send_json`` (each consumer decodes the ops and encodes the frame again, as
    hand-written code does with a dict it was sent).
    """

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.stream = query.get("stream", [""])[0]
        self.group = self.group_of(self.stream)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "subscribed", "stream": self.stream})

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    def group_of(self, stream: str) -> str:
        return stream_group(stream)

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

if os.environ.get("BENCH_PLAIN_SAVE"):
    # Only in the processes of the per-save plain peer: a post_save receiver makes
    # syncapp save each card on its own (capture.bulk_insertable), as it would for any
    # project that listens to the model's signals.
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.db import transaction
    from django.db.models.signals import post_save

    from tests.testapp.models import Card

    def plain_group(board_id: Any) -> str:
        return f"plain-board-{board_id}"

    def card_saved(sender: Any, instance: Card, created: bool, **kwargs: Any) -> None:
        """What hand-written code does: once the save is committed, one ``group_send``
        of the card to its board's group."""
        event = {
            "type": "card.saved",
            "stream": f"board:{instance.board_id}",
            "card": {
                "pk": str(instance.pk),
                "fields": {"board": str(instance.board_id), "title": instance.title},
            },
        }
        layer = get_channel_layer()
        group = plain_group(instance.board_id)
        transaction.on_commit(lambda: async_to_sync(layer.group_send)(group, event))

    post_save.connect(card_saved, sender=Card, weak=False)

    class PlainSaveConsumer(PlainConsumer):
        """A hand-written Channels consumer fed per save: it joins its board's group and
        ``send_json``s each card event as an ``ops`` frame of one."""

        def group_of(self, stream: str) -> str:
            return plain_group(stream.partition(":")[2])

        async def card_saved(self, event: dict[str, Any]) -> None:
            await self.send_json({"type": "ops", "stream": event["stream"], "ops": [event["card"]]})

    routes.append(path("plainsave/ws/", PlainSaveConsumer.as_asgi()))

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
    """``/plain...``, ``/bare/...`` and ``/dcrf/...`` to the hand-written consumers (no
    Origin check, no auth), the rest to syncapp."""
    app = plain if scope["path"].startswith(("/plain", "/bare/", "/dcrf/")) else sync
    await app(scope, receive, send)


application = ProtocolTypeRouter({"http": django_asgi, "websocket": websocket})
gcsettle.install()
