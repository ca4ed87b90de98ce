"""Abuse and revocation on real daphne processes (docs/security.md).

An abusive client, in a process of its own, floods mutate, presence and subscribe frames
over several connections on two servers: it is throttled (``rate_limited`` frames), what
it gets applied stays within its user's one budget shared through Redis, and a
well-behaved client on the same server keeps its latency. Revoking a user's access ends
its WebSocket, SSE and long-poll delivery on another process within seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from syncapp import permissions
from tests.live.clients import (
    LongPollClient,
    SseClient,
    WsClient,
    mutate,
    new_card,
    snapshot,
    ws_token,
)
from tests.live.servers import Daphne
from tests.testapp.models import Board, Card

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

SAMPLES = 40
# Tight per-user limits on this module's servers, so that the abuser meets them even on a
# slow machine; the good client stays under them (PACE).
LIMITS = {
    "USER_MUTATION_RATE": 10,
    "USER_MUTATION_BURST": 20,
    "USER_PRESENCE_RATE": 10,
    "USER_PRESENCE_BURST": 20,
    "USER_READ_RATE": 5,
    "USER_READ_BURST": 10,
}
PACE = 0.15
# The machine is shared and loaded: the well-behaved client's p99 under abuse may grow by
# this factor over its own baseline (or up to FLOOR seconds) before the test fails.
FACTOR = 10.0
FLOOR = 1.0
REVOCATION_SECONDS = 5.0

# The abuser, in a process of its own so that its flood does not slow the test's client
# on the client side. argv: stream, board pk, then ws URLs (each with a token). It floods
# until a line comes on its stdin, then prints what it saw and for how long. Paced:
# each connection sends at most ~500 frames a second (2,000 in all, 80 times the user's
# limits together, 25 a second): a real abuser's sending costs the server's host
# nothing, while on this 2-core machine an unpaced one took a core from the servers, and
# the good client's latency then measured the host (p99 1.0 s in one CI run, 0.15-0.3 s
# in the others).
ABUSER = r"""
import asyncio, json, sys, time, uuid
import websockets

stream, board = sys.argv[1], sys.argv[2]
urls = sys.argv[3:]
stop = None
counts = {"sent": 0, "acked": 0, "applied": 0, "rate_limited": 0, "other": 0, "closed": []}

def card():
    return {"id": str(uuid.uuid4()), "stream": stream, "model": "testapp.card",
            "pk": str(uuid.uuid4()), "op": "create",
            "fields": {"board": board, "title": "flood"}}

async def read(ws):
    try:
        async for text in ws:
            frame = json.loads(text)
            if frame["type"] == "ack":
                counts["acked"] += 1
                counts["applied"] += sum(r["status"] == "applied" for r in frame["results"])
            elif frame["type"] == "error":
                key = "rate_limited" if frame["code"] == "rate_limited" else "other"
                counts[key] += 1
    except websockets.ConnectionClosed as exc:
        counts["closed"].append(exc.rcvd.code if exc.rcvd else 1006)

async def flood(url, origin):
    async with websockets.connect(url, origin=origin, compression=None, proxy=None) as ws:
        await ws.send(json.dumps({"type": "hello", "client_id": "abuser", "protocol": 1}))
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "stream": "abuse:empty"}))
        reader = asyncio.create_task(read(ws))
        n = 0
        while not stop.done() and not reader.done():
            n += 1
            kind = n % 3
            if kind == 0:
                frame = {"type": "mutate", "mutations": [card()]}
            elif kind == 1:
                frame = {"type": "presence", "stream": "abuse:empty", "state": {"n": n}}
            else:
                frame = {"type": "subscribe", "stream": "abuse:empty"}
            await ws.send(json.dumps(frame))
            counts["sent"] += 1
            if n % 5 == 0:
                await asyncio.sleep(0.01)  # paced: ~500 frames/s a connection at most
        await asyncio.sleep(0.5)
        reader.cancel()

async def main():
    global stop
    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, sys.stdin.readline)
    started = time.monotonic()
    floods = [asyncio.create_task(flood(u, "http://" + u.split("/")[2])) for u in urls]
    print("ready", flush=True)
    await asyncio.gather(*floods)
    counts["seconds"] = time.monotonic() - started
    print(json.dumps(counts), flush=True)

asyncio.run(main())
"""


@pytest.fixture(scope="module", autouse=True)
def _tight_limits() -> Iterator[None]:
    """This module's daphne processes (started by its own cluster) take LIMITS."""
    os.environ["SYNCAPP_LIVE_SYNCAPP"] = json.dumps(LIMITS)
    yield
    del os.environ["SYNCAPP_LIVE_SYNCAPP"]


@pytest.fixture
def servers(live) -> list[Daphne]:
    return live.servers("a", "b")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def settled(count: Any) -> int:
    """``count()`` once it stops changing: the servers have applied what they had queued
    (and the test database can be flushed without racing them)."""
    last = -1
    while (now := await database_sync_to_async(count)()) != last:
        last = now
        await asyncio.sleep(1.0)
    return now


async def round_trips(client: WsClient, stream: str, board_pk: Any, count: int) -> list[float]:
    """``count`` mutate frames, one at a time: the seconds each took to be acknowledged."""
    took = []
    for _ in range(count):
        before = len(client.acks)
        start = time.perf_counter()
        await client.send({"type": "mutate", "mutations": [new_card(stream, board_pk, "good")]})
        await client.until(lambda b=before: len(client.acks) > b, what="ack")
        took.append(time.perf_counter() - start)
        [result] = client.acks[-1]["results"]
        assert result["status"] == "applied", result
        await asyncio.sleep(PACE)
    return took


async def test_an_abusive_client_is_throttled_while_a_good_one_keeps_its_latency(
    servers, stream, board, ws_client, django_user_model
):
    a, b = servers
    good = ws_client("good")
    await good.connect(a)
    await good.subscribe(stream)
    baseline = await round_trips(good, stream, board.pk, SAMPLES)

    mallory = await database_sync_to_async(django_user_model.objects.create_user)(
        "mallory", password="pw"
    )
    own_board = await database_sync_to_async(Board.objects.create)(name="mallory's")
    mallory_auth = (mallory.username, "pw")
    urls = [
        f"ws://127.0.0.1:{server.port}/sync/ws/?token={await ws_token(server, mallory_auth)}"
        for server in (a, a, b, b)
    ]
    launched = time.monotonic()
    abuser = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ABUSER,
        f"board:{own_board.pk}",
        str(own_board.pk),
        *urls,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert abuser.stdout is not None
        assert (await asyncio.wait_for(abuser.stdout.readline(), 20)).strip() == b"ready"
        await asyncio.sleep(1.0)  # past the abuser's burst
        under_abuse = await round_trips(good, stream, board.pk, SAMPLES)
        out, _ = await asyncio.wait_for(abuser.communicate(b"stop\n"), 60)
    finally:
        if abuser.returncode is None:
            abuser.kill()
            await abuser.wait()
    counts = json.loads(out.decode().strip().splitlines()[-1])
    applied = await settled(Card.objects.filter(board=own_board, title="flood").count)
    seconds = time.monotonic() - launched  # from the abuser's start until all was served
    budget = LIMITS["USER_MUTATION_BURST"] + LIMITS["USER_MUTATION_RATE"] * seconds
    base, abused = p99(baseline), p99(under_abuse)
    report = (
        f"p99 {abused * 1000:.0f} ms under abuse vs {base * 1000:.0f} ms alone; "
        f"abuser applied {applied} of a budget of {budget:.0f}; {counts}"
    )
    print(report)

    # The abuser was throttled: most of what the servers answered it was a refusal. (Not
    # a share of what it sent: it writes faster than the servers read, so how many of its
    # frames are answered at all before it stops depends on how busy the host is.)
    assert counts["rate_limited"] > 5 * counts["acked"], report
    # ...within its user's one budget, shared by its connections on both processes (per
    # process, or per connection, it would get two to four times as much applied)...
    assert applied <= budget, report
    # ...and the good client kept its latency.
    assert abused <= max(FACTOR * base, FLOOR), report
    assert good.problems == [], good


async def test_revocation_ends_delivery_on_another_process_within_seconds(
    live, servers, auth, stream, board, ws_client, django_user_model
):
    a, b = servers
    reader = ws_client("revoked")
    await reader.connect(b)
    await reader.subscribe(stream)
    sse = SseClient(auth, stream)
    await sse.open(b)
    head = await snapshot(b, auth, stream)
    poll = LongPollClient(auth, stream, head["epoch"], head["seq"])
    poll.start(b)
    writer_auth = ("writer", "pw")
    await database_sync_to_async(django_user_model.objects.create_user)("writer", password="pw")
    await mutate(a, writer_auth, [new_card(stream, board.pk, "before")])
    await reader.until(lambda: reader.last(stream) >= 1)
    await sse.until(lambda: len(sse.ops) >= 1)
    await poll.until(lambda: len(poll.ops) >= 1)
    await asyncio.sleep(0.3)  # the long-poll is waiting again

    user = await database_sync_to_async(django_user_model.objects.get)(username=auth[0])
    user.is_active = False
    await database_sync_to_async(user.save)()
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [live.redis.url]},
        }
    }
    started = time.monotonic()
    with override_settings(CHANNEL_LAYERS=layers):  # this process calls revoke, as an admin would
        await database_sync_to_async(permissions.revoke)(user)

    def cut_off() -> bool:
        return any(p.get("code") == "permission_denied" for p in reader.problems)

    await reader.until(cut_off, timeout=REVOCATION_SECONDS, what="permission_denied")
    await sse.until(lambda: bool(sse.problems) or sse.closed.is_set(), REVOCATION_SECONDS)
    await poll.until(lambda: bool(poll.failures), REVOCATION_SECONDS)
    assert time.monotonic() - started < REVOCATION_SECONDS
    assert "403" in poll.failures[0], poll.failures

    await mutate(a, writer_auth, [new_card(stream, board.pk, "after")])
    await asyncio.sleep(1.0)
    assert reader.last(stream) == 1, reader
    assert len(sse.ops) == 1, sse
    assert len(poll.ops) == 1, poll
    await sse.close()
    await poll.close()
