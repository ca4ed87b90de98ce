"""Workload 4: missed events replayed over SSE through ``Last-Event-ID``.

A stream holding N ops (full: 10,000; small: 1,000) is read from the start by one client
over HTTP from a daphne process (``benchmarks.mut_settings``), one for each side, both up
and their replays alternating (median of 5; small: one run):

- syncapp: ``GET /sync/api/streams/public:replay/events/`` with
  ``Last-Event-ID: syncapp%3Apublic%3Areplay:0`` (django-eventstream's id of the stream's
  channel at seq 0): syncapp's events view catches the client up from the op log itself
  (pages of up to 5,000 ops, already formatted), then hands over to django-eventstream's
  stream (``syncapp.sse.OpLogStorage``) for the live part;
- peer: django-eventstream's own view (``/events/<channel>/``) with its
  ``DjangoModelStorage`` (the server started with that storage class), for a channel
  holding N events whose data is the same op JSON, with ``Last-Event-ID: <channel>:0``.

The clock runs from sending the request to parsing the event whose id is the last one;
the client parses the SSE stream and checks that it got every id from 1 to N once, in
order (``lost`` counts those missing). The client is the same for both, and cheap (one
regular expression a chunk), so that it is not what is measured.

Both logs are written straight into the database before the servers start (the same op
rows syncapp would write, and django-eventstream's rows as its ``Event.save()`` writes
them, with its placeholder event 0), so that only the replay is measured.

``python -m benchmarks.sse_replay [--small] [--repeat N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.mutations import (
    ROOT,
    SETTINGS,
    Database,
    HttpConnection,
    each_database,
    format_table,
    start_server,
    write_result,
)

NAME = "sse_replay"
STREAM = "public:replay"
CHANNEL = "bench-replay"
TIMEOUT = 600.0


def seed(db: Database, count: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "benchmarks.sse_replay", "--seed", str(count)],
        cwd=ROOT,
        env={**os.environ, **db.env, "DJANGO_SETTINGS_MODULE": SETTINGS},
        check=True,
    )


def _seed_main(count: int) -> None:
    """In a Django process: ``count`` ops of board creates in STREAM, and the same op
    JSON as ``count`` django-eventstream events in CHANNEL."""
    import uuid

    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone
    from django_eventstream.models import Event, EventCounter

    from syncapp import encoding
    from syncapp.models import Op, Stream

    now = timezone.now()
    with transaction.atomic():
        stream = Stream.objects.create(name=STREAM, head=count, oldest_seq=1)
        ops = [
            Op(
                stream=stream,
                seq=seq,
                model="testapp.board",
                object_pk=str(uuid.uuid4()),
                kind="create",
                fields={"name": f"benchmark board replay #{seq:06d} " + "x" * 40, "public": True},
                version=1,
                mutation_id=uuid.uuid4(),
                client_id="bench-seed",
                source="ws",
                created_at=now,
            )
            for seq in range(1, count + 1)
        ]
        for op in ops:
            op.encoded = encoding.encode_op(op, stream.name, stream.epoch)  # as oplog.append
        Op.objects.bulk_create(ops, batch_size=1000)
        events = [Event(channel=CHANNEL, type="", data="", eid=0)]
        events += [
            Event(
                channel=CHANNEL,
                type="message",
                # DjangoModelStorage stores json.dumps(data) of the str send_event() was
                # given: the op's own JSON, encoded once more, as its append_event does.
                data=json.dumps(op.encoded),
                eid=op.seq,
            )
            for op in ops
        ]
        Event.objects.bulk_create(events, batch_size=1000)
        EventCounter.objects.create(name=CHANNEL, value=count)


#: An event with an id, as django-eventstream writes every one (``sse_encode_event``): its
#: ``event:`` line, then ``id: <channel>:<n>``. One regular expression over each chunk
#: instead of splitting every event into lines: the client costs both servers the same
#: and little, so that it is not what is measured.
_EVENT = re.compile(rb"event: ([^\n]*)\nid: [^\n]*:([0-9]+)\n")


async def replay(port: int, path: str, last_event_id: str, count: int) -> dict[str, Any]:
    """Read the SSE response until the event with id ``count``; the seconds it took and
    the ids in the order they came."""
    conn = await HttpConnection(port).open()
    ids: list[int] = []
    try:
        started = time.perf_counter()
        status, headers = await conn.send_head(
            "GET", path, headers={"Accept": "text/event-stream", "Last-Event-ID": last_event_id}
        )
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {headers}")
        buffer = b""
        done = False
        async for chunk in conn.chunks(headers):
            buffer += chunk
            cut = buffer.rfind(b"\n\n") + 2  # up to the end of the last whole event
            if cut < 2:
                continue
            for event, event_id in _EVENT.findall(buffer, 0, cut):
                if event == b"message":
                    ids.append(int(event_id))
                elif event == b"stream-reset":
                    raise RuntimeError(f"{path}: stream-reset: {buffer[:cut]!r}")
            buffer = buffer[cut:]
            if ids and ids[-1] >= count:
                done = True
                break
        seconds = time.perf_counter() - started
        if not done:
            raise RuntimeError(f"{path}: the response ended after {len(ids)} events")
    finally:
        conn.close()
    expected = list(range(1, count + 1))
    lost = len(set(expected) - set(ids))
    return {
        "seconds": seconds,
        "rate": count / seconds,
        "lost": lost,
        "duplicates": len(ids) - len(set(ids)),
        "in_order": ids == sorted(ids),
    }


PEERS = [
    (
        "syncapp events (op log catch-up)",
        "oplog",
        f"/sync/api/streams/{STREAM}/events/",
        quote("syncapp:" + STREAM, safe="") + ":0",
    ),
    (
        "django-eventstream (DjangoModelStorage)",
        "model",
        f"/events/{CHANNEL}/",
        f"{CHANNEL}:0",
    ),
]


def run_database(kind: str, count: int, repeats: int, workdir: Path) -> list[dict[str, Any]]:
    db = Database(kind, workdir)
    db.create()
    servers = []
    try:
        seed(db, count)
        for _label, storage, path, last_event_id in PEERS:
            env = {**db.env, "BENCH_EVENTSTREAM_STORAGE": storage}
            servers.append(start_server(f"sse-{kind}-{storage}", workdir, env))
            # Warm-up: a short replay (imports the views, opens the connection).
            asyncio.run(_warm(servers[-1].port, path, last_event_id))
        # Both servers up, their replays alternating (the other server idle): the host's
        # speed drifts, and the ratio compares replays timed close together.
        samples: list[list[dict[str, Any]]] = [[] for _ in PEERS]
        for _ in range(repeats):
            for (_label, _storage, path, last_event_id), server, mine in zip(
                PEERS, servers, samples, strict=True
            ):
                replayed = replay(server.port, path, last_event_id, count)
                mine.append(asyncio.run(asyncio.wait_for(replayed, TIMEOUT)))
    finally:
        for server in servers:
            server.stop()
        db.drop()
    rows = []
    for (label, *_), mine in zip(PEERS, samples, strict=True):
        seconds = statistics.median(sample["seconds"] for sample in mine)
        rows.append(
            {
                "db": kind,
                "server": label,
                "events": count,
                "seconds": seconds,
                "rate": count / seconds,
                "lost": sum(sample["lost"] for sample in mine),
                "duplicates": sum(sample["duplicates"] for sample in mine),
                "in_order": all(sample["in_order"] for sample in mine),
                "all_seconds": [round(sample["seconds"], 3) for sample in mine],
            }
        )
    peer = rows[-1]["rate"]
    for row in rows:
        row["ratio"] = row["rate"] / peer
    return rows


async def _warm(port: int, path: str, last_event_id: str) -> None:
    # The first 100 events (one storage page) are enough to load everything.
    await asyncio.wait_for(replay(port, path, last_event_id, 100), TIMEOUT)


COLUMNS = ["db", "server", "events", "seconds", "events/s", "x eventstream", "lost"]


def run(small: bool, repeats: int | None = None) -> dict[str, Any]:
    count = 1000 if small else 10_000
    repeats = repeats or (1 if small else 5)
    measured, notes = each_database(run_database, count, repeats, "syncapp-bench-sse-")
    rows = [
        [m["db"], m["server"], count, round(m["seconds"], 3), round(m["rate"], 1),
         round(m["ratio"], 2), m["lost"]]
        for m in measured
    ]  # fmt: skip
    notes += [
        f"{count:,} missed events replayed from Last-Event-ID <channel>:0 by one HTTP client "
        f"in another process; {'one run' if repeats == 1 else f'median of {repeats} runs'}.",
        "syncapp serves the catch-up itself (pages of up to 5,000 ops from the log, "
        "formatted once, one chunk a page), then django-eventstream's stream goes on live; "
        "the peer is django-eventstream's own view (pages of 100 events read from "
        "DjangoModelStorage). Same op JSON in both; a daphne process each, both up, their "
        "replays alternating.",
    ]
    for m in measured:
        if m["server"].startswith("syncapp") and m["lost"] == 0 and m["duplicates"]:
            notes.append(f"{m['db']}: syncapp sent {m['duplicates']} duplicate events.")
        if m["server"].startswith("syncapp"):
            notes.append(
                f"Goal >= 10x django-eventstream ({m['db']}): {m['ratio']:.1f}x "
                f"({'met' if m['ratio'] >= 10 else 'NOT met'})."
            )
    result = {
        "name": NAME,
        "columns": COLUMNS,
        "rows": rows,
        "notes": notes,
        "lost": sum(m["lost"] for m in measured),
        "samples": measured,
    }
    print(format_table(COLUMNS, rows))
    for note in notes:
        print(f"- {note}")
    write_result(result, small)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sse_replay")
    parser.add_argument("--small", action="store_true", help="1,000 events instead of 10,000")
    parser.add_argument(
        "--repeat", type=int, help="runs per server, the median counts (default 5; 1 small)"
    )
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seed is not None:
        _seed_main(args.seed)
        return 0
    result = run(args.small, args.repeat)
    return 1 if result["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
