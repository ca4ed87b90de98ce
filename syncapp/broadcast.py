"""After commit, ring the doorbell: send new ops to the stream's channel-layer group.

The channel layer may drop messages (invariant 3); every message carries positions, so a
subscriber that misses one sees the gap and reads the log.
"""

from __future__ import annotations

import hashlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.db import transaction

from syncapp.conf import conf
from syncapp.encoding import encode_op

if TYPE_CHECKING:
    from syncapp.models import Op

logger = logging.getLogger("syncapp.broadcast")

MESSAGE_TYPE = "syncapp.ops"


def stream_group(stream: str) -> str:
    """The channel-layer group of a stream (group names allow neither ``:`` nor 200 chars)."""
    return "syncapp.s." + hashlib.blake2s(stream.encode(), digest_size=16).hexdigest()


def after_commit(stream: str, epoch: str, ops: list[Op], using: str) -> None:
    """Send ``ops`` once the current transaction commits; nothing if it rolls back."""
    transaction.on_commit(partial(send, stream, epoch, ops), using=using)


def message(stream: str, epoch: str, ops: list[Op]) -> dict[str, Any]:
    """The channel-layer message for consecutive ops of one stream, each encoded once."""
    return {
        "type": MESSAGE_TYPE,
        "stream": stream,
        "epoch": epoch,
        "first": ops[0].seq,
        "last": ops[-1].seq,
        "ops": [encode_op(op, stream, epoch) for op in ops],
    }


def send(stream: str, epoch: str, ops: list[Op]) -> None:
    """Send ``ops`` to the stream's group now. Failures are logged, never raised: the ops
    are committed, and subscribers recover what they miss from the log."""
    alias = conf.CHANNEL_LAYER
    if alias is None or not ops:
        return
    from channels.layers import get_channel_layer

    try:
        layer = get_channel_layer(alias)
        if layer is None:
            return
        async_to_sync(layer.group_send)(stream_group(stream), message(stream, epoch, ops))
    except Exception:
        logger.warning(
            "Could not broadcast ops %s..%s of %s", ops[0].seq, ops[-1].seq, stream, exc_info=True
        )
