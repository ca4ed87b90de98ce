"""Presence across two daphne processes through Redis, and after one is killed."""

from __future__ import annotations

import asyncio
import signal

import pytest

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

TTL = 2.0  # tests/live_settings.py


async def test_presence_on_one_process_is_seen_on_the_other(live, stream, ws_client):
    a, b = live.servers("a", "b")
    member = ws_client("member")
    await member.connect(a)
    await member.subscribe(stream)
    watcher = ws_client("watcher")
    await watcher.connect(b)
    await watcher.subscribe(stream)
    await member.send({"type": "presence", "stream": stream, "state": {"cursor": [3, 4]}})
    await watcher.until(
        lambda: member.connection_id in watcher.presence.get(stream, {}),
        what="the member to appear on the other process",
    )
    assert watcher.presence[stream][member.connection_id]["state"] == {"cursor": [3, 4]}
    await member.send({"type": "presence", "stream": stream, "state": {"cursor": [5, 6]}})
    await watcher.until(
        lambda: watcher.presence[stream][member.connection_id]["state"] == {"cursor": [5, 6]},
        what="the state change",
    )
    late = ws_client("late")
    await late.connect(b)
    await late.subscribe(stream)
    await late.until(lambda: stream in late.presence, what="presence_state")
    assert late.presence[stream][member.connection_id]["client_id"] == "member"


async def test_members_of_a_killed_process_leave_within_the_ttl(live, stream, ws_client):
    a, b = live.servers("a", "b")
    member = ws_client("member")
    await member.connect(a)
    await member.subscribe(stream)
    watcher = ws_client("watcher")
    await watcher.connect(b)
    await watcher.subscribe(stream)
    await member.send({"type": "presence", "stream": stream, "state": {}})
    await watcher.until(lambda: member.connection_id in watcher.presence.get(stream, {}))
    loop = asyncio.get_running_loop()
    killed = loop.time()
    a.kill(signal.SIGKILL)  # no goodbye: its member is only no longer renewed
    await watcher.until(
        lambda: member.connection_id not in watcher.presence[stream],
        what="the dead process's member to leave",
        timeout=TTL * 4,
    )
    gone_after = loop.time() - killed
    print(f"member of the killed process left after {gone_after:.2f} s (TTL {TTL} s)")
    # Gone within the TTL, plus the time to deliver the leave on a loaded machine.
    assert gone_after <= TTL + 0.5
