"""After commit, ring the doorbell: send new ops to the stream's channel-layer group.

The channel layer may drop messages (invariant 3); every message carries positions, so a
subscriber that misses one sees the gap and reads the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.db import transaction

from syncapp import sender
from syncapp.conf import conf

if TYPE_CHECKING:
    from syncapp.models import Op

logger = logging.getLogger("syncapp.broadcast")

MESSAGE_TYPE = "syncapp.ops"


def stream_group(stream: str) -> str:
    """The channel-layer group of a stream (group names allow neither ``:`` nor 200 chars)."""
    return "syncapp.s." + hashlib.blake2s(stream.encode(), digest_size=16).hexdigest()


Pending = list[tuple[str, str, "list[Op]"]]
_coalescing: ContextVar[Pending | None] = ContextVar("syncapp_broadcast", default=None)


def after_commit(stream: str, epoch: str, ops: list[Op], using: str) -> None:
    """Send ``ops`` once the current transaction commits; nothing if it rolls back (or if
    the savepoint they were written in rolls back: Django drops its callbacks)."""
    pending = _coalescing.get()
    if pending is None:
        transaction.on_commit(partial(send, stream, epoch, ops), using=using)
    else:
        transaction.on_commit(partial(pending.append, (stream, epoch, ops)), using=using)


@contextlib.contextmanager
def coalesced(using: str) -> Iterator[None]:
    """Inside the current transaction: the ops written within go out as one message per
    stream once it commits (consecutive seqs merged), instead of one message per write.

    A batch of mutations applied in one transaction thus rings each stream's group once.
    """
    pending: Pending = []
    token = _coalescing.set(pending)
    try:
        yield
    finally:
        _coalescing.reset(token)
    # Registered after the writes' own callbacks, so it runs after they have collected.
    transaction.on_commit(partial(send_all, pending), using=using)


def send_all(pending: Pending) -> None:
    """Send what :func:`coalesced` collected: runs of consecutive ops per stream, each run
    at most a quarter of ``OUTBOX_BYTES`` of encoded ops (a larger op goes alone), so that
    a batch of big ops still reaches each connection as frames it can be paced by. Like
    :func:`send`, it never raises: the ops are committed."""
    if conf.CHANNEL_LAYER is None:
        return
    for stream, epoch, run_ops, texts in _runs(pending, max(1, conf.OUTBOX_BYTES // 4)):
        _send_message(stream, run_ops, partial(_message, stream, epoch, run_ops, texts))


def _runs(pending: Pending, limit: int) -> list[tuple[str, str, list[Op], list[str]]]:
    runs: dict[tuple[str, str], list[tuple[list[Op], list[str], int]]] = {}
    for stream, epoch, ops in pending:
        stream_runs = runs.setdefault((stream, epoch), [])
        for op in ops:
            text = op.encoded
            if stream_runs:
                run_ops, texts, size = stream_runs[-1]
                if run_ops[-1].seq + 1 == op.seq and size + len(text) <= limit:
                    run_ops.append(op)
                    texts.append(text)
                    stream_runs[-1] = (run_ops, texts, size + len(text))
                    continue
            stream_runs.append(([op], [text], len(text)))
    return [
        (stream, epoch, run_ops, texts)
        for (stream, epoch), stream_runs in runs.items()
        for run_ops, texts, _size in stream_runs
    ]


def message(stream: str, epoch: str, ops: list[Op]) -> dict[str, Any]:
    """The channel-layer message for consecutive ops of one stream, each as encoded when it
    was written."""
    return _message(stream, epoch, ops, [op.encoded for op in ops])


def _message(stream: str, epoch: str, ops: list[Op], texts: list[str]) -> dict[str, Any]:
    return {
        "type": MESSAGE_TYPE,
        "stream": stream,
        "epoch": epoch,
        "first": ops[0].seq,
        "last": ops[-1].seq,
        "ops": texts,
    }


def send(stream: str, epoch: str, ops: list[Op]) -> None:
    """Send ``ops`` to the stream's group now. Failures are logged, never raised: the ops
    are committed, and subscribers recover what they miss from the log."""
    if ops:
        _send_message(stream, ops, lambda: message(stream, epoch, ops))


def _send_message(stream: str, ops: list[Op], content: Callable[[], dict[str, Any]]) -> None:
    """Build the message (``content``) and send it; log, never raise, what fails."""
    alias = conf.CHANNEL_LAYER
    if alias is None:
        return
    from channels.layers import get_channel_layer

    try:
        layer = get_channel_layer(alias)
        if layer is None:
            return
        loop = sender.serving_loop()
        if loop is not None:
            # A mutation's thread under an ASGI server: queue it, do not wait for the loop.
            sender.send_later(loop, layer, stream_group(stream), content())
        else:
            async_to_sync(layer.group_send)(stream_group(stream), content())
    except Exception:
        logger.warning(
            "Could not broadcast ops %s..%s of %s", ops[0].seq, ops[-1].seq, stream, exc_info=True
        )
